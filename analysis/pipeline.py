"""The standard analysis of a panel: every model family for every outcome, in one call.

Confirmatory family: the within-person effect of GPT-4o hours (within-between model) on each
outcome in :data:`analysis.spec.CONFIRMATORY_OUTCOMES` present in the panel, with
Benjamini-Hochberg adjusted p-values (``p_bh``) across those outcomes. Everything else
(growth, lagged, event studies, moderation, between-person effects) is reported as
exploratory, unadjusted. A model that cannot be fitted (e.g. no access-loss events) is recorded
with the reason instead of stopping the analysis.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from analysis import models, quality, spec
from analysis.errors import AnalysisError, InsufficientDataError
from analysis.models.common import ModelFit
from analysis.models.event import ACCESS_LOSS, EventStudy
from analysis.multiplicity import benjamini_hochberg
from analysis.panel import Panel, analysis_frame

MIN_PARTICIPANTS = 10
MIN_WAVES = 2


@dataclass
class Step:
    """One planned model fit: its key, a label for progress output, and how to run it."""

    key: tuple[str, str, str]  # (family, outcome, variant)
    label: str
    run: Callable[[], ModelFit | EventStudy]


@dataclass
class AnalysisResults:
    panel: Panel
    frame: pd.DataFrame
    predictor: str
    outcomes: list[str]
    fits: dict[tuple[str, str, str], ModelFit] = field(default_factory=dict)
    event_studies: dict[tuple[str, str, str], EventStudy] = field(default_factory=dict)
    skipped: dict[tuple[str, str, str], str] = field(default_factory=dict)
    confirmatory: pd.DataFrame = field(default_factory=pd.DataFrame)
    quality: dict[str, Any] = field(default_factory=dict)

    def family(self, name: str) -> dict[tuple[str, str, str], ModelFit]:
        return {k: v for k, v in self.fits.items() if k[0] == name}

    def table(self, name: str, role: str | None = None) -> pd.DataFrame:
        """All estimates of a family (optionally one role), one row per outcome x term."""
        parts = []
        for (_, _, variant), fit in self.family(name).items():
            t = fit.table.copy()
            t.insert(2, "variant", variant)
            parts.append(t if role is None else t[t["role"] == role])
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()

    @property
    def warnings(self) -> list[str]:
        out = [f"panel: {w}" for w in self.panel.warnings]
        for (fam, outc, var), fit in self.fits.items():
            out += [f"{fam}/{outc}{'/' + var if var else ''}: {w}" for w in fit.warnings]
        return out

    def to_json(self) -> dict[str, Any]:
        meta = self.panel.meta
        return {
            "format": "wellpanel analysis results",
            "format_version": 1,
            "panel": {
                "path": str(self.panel.path) if self.panel.path else None,
                "study": meta.get("study"),
                "export_profile": meta.get("export_profile"),
                "generated_by": meta.get("generated_by"),
                "simulation": meta.get("simulation"),
            },
            "predictor": self.predictor,
            "outcomes": self.outcomes,
            "data_quality": self.quality,
            "confirmatory": {
                "description": "within-person effect of "
                f"{self.predictor} on each outcome; Benjamini-Hochberg across outcomes",
                "estimates": _records(self.confirmatory),
            },
            "models": [{"key": list(k), **fit.to_dict()} for k, fit in self.fits.items()],
            "event_studies": [
                {
                    "key": list(k),
                    "event": es.event,
                    "bin_weeks": es.bin_weeks,
                    "reference_bin": es.reference,
                    "curve": _records(es.curve),
                }
                for k, es in self.event_studies.items()
            ],
            "skipped": [{"key": list(k), "reason": r} for k, r in self.skipped.items()],
            "warnings": self.warnings,
        }


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    from analysis.models.common import _records as rec

    return rec(df) if len(df) else []


def plan(
    frame: pd.DataFrame,
    panel: Panel,
    outcomes: Sequence[str],
    predictor: str,
) -> list[Step]:
    """The list of model fits of the standard analysis."""
    steps: list[Step] = []

    def add(family: str, outcome: str, variant: str, fn: Callable[[], Any]) -> None:
        label = f"{family} {outcome}" + (f" ({variant})" if variant else "")
        steps.append(Step((family, outcome, variant), label, fn))

    for y in outcomes:
        add("growth", y, "", lambda y=y: models.fit_growth(frame, y))
        add("within_between", y, "", lambda y=y: models.fit_within_between(frame, y, predictor))
        add("lagged", y, "", lambda y=y: models.fit_lagged(frame, y, predictor))
        add("event_its", y, ACCESS_LOSS, lambda y=y: models.fit_event_its(frame, y, ACCESS_LOSS))
        add(
            "event_study", y, ACCESS_LOSS, lambda y=y: models.fit_event_study(frame, y, ACCESS_LOSS)
        )
        for mod in ("ai_dependence", "framing"):
            if mod != y:
                add(
                    "moderation",
                    y,
                    mod,
                    lambda y=y, mod=mod: models.fit_moderation(frame, y, mod, predictor),
                )
        for key in panel.event_keys:
            add("event_its", y, key, lambda y=y, key=key: models.fit_event_its(frame, y, key))
    return steps


def run_analysis(
    panel: Panel,
    outcomes: Sequence[str] | None = None,
    predictor: str = "hours_4o",
    progress: Callable[[str], None] | None = None,
    on_plan: Callable[[int], None] | None = None,
) -> AnalysisResults:
    """Fit the standard analysis. ``progress(label)`` is called after each step and
    ``on_plan(n_steps)`` once before the first (for a progress bar)."""
    _require_panel(panel)
    frame = analysis_frame(panel, predictors=_predictors(predictor))
    available = panel.outcomes
    if outcomes is None:
        outcomes = [o for o in spec.CONFIRMATORY_OUTCOMES if o in available]
    unknown = [o for o in outcomes if o not in available]
    if unknown:
        raise InsufficientDataError(
            f"no scores for outcome(s) {', '.join(unknown)}; available: {', '.join(available)}"
        )
    if not outcomes:
        raise InsufficientDataError("the panel has no scores for any confirmatory outcome")
    results = AnalysisResults(panel, frame, predictor, list(outcomes))
    results.quality = quality.summary(panel)
    steps = plan(frame, panel, outcomes, predictor)
    if on_plan:
        on_plan(len(steps))
    for step in steps:
        try:
            out = step.run()
        except AnalysisError as err:
            results.skipped[step.key] = str(err)
        else:
            if isinstance(out, EventStudy):
                results.event_studies[step.key] = out
                results.fits[step.key] = out.fit
            else:
                results.fits[step.key] = out
        if progress:
            progress(step.label)
    results.confirmatory = confirmatory_table(results)
    return results


def _predictors(predictor: str) -> tuple[str, ...]:
    base = ("hours_4o", "hours_other_ai", "hours_total")
    return base if predictor in base else (*base, predictor)


def _require_panel(panel: Panel) -> None:
    n = panel.n_participants
    answered = panel.wide["pid"].nunique()
    if answered < MIN_PARTICIPANTS:
        raise InsufficientDataError(
            f"{answered} participant(s) answered any wave ({n} enrolled); the analysis needs at "
            f"least {MIN_PARTICIPANTS}"
        )
    max_waves = int(panel.wide.groupby("pid").size().max())
    if max_waves < MIN_WAVES:
        raise InsufficientDataError(
            "no participant answered two or more waves; longitudinal models need repeated waves"
        )


def confirmatory_table(results: AnalysisResults) -> pd.DataFrame:
    """Within-person effects across outcomes with Benjamini-Hochberg adjusted p-values."""
    t = results.table("within_between", role="within")
    if t.empty:
        return t
    t = t.reset_index(drop=True)
    t["p_bh"] = benjamini_hochberg(t["p"].to_numpy())
    return t

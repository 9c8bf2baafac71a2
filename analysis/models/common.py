"""Shared pieces of the model families: the fit record and the tidy estimates table."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from analysis import mixed
from analysis.panel import require_data

TABLE_COLUMNS = [
    "family",
    "outcome",
    "term",
    "role",
    "estimate",
    "se",
    "df",
    "t",
    "p",
    "ci_lower",
    "ci_upper",
    "std_estimate",
    "std_ci_lower",
    "std_ci_upper",
    "n_obs",
    "n_participants",
]


@dataclass
class ModelFit:
    """One fitted model. ``roles`` maps a role (e.g. ``"within"``) to its term name."""

    family: str
    outcome: str
    result: mixed.MixedResult
    roles: dict[str, str]
    table: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        return list(self.result.warnings)

    def term(self, role: str) -> pd.Series:
        """The table row of the term playing ``role``."""
        return self.table.set_index("role").loc[role]

    def to_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "outcome": self.outcome,
            "roles": self.roles,
            "notes": self.notes,
            "model": self.result.to_dict(),
            "estimates": _records(self.table),
        }


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    for rec in df.to_dict(orient="records"):
        out.append({k: mixed._num(v) if isinstance(v, float) else v for k, v in rec.items()})
    return out


def estimates_table(
    res: mixed.MixedResult, family: str, outcome: str, roles: dict[str, str]
) -> pd.DataFrame:
    """Tidy table of all fixed effects: estimate, SE, Satterthwaite df, t, p, 95% CI and the
    standardized estimate (see :meth:`analysis.mixed.MixedResult.standardized`)."""
    tab = res.summary_frame().join(res.standardized())
    inverse = {v: k for k, v in roles.items()}
    tab.insert(0, "role", [inverse.get(t, "") for t in tab.index])
    tab = tab.rename_axis("term").reset_index()
    tab.insert(0, "outcome", outcome)
    tab.insert(0, "family", family)
    tab["n_obs"] = res.n_obs
    tab["n_participants"] = res.n_groups
    return tab[TABLE_COLUMNS]


# Simulation studies fit thousands of models and need only estimates, SEs, df and intervals:
# inside ``estimates_only()`` a family's fit skips the tidy table (standardized effects,
# pandas joins) and the fitted values, which is most of a small model's cost. The model
# itself (formula, random part, REML, Satterthwaite df) is exactly the same.
_ESTIMATES_ONLY: ContextVar[bool] = ContextVar("estimates_only", default=False)


@contextmanager
def estimates_only() -> Iterator[None]:
    """Fit the model families without their tables (``ModelFit.table`` is empty)."""
    token = _ESTIMATES_ONLY.set(True)
    try:
        yield
    finally:
        _ESTIMATES_ONLY.reset(token)


ACCESS_LOSS_TERMS = ("loss_post", "loss_since")


def access_loss_terms(frame: pd.DataFrame, outcome: str) -> list[str]:
    """The access-loss level and slope terms when any row with the outcome is after a reported
    loss, else none (the columns would be constant zero).

    Losing a preferred model lowers usage and may change wellbeing by itself, so every model of
    a usage effect adjusts for it; leaving it out confounds the within-person usage effect
    (losses move usage and the outcome together).
    """
    if "loss_post" not in frame.columns:
        return []
    rows = frame[outcome].notna()
    return list(ACCESS_LOSS_TERMS) if frame.loc[rows, "loss_post"].sum() > 0 else []


ACCESS_LOSS_NOTE = "adjusted for access loss (level and slope after the first loss)"


def fit_model(
    frame: pd.DataFrame,
    family: str,
    outcome: str,
    formula: str,
    random: str,
    roles: dict[str, str],
    reml: bool = True,
    min_participants: int = 10,
    notes: list[str] | None = None,
) -> ModelFit:
    """Check the data suffice, fit, and tabulate."""
    require_data(frame, outcome, min_participants=min_participants)
    fast = _ESTIMATES_ONLY.get()
    res = mixed.fit(frame, formula, group="pid", random=random, reml=reml, keep_data=not fast)
    return ModelFit(
        family=family,
        outcome=outcome,
        result=res,
        roles=roles,
        table=pd.DataFrame(columns=TABLE_COLUMNS)
        if fast
        else estimates_table(res, family, outcome, roles),
        notes=list(notes or []),
    )

"""Shared pieces of the model families: the fit record and the tidy estimates table."""

from __future__ import annotations

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
    res = mixed.fit(frame, formula, group="pid", random=random, reml=reml)
    return ModelFit(
        family=family,
        outcome=outcome,
        result=res,
        roles=roles,
        table=estimates_table(res, family, outcome, roles),
        notes=list(notes or []),
    )

"""Data quality: compliance, retention, missingness and distributions of a panel."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from analysis import spec
from analysis.panel import Panel


def compliance_by_wave(panel: Panel) -> pd.DataFrame:
    """Per wave: participants who answered, the share of all participants (compliance), and
    the share still in the study (answered this wave or a later one: retention)."""
    wide = panel.wide
    n = panel.n_participants
    last_wave = wide.groupby("pid")["wave"].max()
    waves = np.arange(int(wide["wave"].max()) + 1) if len(wide) else np.array([], int)
    answered = wide.groupby("wave")["pid"].nunique().reindex(waves, fill_value=0)
    retained = pd.Series([(last_wave >= w).sum() for w in waves], index=waves)
    return pd.DataFrame(
        {
            "wave": waves,
            "answered": answered.to_numpy(),
            "compliance": answered.to_numpy() / max(n, 1),
            "retained": retained.to_numpy(),
            "retention": retained.to_numpy() / max(n, 1),
        }
    )


def missingness_by_outcome(panel: Panel) -> pd.DataFrame:
    """Per outcome: answered-wave rows with a score, participants with any score, and the
    share of rows missing (not administered at that wave, skipped or invalid)."""
    wide = panel.wide
    rows = []
    for k in spec.OUTCOMES:
        if k not in wide:
            continue
        x = wide[k]
        rows.append(
            {
                "outcome": k,
                "n_scores": int(x.notna().sum()),
                "n_participants": int(wide.loc[x.notna(), "pid"].nunique()),
                "share_missing": float(x.isna().mean()) if len(x) else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def describe_outcomes(panel: Panel) -> pd.DataFrame:
    """Mean, SD, quantiles of each outcome and usage variable over answered waves."""
    cols = [
        c for c in (*spec.OUTCOMES, "hours_4o", "hours_other_ai", "hours_total") if c in panel.wide
    ]
    return panel.wide[cols].astype("float64").describe().T.rename_axis("variable").reset_index()


def status_counts(panel: Panel) -> dict[str, int]:
    return {str(k): int(v) for k, v in panel.participants["status"].value_counts().items()}


def summary(panel: Panel) -> dict[str, Any]:
    """Everything above, JSON-friendly."""
    comp = compliance_by_wave(panel)
    waves_per_person = panel.wide.groupby("pid").size()
    return {
        "n_participants": panel.n_participants,
        "n_rows": len(panel.wide),
        "n_waves": int(panel.wide["wave"].max()) + 1 if len(panel.wide) else 0,
        "median_waves_answered": float(waves_per_person.median()) if len(waves_per_person) else 0,
        "status": status_counts(panel),
        "compliance": comp.to_dict(orient="records"),
        "missingness": missingness_by_outcome(panel).to_dict(orient="records"),
        "n_access_loss": int(panel.wide["access_loss"].fillna(False).astype(bool).sum()),
        "warnings": list(panel.warnings),
    }

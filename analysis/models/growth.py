"""Growth model: how each outcome changes over time since enrollment."""

from __future__ import annotations

import pandas as pd

from analysis.models.common import ModelFit, fit_model


def fit_growth(frame: pd.DataFrame, outcome: str, reml: bool = True) -> ModelFit:
    """Linear growth with random intercept and slope.

    ``y_ti = g00 + g10 time_ti + u0_i + u1_i time_ti + e_ti``, ``time`` in weeks since
    enrollment, ``(u0, u1) ~ N(0, Tau)`` unstructured, ``e ~ N(0, sigma^2)``.

    Assumptions: change is linear in time within the study window; residuals independent given
    the random effects (no autocorrelation beyond what the random slope absorbs); missing waves
    and dropout are missing at random given the observed outcomes. ``g10`` is the average weekly
    change (role ``time``).
    """
    return fit_model(
        frame,
        "growth",
        outcome,
        f"{outcome} ~ time",
        "~ time",
        {"intercept": "Intercept", "time": "time"},
        reml=reml,
    )

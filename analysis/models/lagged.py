"""Lagged (prospective) model: usage at t-1 predicting the outcome at t."""

from __future__ import annotations

import pandas as pd

from analysis.models.common import ModelFit, fit_model


def fit_lagged(
    frame: pd.DataFrame, outcome: str, predictor: str = "hours_4o", reml: bool = True
) -> ModelFit:
    """Does more use than usual in the previous wave predict a change in the outcome?

    ``y_ti = g00 + g10 time_ti + gL (x_{t-1,i} - xbar_i) + gA (y_{t-1,i} - ybar_i)
    + gB (xbar_i - xbar) + u0_i + e_ti``

    ``x_{t-1}`` and ``y_{t-1}`` come from wave ``t - 1`` of the same participant; rows whose
    previous wave was not answered are left out. The lagged outcome is person-mean centered so
    that ``gA`` is a within-person carry-over and the random intercept keeps the stable level.

    Assumptions: as the within-between model, plus no unmeasured time-varying confounder of
    ``x_{t-1}`` and ``y_t``; with few waves per participant the centered lagged outcome gives a
    small negative (Nickell) bias in ``gA``, while ``gL`` (role ``lagged``) is the estimate of
    interest.
    """
    f = frame.copy()
    ybar = f[outcome].groupby(f["pid"]).transform("mean")
    f[f"{outcome}_lag1_within"] = f[f"{outcome}_lag1"] - ybar
    xl, yl, xb = f"{predictor}_within_lag1", f"{outcome}_lag1_within", f"{predictor}_between"
    return fit_model(
        f,
        "lagged",
        outcome,
        f"{outcome} ~ time + {xl} + {yl} + {xb}",
        "~ 1",
        {
            "intercept": "Intercept",
            "time": "time",
            "lagged": xl,
            "autoregressive": yl,
            "between": xb,
        },
        reml=reml,
    )

"""Lagged (prospective) model: usage at t-1 predicting the outcome at t."""

from __future__ import annotations

import pandas as pd

from analysis.models.common import ACCESS_LOSS_NOTE, ModelFit, access_loss_terms, fit_model


def lagged_outcome_within(frame: pd.DataFrame, outcome: str, group: str = "pid") -> pd.Series:
    """``y_{t-1}`` minus the participant's mean of the outcome over the *other* answered waves.

    Centering ``y_{t-1}`` on a person mean that includes the current ``y_t`` puts ``-e_t / n``
    into the regressor, a mechanical correlation with the error of the same row: the Nickell
    (1981, Econometrica 49:1417) bias of dynamic panel models, which here spilled into the
    lagged usage effect (the null was rejected in 34-41% of simulated studies). The
    leave-one-out mean removes ``y_t`` and so ``e_t`` from the regressor while still taking
    out the stable level (``u0_i`` cancels), as in the split-panel / forward-orthogonal
    reasoning of Arellano and Bover (1995, J Econometrics 68:29): the regressor must not
    contain the current occasion's error.
    """
    y = frame[outcome].astype("float64")
    g = frame[group]
    total = y.groupby(g).transform("sum")
    count = y.notna().groupby(g).transform("sum")
    here = y.notna()
    others = count - here.astype("float64")
    loo_mean = (total - y.fillna(0.0)) / others.where(others > 0)
    return frame[f"{outcome}_lag1"].astype("float64") - loo_mean


def fit_lagged(
    frame: pd.DataFrame, outcome: str, predictor: str = "hours_4o", reml: bool = True
) -> ModelFit:
    """Does more use than usual in the previous wave predict the outcome, beyond this wave's use?

    ``y_ti = g00 + g10 time_ti + gW xw_ti + gL xw_{t-1,i} + gA (y_{t-1,i} - ybar_i(-t))
    + gB xb_i + loss terms + u0_i + u1_i time_ti + uW_i xw_ti + e_ti``

    The primary (within-between) model with its access-loss adjustment and random part, plus
    the previous wave's within-person usage ``xw_{t-1} = x_{t-1} - xbar_i`` (role ``lagged``,
    the estimate of interest) and the previous wave's outcome centred on the participant's mean
    of the *other* answered waves (role ``autoregressive``; see :func:`lagged_outcome_within`).
    Rows whose previous wave was not answered are left out. This wave's usage stays in the
    model: without it ``gL`` would pick up the same-week effect through the correlation of
    successive weeks' usage (e.g. after an access loss), not a prospective effect.

    Assumptions: as the within-between model, plus no unmeasured time-varying confounder of
    ``x_{t-1}`` and ``y_t``. ``gA`` is a nuisance term (its value depends on how the random
    time slope and the centring share the person's level); ``gL`` is what is reported.
    """
    f = frame.copy()
    yl = f"{outcome}_lag1_within"
    f[yl] = lagged_outcome_within(f, outcome)
    xw, xl, xb = f"{predictor}_within", f"{predictor}_within_lag1", f"{predictor}_between"
    loss = access_loss_terms(f[f[yl].notna()], outcome)
    rhs = " + ".join(["time", xw, xl, yl, xb, *loss])
    return fit_model(
        f,
        "lagged",
        outcome,
        f"{outcome} ~ {rhs}",
        f"~ time + {xw}",
        {
            "intercept": "Intercept",
            "time": "time",
            "within": xw,
            "lagged": xl,
            "autoregressive": yl,
            "between": xb,
        },
        reml=reml,
        notes=[ACCESS_LOSS_NOTE] if loss else [],
    )

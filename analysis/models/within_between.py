"""Within- and between-person effects of AI usage on an outcome."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from analysis.models.common import (
    ACCESS_LOSS_NOTE,
    ModelFit,
    access_loss_terms,
    fit_model,
)


def fit_within_between(
    frame: pd.DataFrame,
    outcome: str,
    predictor: str = "hours_4o",
    covariates: Sequence[str] = (),
    random_time: bool = True,
    random_within: bool = True,
    adjust_access_loss: bool = True,
    reml: bool = True,
) -> ModelFit:
    """The primary model: does a person do better or worse in weeks they use more (within), and
    do heavier users differ from lighter users (between)?

    ``y_ti = g00 + g10 time_ti + gW (x_ti - xbar_i) + gB (xbar_i - xbar) + covariates
    + u0_i + u1_i time_ti + uW_i (x_ti - xbar_i) + e_ti``

    with ``x`` the predictor (default GPT-4o hours per week), ``xbar_i`` the participant's mean
    and ``xbar`` the mean of person means (columns ``<x>_within`` and ``<x>_between`` from
    :func:`analysis.panel.analysis_frame`). Random intercept, time slope and within-person
    usage slope are correlated (unstructured); drop the slopes with ``random_time=False`` /
    ``random_within=False``.

    With ``adjust_access_loss`` (default) and any reported access loss among the rows, the
    access-loss level and slope terms (``loss_post``, ``loss_since``) are added: losing a
    preferred model lowers usage and may change wellbeing by itself, so it would otherwise
    confound the within-person usage effect.

    Assumptions: ``gW`` is a within-person association, free of stable between-person
    confounding but not of other time-varying confounding (e.g. a bad week causing both more use
    and lower wellbeing); ``gB`` is a between-person association (confounded by stable
    differences). Linear effects, Gaussian random effects and residuals, MAR missingness.
    """
    xw, xb = f"{predictor}_within", f"{predictor}_between"
    covariates = list(covariates)
    notes = []
    loss = access_loss_terms(frame, outcome) if adjust_access_loss else []
    if loss:
        covariates += loss
        notes.append(ACCESS_LOSS_NOTE)
    rhs = " + ".join(["time", xw, xb, *covariates])
    rnd = ["1"] + (["time"] if random_time else []) + ([xw] if random_within else [])
    return fit_model(
        frame,
        "within_between",
        outcome,
        f"{outcome} ~ {rhs}",
        "~ " + " + ".join(rnd),
        {"intercept": "Intercept", "time": "time", "within": xw, "between": xb},
        reml=reml,
        notes=notes,
    )

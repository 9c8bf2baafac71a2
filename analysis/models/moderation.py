"""Moderation: is the within-person usage effect different for more dependent users or for
those who frame the AI as a partner?"""

from __future__ import annotations

import pandas as pd

from analysis.errors import FormulaError
from analysis.models.common import ACCESS_LOSS_NOTE, ModelFit, access_loss_terms, fit_model

MODERATORS = ("ai_dependence", "framing", "companion_use")


def fit_moderation(
    frame: pd.DataFrame,
    outcome: str,
    moderator: str = "ai_dependence",
    predictor: str = "hours_4o",
    reml: bool = True,
) -> ModelFit:
    """Cross-level interaction of within-person usage with a person-level moderator.

    ``y_ti = g00 + g10 time_ti + gW xw_ti + gB xb_i + gM m_i + gWM xw_ti m_i
    + loss terms + u0_i + u1_i time_ti + uW_i xw_ti + e_ti``

    ``xw``/``xb`` are the within/between parts of the predictor, ``m_i`` the participant's mean
    of the moderator, grand-mean centered (``<moderator>_between``): AI dependence (1-5),
    framing (1 = a tool ... 5 = a partner) or the share of waves with companion use. ``gWM``
    (role ``interaction``) is the change of the within-person effect per unit of the moderator;
    ``gW`` is the within effect at the average moderator.

    Like the primary model, the access-loss level and slope (``loss_post``, ``loss_since``) are
    adjusted for when any loss is reported: without them a loss, which lowers usage and the
    outcome together, is read as a within-person usage effect (on the simulator's defaults the
    WHO-5 within effect came out at 0.70 against a truth of 0.40, and the interaction, truly 0,
    was "significant" in 10-20% of replicates).

    Random part as the primary model (intercept, time and usage slopes). Assumptions: as the
    within-between model; the moderator is treated as a stable trait
    (its person mean), so it is not itself affected by the same week's usage.
    """
    if moderator not in MODERATORS:
        raise FormulaError(f"moderator must be one of {', '.join(MODERATORS)}, not {moderator!r}")
    if moderator == outcome:
        raise FormulaError(f"{outcome} cannot moderate its own model")
    xw, xb, mb = f"{predictor}_within", f"{predictor}_between", f"{moderator}_between"
    inter = f"{xw}:{mb}"
    loss = access_loss_terms(frame, outcome)
    notes = [f"moderator: {moderator} (person mean, grand-mean centered)"]
    if loss:
        notes.append(ACCESS_LOSS_NOTE)
    rhs = " + ".join(["time", xw, xb, mb, inter, *loss])
    return fit_model(
        frame,
        "moderation",
        outcome,
        f"{outcome} ~ {rhs}",
        f"~ time + {xw}",
        {
            "intercept": "Intercept",
            "time": "time",
            "within": xw,
            "between": xb,
            "moderator": mb,
            "interaction": inter,
        },
        reml=reml,
        notes=notes,
    )

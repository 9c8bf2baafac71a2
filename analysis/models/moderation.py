"""Moderation: is the within-person usage effect different for more dependent users or for
those who frame the AI as a partner?"""

from __future__ import annotations

import pandas as pd

from analysis.errors import FormulaError
from analysis.models.common import ModelFit, fit_model

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
    + u0_i + uW_i xw_ti + e_ti``

    ``xw``/``xb`` are the within/between parts of the predictor, ``m_i`` the participant's mean
    of the moderator, grand-mean centered (``<moderator>_between``): AI dependence (1-5),
    framing (1 = a tool ... 5 = a partner) or the share of waves with companion use. ``gWM``
    (role ``interaction``) is the change of the within-person effect per unit of the moderator;
    ``gW`` is the within effect at the average moderator.

    Assumptions: as the within-between model; the moderator is treated as a stable trait
    (its person mean), so it is not itself affected by the same week's usage.
    """
    if moderator not in MODERATORS:
        raise FormulaError(f"moderator must be one of {', '.join(MODERATORS)}, not {moderator!r}")
    if moderator == outcome:
        raise FormulaError(f"{outcome} cannot moderate its own model")
    xw, xb, mb = f"{predictor}_within", f"{predictor}_between", f"{moderator}_between"
    inter = f"{xw}:{mb}"
    return fit_model(
        frame,
        "moderation",
        outcome,
        f"{outcome} ~ time + {xw} + {xb} + {mb} + {inter}",
        f"~ {xw}",
        {
            "intercept": "Intercept",
            "time": "time",
            "within": xw,
            "between": xb,
            "moderator": mb,
            "interaction": inter,
        },
        reml=reml,
        notes=[f"moderator: {moderator} (person mean, grand-mean centered)"],
    )

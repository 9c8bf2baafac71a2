"""Event studies and interrupted time series around a loss of access to a model.

Event time is in weeks and is 0 at the event: for a participant's own access loss, the answer
day of the first wave reporting it (``loss_time``); for a study event such as the GPT-4o
retirement, ``week_since_<key>`` from a research export (``event_time_<key>``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.errors import InsufficientDataError, PanelError
from analysis.models.common import ModelFit, fit_model

ACCESS_LOSS = "access_loss"


def event_columns(event: str) -> tuple[str, str, str]:
    """(event time, post indicator, time since event) column names for ``event``."""
    if event == ACCESS_LOSS:
        return "loss_time", "loss_post", "loss_since"
    return f"event_time_{event}", f"post_{event}", f"since_{event}"


def _event_rows(
    frame: pd.DataFrame, outcome: str, event: str, window: tuple[float, float]
) -> pd.DataFrame:
    et, _post, _since = event_columns(event)
    if et not in frame.columns:
        raise PanelError(
            f"no event time for {event!r}: study events need a 'research' export profile with "
            f"a week_since_{event} column"
        )
    rows = frame[frame[et].notna() & (frame[et] >= window[0]) & (frame[et] <= window[1])]
    rows = rows[rows[outcome].notna()]
    before = rows.loc[rows[et] < 0, "pid"].unique()
    after = rows.loc[rows[et] >= 0, "pid"].unique()
    n_both = len(np.intersect1d(before, after))
    if n_both < 5:
        raise InsufficientDataError(
            f"{outcome} around {event}: {n_both} participant(s) observed both before and after "
            "the event; at least 5 needed"
        )
    return rows


def fit_event_its(
    frame: pd.DataFrame,
    outcome: str,
    event: str = ACCESS_LOSS,
    window: tuple[float, float] = (-16, 16),
    subset: str | None = None,
    reml: bool = True,
) -> ModelFit:
    """Interrupted time series (segmented regression) with random intercept and slope.

    ``y_ti = b0 + b1 E_ti + b2 post_ti + b3 since_ti + u0_i + u1_i E_ti + e_ti``

    ``E`` = weeks from the event (0 at the event), ``post`` = 1 from the event on,
    ``since = E * post``. ``b2`` is the level change at the event (role ``level_change``),
    ``b3`` the slope change (role ``slope_change``), ``b1`` the pre-event slope and ``b1 + b3``
    the post-event slope (``ModelFit.notes`` and ``result.contrast``). Uses participants with
    an event, rows within ``window`` weeks; ``subset`` names a boolean column to restrict
    participants further (e.g. ``used_4o_before_retirement``).

    Assumptions: without the event the pre-event trend would have continued linearly (no
    control group); the event's timing is unrelated to the outcome's short-term fluctuations;
    a reported loss is dated to the answer day of the first wave that reports it, so effects
    before that day within the same recall period show up as part of the level change.
    """
    rows = _event_rows(frame, outcome, event, window)
    if subset is not None:
        if subset not in rows.columns:
            raise PanelError(f"no column {subset!r} to subset participants by")
        rows = rows[rows[subset].astype("boolean").fillna(False).astype(bool)]
    et, post, since = event_columns(event)
    fit = fit_model(
        rows,
        "event_its",
        outcome,
        f"{outcome} ~ {et} + {post} + {since}",
        f"~ {et}",
        {"intercept": "Intercept", "pre_slope": et, "level_change": post, "slope_change": since},
        reml=reml,
        min_participants=5,
        notes=[f"event: {event}", f"window: {window[0]} to {window[1]} weeks"],
    )
    post_slope = fit.result.contrast({et: 1.0, since: 1.0})
    fit.notes.append(
        f"post-event slope {post_slope['estimate']:.4g} per week "
        f"(95% CI {post_slope['ci_lower']:.4g} to {post_slope['ci_upper']:.4g})"
    )
    return fit


@dataclass
class EventStudy:
    """Binned event-time coefficients relative to the reference bin (just before the event)."""

    fit: ModelFit
    curve: pd.DataFrame  # bin, week_start, week_mid, estimate, ci_lower, ci_upper, n_obs
    event: str
    bin_weeks: float
    reference: int


def _bin_name(b: int) -> str:
    return f"es_m{-b}" if b < 0 else f"es_p{b}"


def fit_event_study(
    frame: pd.DataFrame,
    outcome: str,
    event: str = ACCESS_LOSS,
    bin_weeks: float = 2.0,
    window: tuple[float, float] = (-8, 12),
    reference: int = -1,
    reml: bool = True,
) -> EventStudy:
    """Event-study curve: the outcome in each event-time bin relative to the bin before the event.

    ``y_ti = a + sum_{k != ref} d_k 1[bin(E_ti) = k] + u0_i + e_ti``, bins of ``bin_weeks``
    weeks (``bin = floor(E / bin_weeks)``; bin 0 starts at the event). ``d_k`` estimates the
    mean difference from the reference bin among the same participants. Flat pre-event
    ``d_k`` support the ITS assumption of no anticipation or pre-trend; the post-event ``d_k``
    trace the response without assuming linearity. Random intercept only.
    """
    rows = _event_rows(frame, outcome, event, window).copy()
    et = event_columns(event)[0]
    bins = np.floor(rows[et].to_numpy(dtype=float) / bin_weeks).astype(int)
    rows["_bin"] = bins
    present = sorted(set(bins))
    if reference not in present:
        raise InsufficientDataError(
            f"{outcome} around {event}: no observations in the reference bin {reference}"
        )
    terms = []
    for b in present:
        if b == reference:
            continue
        name = _bin_name(b)
        rows[name] = (bins == b).astype(float)
        terms.append(name)
    fit = fit_model(
        rows,
        "event_study",
        outcome,
        f"{outcome} ~ " + " + ".join(terms),
        "~ 1",
        {"intercept": "Intercept", **{t: t for t in terms}},
        reml=reml,
        min_participants=5,
        notes=[f"event: {event}", f"bins of {bin_weeks} weeks, reference bin {reference}"],
    )
    counts = rows.groupby("_bin").size()
    tab = fit.result.summary_frame()
    recs = []
    for b in present:
        if b == reference:
            est = lo = hi = 0.0
        else:
            r = tab.loc[_bin_name(b)]
            est, lo, hi = r["estimate"], r["ci_lower"], r["ci_upper"]
        recs.append(
            {
                "bin": b,
                "week_start": b * bin_weeks,
                "week_mid": (b + 0.5) * bin_weeks,
                "estimate": est,
                "ci_lower": lo,
                "ci_upper": hi,
                "n_obs": int(counts.get(b, 0)),
            }
        )
    return EventStudy(fit, pd.DataFrame(recs), event, bin_weeks, reference)

"""Simulated panels with known effects, written in the panel Data Package contract.

Data-generating model for outcome ``k``, participant ``i``, wave ``w`` (``t`` = weeks since
enrollment, ``x`` = GPT-4o hours per week, ``m_i`` = the participant's mean of ``x`` over all
planned waves, ``mbar`` = the mean of ``m_i`` over participants)::

    y = b0 + u0_i + (b_time + u1_i) t + (b_within + u2_i) (x - m_i) + b_between (m_i - mbar)
        + loss_level * post + loss_slope * since + e,
    u0_i ~ N(0, sd_intercept^2), u1_i ~ N(0, sd_time^2), u2_i ~ N(0, sd_within^2),
    e ~ N(0, sd_residual^2)

(random effects independent). ``post`` = 1 from the wave at which the participant reports an
access loss (``access_loss`` true) on; ``since`` = weeks since that wave's answer day (0 before).
These are exactly the definitions :mod:`analysis.panel` uses, so a correctly specified model
recovers ``b_*`` and ``loss_*``. Usage: a share of participants use GPT-4o, each with a typical
level ``m`` (lognormal) and wave-to-wave variation whose participant mean is exactly ``m`` over
the planned waves; after an access loss, 4o hours drop by a factor. ChatGPT-4o users whose
study window spans the GPT-4o retirement (2026-02-13) lose access at the first wave after it;
others may lose access at random (``access_loss_rate``).

Missingness: waves after baseline are missed at random (``p_miss``); dropout after each wave has
a hazard that rises when the last observed wellbeing (``dropout_outcome``) is poor (missing at
random given observed outcomes, so likelihood-based mixed models stay unbiased). With
``rounding=True`` scores are rounded and clipped to the instruments' scales (realistic but no
longer exactly the linear model); with ``rounding=False`` they are the latent linear values.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis import spec
from analysis.datapackage import write_datapackage

WAVE_DAYS = 14
DEFAULT_STUDY = {
    "key": "simulated",
    "title": "Simulated wellpanel study",
    "protocol_version": "sim-1",
}
_EVEN_WAVE_ONLY = ("swls", "social_contact")  # monthly, not biweekly


@dataclass(frozen=True)
class OutcomeEffects:
    """True parameters of one outcome (units: score points; time per week; usage per hour/week)."""

    intercept: float
    time: float = 0.0
    within: float = 0.0
    between: float = 0.0
    loss_level: float = 0.0
    loss_slope: float = 0.0
    sd_intercept: float = 1.0
    sd_time: float = 0.0
    sd_within: float = 0.0
    sd_residual: float = 1.0


DEFAULT_EFFECTS: dict[str, OutcomeEffects] = {
    # Illustrative defaults: a small within-person benefit of more 4o use on the same weeks,
    # a between-person association in the harmful direction (heavier users are worse off),
    # and a drop in wellbeing at an access loss that partly recovers.
    "who5": OutcomeEffects(52, 0.05, 0.40, -0.90, -6.0, 0.40, 15, 0.30, 0.25, 10),
    "phq9": OutcomeEffects(8, -0.01, -0.08, 0.20, 1.5, -0.08, 4.5, 0.08, 0.05, 2.8),
    "gad7": OutcomeEffects(7, -0.01, -0.06, 0.15, 1.2, -0.06, 4.0, 0.07, 0.04, 2.5),
    "ucla3": OutcomeEffects(6, 0.0, -0.03, 0.08, 0.4, -0.02, 1.4, 0.02, 0.02, 0.9),
    "swls": OutcomeEffects(20, 0.02, 0.10, -0.25, -1.5, 0.10, 6, 0.05, 0.05, 3.5),
    # social contact: sum 0-9 of 3 items, higher = more contact (an earlier 0-7 scale x 9/7)
    "social_contact": OutcomeEffects(4.5, 0.0, -0.04, -0.13, 0.26, 0.0, 2.1, 0.026, 0.026, 1.5),
    # AI dependence: mean 1-5 of 6 items, higher = more dependent (an earlier 0-100 scale
    # mapped by 1 + 4 y / 100: slopes and SDs x 0.04)
    "ai_dependence": OutcomeEffects(2.2, 0.002, 0.032, 0.08, 0.12, -0.008, 0.56, 0.01, 0.012, 0.32),
}


@dataclass(frozen=True)
class UsageParams:
    share_4o_users: float = 0.7
    share_chatgpt: float = 0.8  # of 4o users, use 4o through ChatGPT (the rest via the API)
    mean_hours_4o: float = 6.0  # typical weekly hours among 4o users (lognormal mean)
    sd_log_hours_4o: float = 0.7
    within_cv: float = 0.5  # wave-to-wave coefficient of variation of hours
    access_loss_rate: float = 0.15  # random (non-retirement) loss among 4o users
    loss_hours_factor: float = 0.25  # 4o hours after a loss, relative to before


@dataclass(frozen=True)
class MissingParams:
    p_miss: float = 0.12  # a wave after baseline skipped at random
    attrition: float = 0.25  # target share dropping out before the last wave
    dropout_outcome: str = "who5"
    dropout_strength: float = 0.5  # log-hazard per SD of worse last observed wellbeing
    p_invalid: float = 0.01  # an instrument answered with too few items (score missing)


@dataclass(frozen=True)
class CalendarParams:
    event_date: str = spec.GPT4O_RETIREMENT.date
    enroll_from_days_before: int = 150  # enrollment dates spread over [event - this, event + after]
    enroll_to_days_after: int = 30


class SimulatedPanel(dict):
    """``dict`` of resource name -> DataFrame, plus ``wellpanel`` (the package property, whose
    ``simulation`` entry holds the true parameters and seed) and ``truth`` (the same)."""

    wellpanel: dict[str, Any]
    truth: dict[str, Any]


def resolve_effects(
    effects: Mapping[str, OutcomeEffects | Mapping[str, float]] | None,
    outcomes: Sequence[str],
) -> dict[str, OutcomeEffects]:
    """Defaults per outcome, overridden by ``effects`` (whole objects or dicts of fields)."""
    out = {}
    for k in outcomes:
        if k not in DEFAULT_EFFECTS:
            raise ValueError(f"unknown outcome {k!r}; known: {', '.join(DEFAULT_EFFECTS)}")
        base = DEFAULT_EFFECTS[k]
        given = (effects or {}).get(k)
        if isinstance(given, OutcomeEffects):
            base = given
        elif given is not None:
            base = replace(base, **dict(given))
        out[k] = base
    return out


def _pseudonyms(n: int, seed: int) -> list[str]:
    return [hashlib.sha256(f"sim:{seed}:{i}".encode()).hexdigest()[:16] for i in range(n)]


# Distance between possible scores, as (numerator, denominator): sums step by 1, the WHO-5
# percentage by 4, the mean of six 1-5 items by 1/6. Default (1, 1).
_SCORE_STEPS: dict[str, tuple[int, int]] = {"who5": (4, 1), "ai_dependence": (1, 6)}


def _round_score(k: str, y: np.ndarray) -> np.ndarray:
    """Nearest possible score of the instrument, clipped to its scale (k/6 exactly as the
    scorer's mean of six items gives it)."""
    inst = spec.INSTRUMENTS[k]
    num, den = _SCORE_STEPS.get(k, (1, 1))
    return np.clip(np.round(y * den / num) * num / den, inst.minimum, inst.maximum)


def simulate_panel(
    n_participants: int = 200,
    n_waves: int = 12,
    effects: Mapping[str, OutcomeEffects | Mapping[str, float]] | None = None,
    seed: int = 0,
    *,
    outcomes: Sequence[str] = spec.OUTCOMES,
    usage: UsageParams | None = None,
    missing: MissingParams | None = None,
    calendar: CalendarParams | None = None,
    include_calendar: bool = True,
    rounding: bool = True,
    study: Mapping[str, Any] | None = None,
    long_tables: bool = True,
) -> SimulatedPanel:
    """Simulate one panel in the Data Package contract (see the module docstring).

    Returns a :class:`SimulatedPanel`: ``{"participants", "responses", "usage", "panel"}``
    DataFrames, with ``.wellpanel`` (profile ``simulated``) and ``.truth``. With
    ``include_calendar`` the responses and panel carry ``week_since_gpt4o_retirement``.
    ``long_tables=False`` leaves ``responses`` and ``usage`` empty (the wide panel holds all a
    model needs): three times faster, for simulation studies such as power and coverage.
    """
    if n_participants < 1 or n_waves < 1:
        raise ValueError("n_participants and n_waves must be positive")
    usage = usage or UsageParams()
    missing = missing or MissingParams()
    calendar = calendar or CalendarParams()
    outcomes = tuple(outcomes)
    eff = resolve_effects(effects, outcomes)
    rng = np.random.default_rng(seed)
    n, T = n_participants, n_waves

    # --- participants and time -------------------------------------------------------------
    waves = np.arange(T)
    jitter = rng.integers(-2, 4, size=(n, T))
    jitter[:, 0] = 0
    day = waves[None, :] * WAVE_DAYS + jitter  # answer day if answered
    weeks = day / 7.0
    # days from enrollment to the retirement event (negative: enrolled after it)
    event_offset = rng.integers(
        -calendar.enroll_to_days_after, calendar.enroll_from_days_before + 1, size=n
    )

    # --- GPT-4o usage ----------------------------------------------------------------------
    uses_4o = rng.random(n) < usage.share_4o_users
    via_chatgpt = uses_4o & (rng.random(n) < usage.share_chatgpt)
    mu = math.log(usage.mean_hours_4o) - usage.sd_log_hours_4o**2 / 2
    level = np.where(uses_4o, rng.lognormal(mu, usage.sd_log_hours_4o, n), 0.0)
    shape = 1.0 / usage.within_cv**2
    g = rng.gamma(shape, 1.0 / shape, size=(n, T))
    hours_4o = level[:, None] * g / g.mean(axis=1, keepdims=True)

    # access loss: retirement for ChatGPT-4o users whose window spans it, else at random
    loss_wave = np.full(n, -1)
    spans = via_chatgpt & (event_offset > 0) & (event_offset <= day[:, -1])
    first_after = np.argmax(day >= event_offset[:, None], axis=1)
    loss_wave[spans] = np.maximum(first_after[spans], 1)
    random_loss = uses_4o & ~spans & (rng.random(n) < usage.access_loss_rate) & (T >= 3)
    if T >= 3:
        loss_wave[random_loss] = rng.integers(1, T, size=int(random_loss.sum()))
    enrolled_after = via_chatgpt & (event_offset <= 0)  # ChatGPT-4o already gone at enrollment
    hours_4o[enrolled_after] *= usage.loss_hours_factor
    has_loss = loss_wave >= 0
    post = has_loss[:, None] & (waves[None, :] >= loss_wave[:, None])
    hours_4o = np.where(post, hours_4o * usage.loss_hours_factor, hours_4o)
    chatgpt_share = np.where(via_chatgpt, 1.0, 0.0)
    h_chat = hours_4o * chatgpt_share[:, None]
    h_api = hours_4o - h_chat
    if rounding:
        h_chat, h_api = np.round(h_chat * 2) / 2, np.round(h_api * 2) / 2
    hours_4o = h_chat + h_api
    m_i = hours_4o.mean(axis=1)  # participant mean over all planned waves (the DGP's m_i)
    mbar = float(m_i.mean())
    loss_day = np.where(has_loss, day[np.arange(n), np.maximum(loss_wave, 0)], 0)
    since = np.where(post, (day - loss_day[:, None]) / 7.0, 0.0)

    # --- other models, framing, purposes ---------------------------------------------------
    other_models = [m for m in spec.MODELS if m not in spec.MODELS_4O]
    other_p = {"gpt_newer": 0.5, "claude": 0.25, "gemini": 0.2, "companion_app": 0.15, "other": 0.1}
    other_hours = {}
    for mname in other_models:
        user = rng.random(n) < other_p[mname]
        lvl = np.where(user, rng.lognormal(math.log(2.0), 0.6, n), 0.0)
        h = lvl[:, None] * rng.gamma(4.0, 0.25, size=(n, T))
        if mname in ("gpt_newer", "companion_app"):  # some switch after losing 4o
            h = np.where(post, h + 0.5 * level[:, None] * rng.random((n, 1)), h)
        other_hours[mname] = np.round(h * 2) / 2 if rounding else h
    hours_other = sum(other_hours.values())
    hours_total = hours_4o + hours_other
    tend = rng.normal(2.0 + 0.15 * np.minimum(level, 15), 0.8, n)
    framing = np.clip(np.round(tend[:, None] + rng.normal(0, 0.5, (n, T))), 1, 5)
    any_ai = hours_total > 0
    purposes = {}
    for pname, base, slope in (
        ("companionship", -2.0, 0.9),
        ("emotional_support", -1.5, 0.8),
        ("advice", 0.0, 0.1),
        ("work", 0.4, -0.2),
        ("creative", -0.8, 0.1),
    ):
        pr = 1 / (1 + np.exp(-(base + slope * (framing - 2.5))))
        purposes[pname] = any_ai & (rng.random((n, T)) < pr)
    distress = np.clip(np.round(1 + 0.25 * np.minimum(level, 12) + rng.normal(0, 1, n)), 0, 4)

    # --- outcomes --------------------------------------------------------------------------
    latent: dict[str, np.ndarray] = {}
    for k, e in eff.items():
        u0 = rng.normal(0, e.sd_intercept, n)
        u1 = rng.normal(0, e.sd_time, n)
        u2 = rng.normal(0, e.sd_within, n)
        xw = hours_4o - m_i[:, None]
        y = (
            e.intercept
            + u0[:, None]
            + (e.time + u1[:, None]) * weeks
            + (e.within + u2[:, None]) * xw
            + e.between * (m_i - mbar)[:, None]
            + e.loss_level * post
            + e.loss_slope * since
            + rng.normal(0, e.sd_residual, (n, T))
        )
        latent[k] = _round_score(k, y) if rounding else y

    # --- missingness -----------------------------------------------------------------------
    observed = np.ones((n, T), dtype=bool)
    observed[:, 1:] = rng.random((n, T - 1)) >= missing.p_miss
    dropped_after = np.full(n, T)  # participant answers no wave after this one
    if T > 1 and missing.attrition > 0:
        h0 = 1 - (1 - missing.attrition) ** (1 / (T - 1))
        dk = missing.dropout_outcome if missing.dropout_outcome in latent else None
        last = np.full(n, np.nan)
        for w in range(T - 1):
            alive = dropped_after == T
            if dk is not None:
                yw = np.where(observed[:, w] & alive, latent[dk][:, w], np.nan)
                last = np.where(np.isnan(yw), last, yw)
                e = eff[dk]
                sd = math.hypot(e.sd_intercept, e.sd_residual)
                sign = 1.0 if spec.INSTRUMENTS[dk].higher_is_better else -1.0
                z = np.nan_to_num(sign * (e.intercept - last) / sd)
                s = missing.dropout_strength
                hz = np.clip(h0 * np.exp(s * z - s**2 / 2), 0, 0.9)
            else:
                hz = np.full(n, h0)
            leave = alive & (rng.random(n) < hz)
            dropped_after[leave] = w
        observed &= waves[None, :] <= dropped_after[:, None]
    invalid = {k: rng.random((n, T)) < missing.p_invalid for k in latent}
    # a loss is reported at the first answered wave from the loss on (the recall period runs
    # since the last check-in), so a missed wave delays the report
    reportable = observed & post
    report_wave = np.where(reportable.any(axis=1), np.argmax(reportable, axis=1), -1)
    access_loss = (report_wave[:, None] >= 0) & (waves[None, :] == report_wave[:, None])

    # --- frames ----------------------------------------------------------------------------
    pids = np.array(_pseudonyms(n, seed), dtype=object)
    ii, ww = np.nonzero(observed)
    week_since = np.floor((day - event_offset[:, None]) / 7.0).astype(int)
    event_col = spec.event_column(spec.GPT4O_RETIREMENT.key)

    cols: dict[str, Any] = {"pid": pids[ii], "wave": ww, "day": day[ii, ww]}
    scores: dict[str, np.ndarray] = {}
    for k in spec.OUTCOMES:
        if k not in latent:
            cols[k] = np.full(len(ii), np.nan)
            continue
        administered = (ww % 2 == 0) if k in _EVEN_WAVE_ONLY else np.ones(len(ww), bool)
        ok = administered & ~invalid[k][ii, ww]
        scores[k] = np.where(administered, latent[k][ii, ww], np.nan)  # administered rows
        cols[k] = np.where(ok, latent[k][ii, ww], np.nan)
    cols["hours_4o"] = hours_4o[ii, ww]
    cols["hours_other_ai"] = hours_other[ii, ww]
    cols["hours_total"] = hours_total[ii, ww]
    cols["framing"] = pd.array(
        np.where(any_ai[ii, ww], framing[ii, ww], np.nan), dtype="Float64"
    ).astype("Int64")
    cols["companion_use"] = (purposes["companionship"] | purposes["emotional_support"])[ii, ww]
    cols["access_loss"] = access_loss[ii, ww]
    if include_calendar:
        cols[event_col] = week_since[ii, ww]
    panel = pd.DataFrame(cols)

    if long_tables:
        responses = _responses_frame(
            panel, scores, invalid, ii, ww, week_since if include_calendar else None
        )
        per_model = {"gpt4o_chatgpt": h_chat, "gpt4o_api": h_api, **other_hours}
        usage_df = _usage_frame(panel, per_model, purposes, distress, ii, ww)
    else:
        responses = pd.DataFrame(columns=list(spec.RESPONSES.columns))
        usage_df = pd.DataFrame(columns=list(spec.USAGE.columns))

    last_wave = np.minimum(dropped_after, T - 1)
    answered_any = np.zeros(n, dtype=int)
    np.maximum.at(answered_any, ii, day[ii, ww])
    status = np.where(
        dropped_after >= T - 1, "completed", np.where(rng.random(n) < 0.5, "withdrawn", "paused")
    )
    participants = pd.DataFrame(
        {
            "pid": pids,
            "status": status,
            "days_in_study": answered_any,
            "age_band": rng.choice(["18-24", "25-34", "35-44", "45-54", "55-64", "65+"], n),
            "gender": rng.choice(["woman", "man", "non-binary", "prefer not to say"], n),
            "region": rng.choice(
                ["Europe", "North America", "East Asia", "Latin America", "Other"], n
            ),
            "living_situation": rng.choice(["alone", "with partner", "with family", "shared"], n),
            "used_4o_before_retirement": uses_4o,
        }
    )
    participants.loc[rng.random(n) < 0.03, "age_band"] = None  # suppressed small cells

    truth = {
        "seed": seed,
        "n_participants": n,
        "n_waves": T,
        "wave_days": WAVE_DAYS,
        "rounding": rounding,
        "effects": {k: asdict(e) for k, e in eff.items()},
        "usage": asdict(usage),
        "missing": asdict(missing),
        "calendar": asdict(calendar),
        "model": "y = b0 + u0 + (time + u1) t + (within + u2)(x - m_i) + between (m_i - mbar) "
        "+ loss_level post + loss_slope since + e; t in weeks, x = hours_4o per week",
        "realized": {
            "mean_person_hours_4o": mbar,
            "n_access_loss": int(has_loss.sum()),
            "n_dropped": int((last_wave < T - 1).sum()),
            "n_rows_panel": len(panel),
        },
    }
    events = [replace(spec.GPT4O_RETIREMENT, date=calendar.event_date)] if include_calendar else []
    wp = spec.wellpanel_property(
        generated_by=spec.GENERATED_BY_SIMULATOR,
        export_profile=spec.PROFILE_SIMULATED,
        study=study or DEFAULT_STUDY,
        events=events,
        deidentification={"method": "simulated data: no real participants"},
        software=_software(),
        simulation=truth,
    )
    out = SimulatedPanel(
        participants=participants, responses=responses, usage=usage_df, panel=panel
    )
    out.wellpanel = wp
    out.truth = truth
    return out


def _responses_frame(
    panel: pd.DataFrame,
    scores: Mapping[str, np.ndarray],
    invalid: Mapping[str, np.ndarray],
    ii: np.ndarray,
    ww: np.ndarray,
    week_since: np.ndarray | None,
) -> pd.DataFrame:
    """Long responses: one row per administered instrument at an answered wave."""
    parts = []
    for k, sc_all in scores.items():
        sel = ~np.isnan(sc_all)
        inst = spec.INSTRUMENTS[k]
        bad = invalid[k][ii[sel], ww[sel]]
        sc = np.where(bad, np.nan, sc_all[sel])
        part = pd.DataFrame(
            {
                "pid": panel["pid"].to_numpy()[sel],
                "instrument": k,
                "wave": ww[sel],
                "day": panel["day"].to_numpy()[sel],
                "score": sc,
                "severity": [None if np.isnan(v) else inst.severity(v) for v in sc],
                "n_items_answered": np.where(bad, max(inst.n_items - 2, 0), inst.n_items),
                "valid": ~bad,
            }
        )
        if week_since is not None:
            part[spec.event_column(spec.GPT4O_RETIREMENT.key)] = week_since[ii[sel], ww[sel]]
        parts.append(part)
    if not parts:
        return pd.DataFrame(columns=list(spec.RESPONSES.columns))
    out = pd.concat(parts, ignore_index=True)
    return out.sort_values(["pid", "instrument", "wave"], ignore_index=True)


def _usage_frame(
    panel: pd.DataFrame,
    per_model: Mapping[str, np.ndarray],
    purposes: Mapping[str, np.ndarray],
    distress: np.ndarray,
    ii: np.ndarray,
    ww: np.ndarray,
) -> pd.DataFrame:
    """Long usage: one row per answered wave and model; wave-level answers repeated."""
    k_m = len(spec.MODELS)
    rep = np.repeat
    hrs = np.column_stack([per_model[m][ii, ww] for m in spec.MODELS]).ravel()
    al = panel["access_loss"].to_numpy()
    cols: dict[str, Any] = {
        "pid": rep(panel["pid"].to_numpy(), k_m),
        "wave": rep(ww, k_m),
        "day": rep(panel["day"].to_numpy(), k_m),
        "model": np.tile(np.array(spec.MODELS, dtype=object), len(ii)),
        "used": hrs > 0,
        "hours_per_week": hrs,
        "framing": rep(panel["framing"].to_numpy(), k_m),
    }
    for pname in spec.PURPOSES:
        cols[f"purpose_{pname}"] = rep(purposes[pname][ii, ww], k_m)
    cols["access_loss"] = rep(al, k_m)
    cols["access_loss_distress"] = pd.array(
        rep(np.where(al, distress[ii], np.nan), k_m), dtype="Float64"
    ).astype("Int64")
    return pd.DataFrame(cols)


def _software() -> dict[str, str]:
    import numpy
    import scipy

    return {
        "analysis.simulate": "1",
        "numpy": numpy.__version__,
        "pandas": pd.__version__,
        "scipy": scipy.__version__,
    }


def simulate_datapackage(
    out_dir: str | Path,
    n_participants: int = 200,
    n_waves: int = 12,
    seed: int = 0,
    fmt: str = "csv",
    **kwargs: Any,
) -> Path:
    """Simulate and write a Data Package; returns the path of its ``datapackage.json``.

    This is what ``wellpanel simulate`` calls.
    """
    frames = simulate_panel(n_participants, n_waves, seed=seed, **kwargs)
    return write_datapackage(frames, out_dir, wellpanel=frames.wellpanel, fmt=fmt)

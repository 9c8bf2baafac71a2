"""Calibration of every reported estimate by simulation: bias, interval coverage, false positives.

A *scenario* simulates panels with :func:`analysis.simulate.simulate_panel` (known effects),
builds the analysis columns exactly as :func:`analysis.panel.analysis_frame` does, fits one
model family through its public function (``analysis.models.fit_*``, inside
:func:`analysis.models.common.estimates_only`: the same model, without the tidy table) and
records, for every checked role, the estimate, its 95% Satterthwaite interval and whether the
interval covers the truth. Over ``R`` replicates with seeds ``seed, seed + 1, ...``:

- bias = mean(estimate) - truth, Monte Carlo SE = SD(estimate) / sqrt(R);
- coverage = share of intervals covering the truth; when the truth is 0 the rejection rate
  1 - coverage is the false-positive rate of the 5% test (p < 0.05 exactly when the interval
  misses 0).

The scenarios cover every quantity the report shows: the within-person, between-person and
time effects of the primary model, the growth slope, the lagged usage effect, the moderation
interaction (and its within effect), and the access-loss level change, slope change and pre-
and post-event slopes of the interrupted time series. Each family is checked where its
estimand is the simulator's parameter (e.g. the growth slope equals ``time`` only when nothing
else moves the outcome over time) and under the null (every effect 0) for false positives.

``bench/calibration.py`` runs the 1,000-replicate version and prints the table;
tests/analysis/test_calibration.py runs 200 replicates.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from analysis import models, panel, simulate
from analysis.errors import AnalysisError
from analysis.models.common import ModelFit, estimates_only

# Seeds fixed before the runs whose figures are reported: the suite's 200 replicates use
# seeds 1000-1199, the marked 1,000-replicate run seeds 100000-100999 (disjoint).
SUITE_SEED = 1000
SUITE_REPLICATES = 200
SLOW_SEED = 100_000
SLOW_REPLICATES = 1000

# The criteria (checked on the 1,000-replicate run).
COVERAGE_RANGE = (0.93, 0.97)
FALSE_POSITIVE_RANGE = (0.03, 0.07)
MAX_BIAS_MCSE = 2.0

OUTCOME = "who5"
PREDICTOR = "hours_4o"
MODERATOR = "ai_dependence"

# The interrupted time series' post-event slope (shown in the report's notes): b1 + b3.
POST_SLOPE = {"pre_slope": 1.0, "slope_change": 1.0}

# Every effect of the data-generating model at zero (random effects and noise unchanged).
NULL_WHO5 = {"time": 0.0, "within": 0.0, "between": 0.0, "loss_level": 0.0, "loss_slope": 0.0}


# The calibrated scenarios observe every planned wave and keep the latent (unrounded) scores:
# only then is the observed person mean of usage the simulator's m_i, so that the model's
# within/between decomposition estimates exactly the simulator's parameters. With missed waves
# the observed mean is a noisy m_i and the between effect is attenuated (regression dilution:
# -0.82 instead of -0.90 on the defaults); :func:`missing_data_scenarios` measures that.
COMPLETE = simulate.MissingParams(p_miss=0.0, attrition=0.0, p_invalid=0.0)


@dataclass(frozen=True)
class Scenario:
    """One simulation design and the family fitted to it.

    ``truth`` maps each checked role (a row of the family's estimates table) to its true value.
    """

    name: str
    family: str
    fit: Callable[[pd.DataFrame], ModelFit]
    truth: Mapping[str, float]
    effects: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    outcomes: Sequence[str] = (OUTCOME,)
    n_participants: int = 100
    n_waves: int = 8
    description: str = ""
    missing: simulate.MissingParams = COMPLETE
    rounding: bool = False
    # checked quantities that are linear combinations of roles (e.g. the post-event slope)
    contrasts: Mapping[str, Mapping[str, float]] = field(default_factory=dict)


DEFAULT = simulate.DEFAULT_EFFECTS[OUTCOME]


def scenarios(n_participants: int = 100, n_waves: int = 8) -> list[Scenario]:
    """The calibration scenarios: panel size as given, every wave observed, latent scores (see
    COMPLETE); usage and access losses as the simulator's defaults (70% 4o users, losses at the
    GPT-4o retirement and at random, usage down to a quarter after a loss)."""
    size = {"n_participants": n_participants, "n_waves": n_waves}
    no_usage = {"within": 0.0, "between": 0.0}
    trend_only = {"within": 0.0, "between": 0.0, "loss_level": 0.0, "loss_slope": 0.0}
    return [
        Scenario(
            "defaults",
            "within_between",
            lambda f: models.fit_within_between(f, OUTCOME, PREDICTOR),
            {"within": DEFAULT.within, "between": DEFAULT.between, "time": DEFAULT.time},
            description="simulator defaults",
            **size,
        ),
        Scenario(
            "null",
            "within_between",
            lambda f: models.fit_within_between(f, OUTCOME, PREDICTOR),
            {"within": 0.0, "between": 0.0, "time": 0.0},
            {OUTCOME: NULL_WHO5},
            description="every effect 0",
            **size,
        ),
        Scenario(
            "defaults",
            "moderation",
            lambda f: models.fit_moderation(f, OUTCOME, MODERATOR, PREDICTOR),
            {"within": DEFAULT.within, "interaction": 0.0},
            outcomes=(OUTCOME, MODERATOR),
            description="simulator defaults (no interaction is simulated)",
            **size,
        ),
        Scenario(
            "defaults",
            "lagged",
            lambda f: models.fit_lagged(f, OUTCOME, PREDICTOR),
            {"lagged": 0.0},
            description="simulator defaults (no lagged effect is simulated)",
            **size,
        ),
        Scenario(
            "trend only",
            "growth",
            lambda f: models.fit_growth(f, OUTCOME),
            {"time": DEFAULT.time},
            {OUTCOME: trend_only},
            description="time trend 0.05/week; no usage or access-loss effect",
            **size,
        ),
        Scenario(
            "null",
            "growth",
            lambda f: models.fit_growth(f, OUTCOME),
            {"time": 0.0},
            {OUTCOME: NULL_WHO5},
            description="every effect 0",
            **size,
        ),
        Scenario(
            "access loss",
            "event_its",
            lambda f: models.fit_event_its(f, OUTCOME),
            {
                "level_change": DEFAULT.loss_level,
                "slope_change": DEFAULT.loss_slope,
                "pre_slope": DEFAULT.time,
                "post_slope": DEFAULT.time + DEFAULT.loss_slope,
            },
            {OUTCOME: no_usage},
            description="loss -6 points then +0.4/week, trend 0.05/week; no usage effect "
            "(else the level change is the total effect including less use)",
            contrasts={"post_slope": POST_SLOPE},
            **size,
        ),
        Scenario(
            "null",
            "event_its",
            lambda f: models.fit_event_its(f, OUTCOME),
            {"level_change": 0.0, "slope_change": 0.0, "pre_slope": 0.0, "post_slope": 0.0},
            {OUTCOME: NULL_WHO5},
            contrasts={"post_slope": POST_SLOPE},
            description="every effect 0",
            **size,
        ),
    ]


def missing_data_scenarios(n_participants: int = 100, n_waves: int = 8) -> list[Scenario]:
    """The primary model on the simulator's full defaults (12% missed waves, 25% dropout rising
    with poor WHO-5, rounded and clipped scores): reported, not part of the calibration claim,
    because observed-mean centering is then not the simulator's decomposition (see COMPLETE)."""
    return [
        Scenario(
            "defaults, missing data",
            "within_between",
            lambda f: models.fit_within_between(f, OUTCOME, PREDICTOR),
            {"within": DEFAULT.within, "between": DEFAULT.between, "time": DEFAULT.time},
            n_participants=n_participants,
            n_waves=n_waves,
            description="simulator defaults incl. missed waves, dropout and rounding",
            missing=simulate.MissingParams(),
            rounding=True,
        ),
    ]


def model_frame(sim: Mapping[str, pd.DataFrame], outcomes: Sequence[str]) -> pd.DataFrame:
    """The columns :func:`analysis.panel.analysis_frame` derives, for the simulated outcomes
    (same functions, without loading and validating a Data Package)."""
    df = panel.add_time(sim["panel"])
    df["pid"] = pd.factorize(df["pid"])[0]  # integer groups: same grouping, faster group-bys
    moderators = [m for m in outcomes if m != OUTCOME]
    df = panel.decompose(df, [PREDICTOR, *moderators])
    df = panel.add_lags(df, [*outcomes, PREDICTOR, f"{PREDICTOR}_within"])
    df = panel.add_access_loss_time(df)
    return df.sort_values(["pid", "wave"], ignore_index=True)


def replicate(sc: Scenario, seed: int) -> list[dict[str, Any]] | None:
    """One simulated study: the checked roles' estimates and intervals (None: not fittable)."""
    sim = simulate.simulate_panel(
        sc.n_participants,
        sc.n_waves,
        effects=sc.effects,
        seed=seed,
        outcomes=tuple(sc.outcomes),
        missing=sc.missing,
        rounding=sc.rounding,
        long_tables=False,
    )
    frame = model_frame(sim, sc.outcomes)
    try:
        with estimates_only():
            fit = sc.fit(frame)
    except AnalysisError:
        return None
    res = fit.result
    ci = res.conf_int()
    out = []
    for role, truth in sc.truth.items():
        if role in sc.contrasts:
            c = res.contrast({fit.roles[r]: w for r, w in sc.contrasts[role].items()})
            est, lo, hi, p = c["estimate"], c["ci_lower"], c["ci_upper"], c["p"]
        else:
            term = fit.roles[role]
            est, p = float(res.fe[term]), float(res.p[term])
            lo, hi = float(ci.loc[term, "lower"]), float(ci.loc[term, "upper"])
        out.append(
            {
                "role": role,
                "truth": truth,
                "estimate": est,
                "covered": lo <= truth <= hi,
                "p": p,
                "singular": res.singular,
            }
        )
    return out


def run(sc: Scenario, replicates: int, seed: int) -> pd.DataFrame:
    """Summary per checked role over ``replicates`` studies with seeds ``seed, seed + 1, ...``.

    Columns: scenario, family, role, truth, replicates (fitted), failed (not fittable), mean,
    bias, mc_se, bias_in_mcse, coverage, coverage_ci_lower/upper (exact Clopper-Pearson 95%),
    rejection (share with p < 0.05; the false-positive rate when the truth is 0).
    """
    rows: dict[str, list[dict[str, Any]]] = {role: [] for role in sc.truth}
    failed = 0
    for r in range(replicates):
        rec = replicate(sc, seed + r)
        if rec is None:
            failed += 1
            continue
        for item in rec:
            rows[item["role"]].append(item)
    out = []
    for role, items in rows.items():
        est = np.array([it["estimate"] for it in items])
        covered = np.array([it["covered"] for it in items])
        rejected = np.array([it["p"] < 0.05 for it in items])
        n = len(items)
        truth = float(sc.truth[role])
        mc_se = float(est.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
        bias = float(est.mean() - truth) if n else float("nan")
        k = int(covered.sum())
        ci = stats.binomtest(k, n).proportion_ci(0.95, method="exact") if n else None
        out.append(
            {
                "scenario": sc.name,
                "family": sc.family,
                "role": role,
                "truth": truth,
                "replicates": n,
                "failed": failed,
                "mean": float(est.mean()) if n else float("nan"),
                "bias": bias,
                "mc_se": mc_se,
                "bias_in_mcse": bias / mc_se if mc_se > 0 else float("nan"),
                "coverage": k / n if n else float("nan"),
                "coverage_ci_lower": ci.low if ci else float("nan"),
                "coverage_ci_upper": ci.high if ci else float("nan"),
                "rejection": float(rejected.mean()) if n else float("nan"),
                "singular": float(np.mean([it["singular"] for it in items])) if n else 0.0,
            }
        )
    return pd.DataFrame(out)


def run_all(
    replicates: int,
    seed: int,
    n_participants: int = 100,
    n_waves: int = 8,
    families: Sequence[str] | None = None,
) -> pd.DataFrame:
    """:func:`run` for every scenario (optionally only some families)."""
    parts = [
        run(sc, replicates, seed)
        for sc in scenarios(n_participants, n_waves)
        if families is None or sc.family in families
    ]
    return pd.concat(parts, ignore_index=True)


def meets_criteria(tab: pd.DataFrame) -> pd.Series:
    """Per row of :func:`run`: |bias| <= 2 MC SE, coverage in [0.93, 0.97] and, where the
    truth is 0, a false-positive rate in [0.03, 0.07] (the issue's thresholds)."""
    lo, hi = COVERAGE_RANGE
    ok = (tab["bias"].abs() <= MAX_BIAS_MCSE * tab["mc_se"]) & tab["coverage"].between(lo, hi)
    flo, fhi = FALSE_POSITIVE_RANGE
    null = tab["truth"] == 0
    return ok & (~null | tab["rejection"].between(flo, fhi))

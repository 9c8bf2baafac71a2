"""Power of the within-person usage effect, by simulation.

For each number of participants, ``n_sims`` panels are simulated (:mod:`analysis.simulate`)
with the given number of waves, attrition (outcome-dependent, as in the simulator) and 10%
missed waves, the within-between model is fitted (random intercept and within-person usage
slope) and power is the share of panels whose within-person effect is significant at ``alpha``
(Satterthwaite t test), with a Wilson 95% interval for the Monte-Carlo error.

The effect size is standardized like the report's estimates: ``d = beta_within * SD(x_within)
/ SD(y)``, the change of the outcome in SDs per SD of a person's week-to-week variation in
GPT-4o hours. It is converted to ``beta_within`` with a large pilot simulation of the same
design. Access-loss effects are switched off so that only the tested effect differs from 0.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from analysis import mixed, plots, simulate
from analysis.errors import AnalysisError, InsufficientDataError
from analysis.panel import add_time, decompose

OUTCOME = "who5"
P_MISS = 0.10
FORMULA = f"{OUTCOME} ~ time + hours_4o_within + hours_4o_between"
RANDOM = "~ hours_4o_within"


def _effects(beta_within: float) -> dict[str, dict[str, float]]:
    return {OUTCOME: {"within": beta_within, "loss_level": 0.0, "loss_slope": 0.0}}


def _simulate(n: int, waves: int, beta: float, attrition: float, seed: int) -> pd.DataFrame:
    sp = simulate.simulate_panel(
        n,
        waves,
        effects=_effects(beta),
        seed=seed,
        outcomes=(OUTCOME,),
        missing=simulate.MissingParams(p_miss=P_MISS, attrition=attrition),
        long_tables=False,
    )
    return decompose(add_time(sp["panel"]), ["hours_4o"])


def effect_to_beta(effect_size: float, n_waves: int, attrition: float, seed: int = 12345) -> float:
    """Raw within-person slope (points per hour/week) for a standardized effect size."""
    pilot = _simulate(2000, n_waves, 0.0, attrition, seed)
    sd_xw = float(pilot["hours_4o_within"].std())
    sd_y = float(pilot[OUTCOME].std())
    beta = effect_size * sd_y / sd_xw
    # SD(y) grows with the effect itself: one refinement at the implied slope
    pilot = _simulate(2000, n_waves, beta, attrition, seed)
    return effect_size * float(pilot[OUTCOME].std()) / sd_xw


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    den = 1 + z**2 / n
    mid = (p + z**2 / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / den
    return max(mid - half, 0.0), min(mid + half, 1.0)


def simulate_power(
    n_participants: int,
    n_waves: int,
    effect_size: float,
    attrition: float = 0.2,
    n_sims: int = 200,
    alpha: float = 0.05,
    seed: int = 0,
    beta: float | None = None,
    tick: Callable[[], None] | None = None,
) -> dict[str, float]:
    """Power at one design point; see the module docstring."""
    _check_design(n_participants, n_waves, attrition, n_sims, alpha)
    if beta is None:
        beta = effect_to_beta(effect_size, n_waves, attrition)
    hits = fails = 0
    estimates = []
    for r in range(n_sims):
        frame = _simulate(n_participants, n_waves, beta, attrition, seed * 1_000_003 + r)
        try:
            res = mixed.fit(frame, FORMULA, "pid", random=RANDOM)
        except AnalysisError:
            fails += 1
        else:
            estimates.append(res.fe["hours_4o_within"])
            hits += bool(res.p["hours_4o_within"] < alpha)
        if tick:
            tick()
    ok = n_sims - fails
    lo, hi = wilson(hits, ok)
    return {
        "n_participants": n_participants,
        "n_waves": n_waves,
        "effect_size": effect_size,
        "beta_within": beta,
        "attrition": attrition,
        "alpha": alpha,
        "n_sims": n_sims,
        "n_failed": fails,
        "power": hits / ok if ok else float("nan"),
        "ci_lower": lo,
        "ci_upper": hi,
        "mean_estimate": float(np.mean(estimates)) if estimates else float("nan"),
    }


def power_curve(
    participants: Sequence[int],
    n_waves: int,
    effect_size: float,
    attrition: float = 0.2,
    n_sims: int = 200,
    alpha: float = 0.05,
    seed: int = 0,
    progress: bool = False,
) -> pd.DataFrame:
    """Power for each number of participants (one row each)."""
    if not participants:
        raise AnalysisError("give at least one number of participants")
    for n in participants:
        _check_design(n, n_waves, attrition, n_sims, alpha)
    beta = effect_to_beta(effect_size, n_waves, attrition)
    rows = []
    with tqdm(
        total=len(participants) * n_sims, desc="power", unit="panel", disable=not progress
    ) as bar:
        for i, n in enumerate(sorted(participants)):
            rows.append(
                simulate_power(
                    n,
                    n_waves,
                    effect_size,
                    attrition,
                    n_sims,
                    alpha,
                    seed + i,
                    beta,
                    tick=lambda: bar.update(1),
                )
            )
    return pd.DataFrame(rows)


def _check_design(n: int, waves: int, attrition: float, n_sims: int, alpha: float) -> None:
    if n < 10:
        raise InsufficientDataError(f"{n} participants: power needs at least 10 per design point")
    if waves < 2:
        raise InsufficientDataError(f"{waves} wave(s): within-person effects need at least 2")
    if not 0 <= attrition < 1:
        raise AnalysisError(f"attrition must be in [0, 1), not {attrition}")
    if n_sims < 1:
        raise AnalysisError("sims must be at least 1")
    if not 0 < alpha < 1:
        raise AnalysisError(f"alpha must be in (0, 1), not {alpha}")


def run_power(
    participants: Sequence[int],
    n_waves: int,
    effect_size: float,
    attrition: float,
    n_sims: int,
    alpha: float,
    seed: int,
    out_dir: str | Path,
    progress: bool = True,
) -> list[Path]:
    """Power curve to ``out_dir``: power.csv, power.json and power.png."""
    df = power_curve(participants, n_waves, effect_size, attrition, n_sims, alpha, seed, progress)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv = out / "power.csv"
    df.to_csv(csv, index=False)
    js = out / "power.json"
    js.write_text(
        json.dumps(
            {
                "design": "within-between model, " + FORMULA + ", random " + RANDOM,
                "points": df.to_dict(orient="records"),
            },
            indent=1,
        )
    )
    png = plots.save(plots.power_curve(df, alpha), out / "power.png")
    return [csv, js, png]

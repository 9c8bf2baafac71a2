"""Benchmark: random-slope model fits, analysis.mixed against statsmodels MixedLM.

Model: ``y ~ time + hours_within + hours_between``, random intercept and time slope per
participant, REML, on simulated panels of 5,000 participants x 20 waves and 100,000 x 26
(15% of waves missing at random). statsmodels runs at the smaller size only (it takes minutes
beyond). Prints one JSON object per line: each fit's wall time, log-likelihood and estimates,
then the speed-up at 5,000 x 20 and the per-row time ratio between the sizes (<= 1 means time
grows no faster than linearly with rows).

Run: ``.venv/bin/python bench/analysis.py [--skip-statsmodels]``
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from pathlib import Path

# This file is named like the package it measures: drop bench/ from the import path so that
# "analysis" resolves to the project's package, not to this script.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis import mixed  # noqa: E402

FORMULA = "y ~ time + hours_within + hours_between"
RANDOM = "~ time"


def simulate(n_participants: int, n_waves: int, seed: int = 0) -> pd.DataFrame:
    """A panel like wellpanel's: biweekly waves, person-centered usage, random slopes."""
    rng = np.random.default_rng(seed)
    pid = np.repeat(np.arange(n_participants), n_waves)
    wave = np.tile(np.arange(n_waves), n_participants)
    time_w = (wave * 14 + rng.integers(-2, 4, pid.size) * (wave > 0)) / 7.0
    level = rng.lognormal(1.5, 0.7, n_participants)
    hours = level[pid] * rng.gamma(4.0, 0.25, pid.size)
    b0 = rng.normal(0, 12, n_participants)
    b1 = rng.normal(0, 0.3, n_participants)
    y = 52 + b0[pid] + (0.05 + b1[pid]) * time_w + 0.4 * (hours - level[pid])
    y += -0.9 * (level[pid] - level.mean()) + rng.normal(0, 9, pid.size)
    keep = (wave == 0) | (rng.random(pid.size) > 0.15)
    df = pd.DataFrame({"pid": pid, "time": time_w, "hours": hours, "y": y})[keep]
    pmean = df.groupby("pid")["hours"].transform("mean")
    df["hours_within"] = df["hours"] - pmean
    df["hours_between"] = pmean - df.groupby("pid")["hours"].mean().mean()
    return df.reset_index(drop=True)


def fit_ours(df: pd.DataFrame) -> tuple[float, mixed.MixedResult]:
    t0 = time.perf_counter()
    res = mixed.fit(df, FORMULA, "pid", random=RANDOM, reml=True)
    return time.perf_counter() - t0, res


def fit_statsmodels(df: pd.DataFrame):
    import statsmodels.formula.api as smf

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = smf.mixedlm(FORMULA, df, groups=df["pid"], re_formula=RANDOM)
        res = model.fit(reml=True, method=["lbfgs"])
    return time.perf_counter() - t0, res


def emit(obj: dict) -> None:
    print(json.dumps(obj), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-statsmodels", action="store_true")
    args = ap.parse_args()
    common = {"python": platform.python_version(), "model": f"{FORMULA} + ({RANDOM} | pid)"}
    sizes = [(5_000, 20), (100_000, 26)]
    per_row = {}
    ours_small = None
    for n, w in sizes:
        df = simulate(n, w, seed=n)
        fit_ours(df.iloc[: min(len(df), 2000)])  # warm-up (imports, caches)
        secs, res = fit_ours(df)
        per_row[(n, w)] = secs / len(df)
        if (n, w) == sizes[0]:
            ours_small = secs
        emit(
            {
                **common,
                "engine": "analysis.mixed",
                "participants": n,
                "waves": w,
                "rows": len(df),
                "seconds": round(secs, 4),
                "loglik": res.loglik,
                "fixed_effects": res.fe.round(6).to_dict(),
                "converged": res.converged,
                "n_evals": res.optimizer.get("n_evals"),
            }
        )
        if (n, w) == sizes[0] and not args.skip_statsmodels:
            sm_secs, sm = fit_statsmodels(df)
            emit(
                {
                    **common,
                    "engine": "statsmodels MixedLM (lbfgs)",
                    "participants": n,
                    "waves": w,
                    "rows": len(df),
                    "seconds": round(sm_secs, 4),
                    "loglik": float(sm.llf),
                    "fixed_effects": sm.fe_params.round(6).to_dict(),
                    "converged": bool(sm.converged),
                }
            )
            emit(
                {
                    "comparison": "speed-up at 5,000 x 20",
                    "statsmodels_seconds": round(sm_secs, 4),
                    "ours_seconds": round(ours_small, 4),
                    "speedup": round(sm_secs / ours_small, 1),
                    "loglik_difference_ours_minus_statsmodels": res.loglik - float(sm.llf),
                    "target": ">= 50",
                }
            )
    small, large = per_row[sizes[0]], per_row[sizes[1]]
    emit(
        {
            "comparison": "per-row time, 100,000 x 26 vs 5,000 x 20",
            "seconds_per_row_small": small,
            "seconds_per_row_large": large,
            "per_row_time_ratio": round(large / small, 3),
            "target": "<= 1 (no worse than linear in rows)",
        }
    )


if __name__ == "__main__":
    main()

"""Calibration study of every reported estimate (#19 part 1): the 1,000-replicate version.

For each scenario of :mod:`analysis.calibration` (every model family and every quantity the
report shows, under its own effects and under the null) it simulates ``--replicates`` studies
with seeds ``--seed, --seed + 1, ...``, fits the family and prints one JSON object per line
(bias, Monte Carlo SE, 95% coverage with its exact binomial interval, rejection rate at 5%,
which is the false-positive rate where the truth is 0), then a plain table on stderr. The
criteria of the issue are checked and reported per row (``ok``): |bias| <= 2 MC SE, coverage
in [0.93, 0.97], false-positive rate in [0.03, 0.07] where the truth is 0. The informational
missing-data scenario (simulator defaults with missed waves, dropout and rounding) is printed
with ``"calibrated": false``.

Run: ``.venv/bin/python bench/calibration.py [--replicates 1000] [--seed 100000]
[--participants 100] [--waves 8] [--family lagged ...]``. About 0.1-0.2 s per fit on one core:
1,000 replicates of the eight scenarios take 15-30 minutes. The same study runs under pytest
with ``-m calibration`` (tests/analysis/test_calibration.py).
"""

from __future__ import annotations

import os

# One BLAS thread: the models are small, and threads only contend (3x slower on a busy machine).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from analysis import calibration  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--replicates", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=calibration.SLOW_SEED)
    ap.add_argument("--participants", type=int, default=100)
    ap.add_argument("--waves", type=int, default=8)
    ap.add_argument("--family", action="append", help="only these families (repeatable)")
    ap.add_argument("--no-missing-data", action="store_true", help="skip the informational run")
    args = ap.parse_args()
    scs = [(sc, True) for sc in calibration.scenarios(args.participants, args.waves)]
    if not args.no_missing_data:
        scs += [
            (sc, False) for sc in calibration.missing_data_scenarios(args.participants, args.waves)
        ]
    tables = []
    for sc, calibrated in scs:
        if args.family and sc.family not in args.family:
            continue
        t0 = time.perf_counter()
        tab = calibration.run(sc, args.replicates, args.seed)
        tab["ok"] = calibration.meets_criteria(tab)
        tab["calibrated"] = calibrated
        tab["seconds"] = round(time.perf_counter() - t0, 1)
        for rec in tab.to_dict(orient="records"):
            print(json.dumps({"bench": "calibration", "seed": args.seed, **rec}), flush=True)
        tables.append(tab)
    if tables:
        out = pd.concat(tables, ignore_index=True)
        cols = [
            "scenario",
            "family",
            "role",
            "truth",
            "replicates",
            "bias",
            "mc_se",
            "bias_in_mcse",
            "coverage",
            "rejection",
            "ok",
        ]
        with pd.option_context("display.width", 200, "display.max_columns", 20):
            print(out[cols].round(4).to_string(index=False), file=sys.stderr)


if __name__ == "__main__":
    main()

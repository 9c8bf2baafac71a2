"""Reference figures from an independent implementation, pyCANON (PyPI ``pycanon``), for
tests/app/export/test_risk.py.

pyCANON pins old numpy/pandas/pyreadstat versions, so it is not a dependency of wellpanel; run
this script in a separate virtual environment and commit its output:

    python3 -m venv /tmp/pycanon && /tmp/pycanon/bin/pip install pycanon==1.3.6
    /tmp/pycanon/bin/python tests/reference/pycanon_reference.py

It writes deid_sample.csv (a fixed synthetic sample: three quasi-identifiers, a PHQ-9 band as the
sensitive attribute, coded 0..4 in band order as ``band_code``) and pycanon_reference.json: k, l
and t-closeness (ordered distance on band_code, equal distance on band) for two sets of
quasi-identifiers, plus the sdcMicro-style risk figures without weights (individual risk 1/f_k,
their sum, sample uniques) computed with a plain pandas group-by.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd
from pycanon import anonymity

HERE = Path(__file__).parent
BANDS = ["minimal", "mild", "moderate", "moderately_severe", "severe"]


def sample(n: int = 240, seed: int = 16) -> pd.DataFrame:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        age = rng.choices(["18-34", "35-54", "55+"], [50, 35, 15])[0]
        gender = rng.choices(["woman", "man", "another gender or not stated"], [47, 47, 6])[0]
        region = rng.choices(["Europe", "Americas", "Asia", "Oceania"], [40, 35, 20, 5])[0]
        weights = [30, 30, 20, 12, 8] if gender != "man" else [40, 30, 15, 10, 5]
        band = rng.choices(BANDS, weights)[0]
        rows.append({"age_band": age, "gender": gender, "region": region, "band": band,
                     "band_code": BANDS.index(band)})
    return pd.DataFrame(rows)


def risk(df: pd.DataFrame, qi: list[str]) -> dict[str, float]:
    fk = df.groupby(qi)[qi[0]].transform("size")
    r = 1.0 / fk
    return {"max_individual_risk": float(r.max()), "expected_reidentifications": float(r.sum()),
            "sample_uniques": int((fk == 1).sum())}


def main() -> None:
    df = sample()
    df.to_csv(HERE / "deid_sample.csv", index=False)
    out = {"source": "pycanon " + __import__("importlib.metadata").metadata.version("pycanon"),
           "cases": {}}
    for name, qi in {"age_gender_region": ["age_band", "gender", "region"],
                     "age_gender": ["age_band", "gender"]}.items():
        out["cases"][name] = {
            "quasi_identifiers": qi,
            "k": int(anonymity.k_anonymity(df, qi)),
            "l": int(anonymity.l_diversity(df, qi, ["band"])),
            "t_ordered": float(anonymity.t_closeness(df, qi, ["band_code"])),
            "t_equal": float(anonymity.t_closeness(df, qi, ["band"])),
            **risk(df, qi),
        }
    (HERE / "pycanon_reference.json").write_text(json.dumps(out, indent=2) + "\n", "utf-8")


if __name__ == "__main__":
    main()

"""Disclosure-risk figures (app/export/risk.py) against an independent implementation: pyCANON's
k-anonymity, l-diversity and t-closeness, and sdcMicro's individual and global risk without
weights, on a fixed sample. The reference numbers come from tests/reference/pycanon_reference.py
(run in its own environment; its output is committed next to it)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from app.export import risk

REFERENCE = Path(__file__).parents[2] / "reference"
BANDS = ["minimal", "mild", "moderate", "moderately_severe", "severe"]


def sample() -> list[dict[str, str]]:
    with (REFERENCE / "deid_sample.csv").open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("case", ["age_gender_region", "age_gender"])
def test_figures_equal_pycanon_and_sdcmicro_style_risk(case):
    ref = json.loads((REFERENCE / "pycanon_reference.json").read_text("utf-8"))["cases"][case]
    rows = sample()
    keys = [tuple(r[q] for q in ref["quasi_identifiers"]) for r in rows]
    bands = [r["band"] for r in rows]
    ordered = risk.measure(keys, bands, BANDS)
    assert ordered.k == ref["k"]
    assert ordered.l_diversity == ref["l"]
    assert ordered.t_closeness == pytest.approx(ref["t_ordered"], abs=1e-9)
    assert ordered.max_individual_risk == pytest.approx(ref["max_individual_risk"])
    assert ordered.expected_reidentifications == pytest.approx(ref["expected_reidentifications"])
    assert ordered.sample_uniques == ref["sample_uniques"]
    # a nominal attribute: equal distance
    assert risk.measure(keys, bands).t_closeness == pytest.approx(ref["t_equal"], abs=1e-9)


def test_individual_and_global_risk_by_hand():
    keys = ["a", "a", "a", "b", "b", "c"]
    m = risk.measure(keys)
    assert list(m.individual_risk) == pytest.approx([1 / 3] * 3 + [1 / 2] * 2 + [1.0])
    assert m.expected_reidentifications == pytest.approx(3.0)  # = number of distinct keys
    assert m.global_risk == pytest.approx(0.5)
    assert (m.k, m.sample_uniques, m.classes) == (1, 1, 3)
    assert m.as_dict()["records_by_individual_risk"] == {"0.333333": 3, "0.5": 2, "1.0": 1}


def test_ordered_distance_weighs_how_far_bands_move():
    # one class holding only the lowest band, one only the highest: t = 0.5 either way for
    # the equal distance, but the ordered distance sees four steps between them
    keys = ["x"] * 5 + ["y"] * 5
    sens = ["minimal"] * 5 + ["severe"] * 5
    assert risk.measure(keys, sens, BANDS).t_closeness == pytest.approx(0.5)
    assert risk.measure(keys, sens).t_closeness == pytest.approx(0.5)
    near = ["minimal"] * 5 + ["mild"] * 5
    assert risk.measure(keys, near, BANDS).t_closeness == pytest.approx(0.5 / 4)
    assert risk.measure(keys, near).t_closeness == pytest.approx(0.5)


def test_missing_sensitive_values_are_left_out_of_l_and_t():
    m = risk.measure(["a", "a", "b", "b"], ["mild", None, "mild", "severe"], BANDS)
    assert m.l_diversity == 1 and m.k == 2
    assert risk.measure([], None).k is None

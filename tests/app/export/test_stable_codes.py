"""Stable codes (issue 16 part 5): SPSS/Stata codes of every categorical column come from the
instrument and study definitions in their listed order, are the same in every export whatever
the data hold, and ordered bands are coded in order and marked ordinal. SQLite and PostgreSQL."""

from __future__ import annotations

import json
import random
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyreadstat
import pytest

from analysis import spec
from app.export import deidentify
from app.export.service import ExportOptions, export_panel
from tests.app.export.conftest import populate
from tests.app.export.seed import START

PHQ9_BANDS = ["minimal", "mild", "moderate", "moderately_severe", "severe"]


def codes(out: Path, fmt: str) -> dict[str, dict[str, dict[str, str]]]:
    """resource -> column -> {code: value}, as datapackage.json documents them."""
    resources = json.loads((out / "datapackage.json").read_text("utf-8"))["resources"]
    return {r["wellpanel"]["source_resource"]: r["wellpanel"].get("value_codes", {})
            for r in resources if r["format"] == fmt}


def stat_info(out: Path, fmt: str, resource: str) -> dict[str, Any]:
    resources = json.loads((out / "datapackage.json").read_text("utf-8"))["resources"]
    return next(r["wellpanel"] for r in resources if r["name"] == f"{resource}-{fmt}")


def numbered(values: list[str]) -> dict[str, str]:
    return {str(i + 1): v for i, v in enumerate(values)}


@pytest.mark.parametrize("fmt", ["sav", "dta"])
def test_codes_come_from_the_definitions_and_never_move(engine, seeder, tmp_path, fmt):
    populate(seeder, tmp_path)
    first = tmp_path / "first"
    export_panel(engine, ExportOptions(out=first, fmt=fmt))
    before = codes(first, fmt)
    # the definitions' order, not the values that happen to occur
    for field in ("age_band", "gender", "living_situation"):
        assert before["participants"][field] == numbered(
            deidentify.hierarchy_for(field).categories), field
    assert before["participants"]["gender"]["2"] == "man"
    assert before["participants"]["status"] == numbered(list(spec.STATUSES))
    severity = {v: int(c) for c, v in before["responses"]["severity"].items()}
    assert [severity[b] for b in PHQ9_BANDS] == sorted(severity[b] for b in PHQ9_BANDS)
    # six more people, every one of a gender category: no code moves
    rng = random.Random(3)
    for i in range(6):
        demo = seeder.demographics(rng) | {"gender": "another_gender"}
        seeder.participant(rng, enrolled_at=START + timedelta(days=20 + i), waves=2,
                           demographics=demo, miss=0.0)
    seeder.flush()
    second = tmp_path / "second"
    export_panel(engine, ExportOptions(out=second, fmt=fmt))
    assert codes(second, fmt) == before
    # the file holds those codes: every pid's gender reads back as the CSV's value
    read = pyreadstat.read_sav if fmt == "sav" else pyreadstat.read_dta
    df, meta = read(str(second / f"participants.{fmt}"))
    labels = meta.variable_value_labels["gender"]
    assert {int(k): v for k, v in labels.items()} == {
        int(c): v for c, v in before["participants"]["gender"].items()}
    import pandas as pd

    csv = pd.read_csv(second / "participants.csv", dtype=str).set_index("pid")
    for pid, code in zip(df["pid"], df["gender"], strict=True):
        expected = csv.loc[pid, "gender"]
        assert (labels[code] if code == code else None) == (
            expected if isinstance(expected, str) else None)


def test_ordered_bands_are_marked_ordinal(engine, seeder, tmp_path):
    populate(seeder, tmp_path)
    out = tmp_path / "sav"
    export_panel(engine, ExportOptions(out=out, fmt="sav"))
    _, meta = pyreadstat.read_sav(str(out / "responses.sav"), metadataonly=True)
    assert meta.variable_measure["severity"] == "ordinal"
    assert meta.variable_measure["instrument"] == "nominal"
    _, meta = pyreadstat.read_sav(str(out / "participants.sav"), metadataonly=True)
    assert meta.variable_measure["age_band"] == "ordinal"
    assert meta.variable_measure["gender"] == "nominal"
    # Stata has no measurement level: the package names the ordered columns
    dta = tmp_path / "dta"
    export_panel(engine, ExportOptions(out=dta, fmt="dta"))
    assert "severity" in stat_info(dta, "dta", "responses")["ordinal"]
    assert "age_band" in stat_info(dta, "dta", "participants")["ordinal"]
    assert "gender" not in stat_info(dta, "dta", "participants")["ordinal"]

"""Missing values with reasons (issue 16 part 5): an empty item cell says why, skipped (shown,
not answered) or not applicable (hidden by its display condition): distinct user-missing codes
in SPSS, and the items_skipped / items_not_applicable columns in every format (Stata keeps
system missing: see app/export/writers.py MISSING_CODES). SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyreadstat
import pytest
import yaml

from app.export import codebook as cb
from app.export.service import ExportOptions, _item_values, export_panel
from app.export.writers import MISSING_CODES
from app.surveys.instruments import Instrument
from tests.conftest import SURVEYS_DIR


def instrument(key: str) -> Instrument:
    path = Path(SURVEYS_DIR) / "instruments" / f"{key}.yaml"
    return Instrument.model_validate(yaml.safe_load(path.read_text("utf-8")))


def test_an_empty_item_says_whether_it_was_skipped_or_not_shown():
    usage = instrument("ai_usage")
    columns = [cb.ItemColumn("hours_claude", "ai_usage", "hours_claude", None, "number"),
               cb.ItemColumn("hours_gemini", "ai_usage", "hours_gemini", None, "number"),
               cb.ItemColumn("ai_framing", "ai_usage", "ai_framing", None, "integer")]
    # claude was used, so its hours were asked and left empty; gemini's were never shown
    values = _item_values(columns, {"used_models": ["claude"]}, instrument=usage)
    assert values["hours_claude"] is None and values["hours_gemini"] is None
    assert values["items_skipped"] is not None and "hours_claude" in values["items_skipped"]
    assert values["items_not_applicable"] is not None
    assert "hours_gemini" in values["items_not_applicable"]
    assert "hours_claude" not in values["items_not_applicable"]
    answered = _item_values(columns, {"used_models": ["claude"], "hours_claude": 2.0,
                                      "ai_framing": 3}, instrument=usage)
    assert answered["hours_claude"] == 2.0 and answered["items_skipped"] is None


def listed(cell: object) -> list[str]:
    return str(cell).split(";") if isinstance(cell, str) and cell else []


@pytest.mark.parametrize("fmt", ["sav", "dta"])
def test_reasons_are_distinct_missing_codes(engine, population, tmp_path, fmt):
    out = tmp_path / fmt
    export_panel(engine, ExportOptions(out=out, fmt=fmt, include_items=True))
    csv = pd.read_csv(out / "responses.csv", dtype=str, keep_default_na=False)
    marked = [(row, col, reason) for row, cells in enumerate(
        zip(csv["items_skipped"], csv["items_not_applicable"], strict=True))
        for reason, cell in zip(("skipped", "not_applicable"), cells, strict=True)
        for col in listed(cell)]
    assert any(r == "not_applicable" for _, _, r in marked)
    for row, col, _ in marked:
        assert csv.at[row, col] == "", (row, col)  # empty in CSV; the reason is in its column
    read = pyreadstat.read_sav if fmt == "sav" else pyreadstat.read_dta
    raw, meta = read(str(out / f"responses.{fmt}"), user_missing=True)
    plain, _ = read(str(out / f"responses.{fmt}"))
    # the reason columns travel in the statistics file too, row for row
    assert raw["items_not_applicable"].tolist() == csv["items_not_applicable"].tolist()
    checked = 0
    for row, col, reason in marked:
        if col not in raw.columns or raw[col].dtype == object:
            continue  # text columns: empty text
        assert pd.isna(plain.at[row, col])  # never a number in a computation
        if fmt == "sav":
            code, _ = MISSING_CODES[reason]
            assert raw.at[row, col] == float(code), (row, col, raw.at[row, col])
            assert meta.variable_value_labels[col][float(code)].startswith(
                reason.replace("_", " "))
        checked += 1
    assert checked > 0
    resource = next(r for r in json.loads((out / "datapackage.json").read_text("utf-8"))
                    ["resources"] if r["name"] == f"responses-{fmt}")
    if fmt == "sav":
        assert resource["wellpanel"]["missing_codes"] == {
            "not_administered": -91, "skipped": -92, "withdrawn": -93, "not_applicable": -94}
        assert set(meta.missing_ranges) >= {c for _, c, _ in marked if c in raw.columns
                                            and raw[c].dtype != object}
    else:
        assert "missing_codes" not in resource["wellpanel"]

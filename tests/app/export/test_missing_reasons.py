"""Missing values with reasons (issue 16 part 5): an empty item cell says why, skipped (shown,
not answered) or not applicable (hidden by its display condition); an empty outcome cell of the
panel says whether the survey was not administered, answered with too few items (skipped), or
came after the participant's withdrawal. Distinct user-missing codes (-91..-94) in SPSS,
extended missing values (.a-.d) in Stata, both labelled, and reason columns in every format.
SQLite and PostgreSQL."""

from __future__ import annotations

import json
import random
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pyreadstat
import pytest
import yaml

from app.export import codebook as cb
from app.export.service import ExportOptions, _item_values, export_panel, pseudonym_of, read_key
from app.export.writers import MISSING_CODES
from app.surveys.instruments import Instrument
from tests.app.export.seed import START
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
        if col not in raw.columns or plain[col].dtype == object:
            continue  # text columns: empty text
        assert pd.isna(plain.at[row, col])  # never a number in a computation
        code, letter = MISSING_CODES[reason]
        mark = float(code) if fmt == "sav" else letter
        assert raw.at[row, col] == mark, (row, col, raw.at[row, col])
        assert meta.variable_value_labels[col][mark].startswith(reason.replace("_", " "))
        checked += 1
    assert checked > 0
    resource = next(r for r in json.loads((out / "datapackage.json").read_text("utf-8"))
                    ["resources"] if r["name"] == f"responses-{fmt}")
    if fmt == "sav":
        assert resource["wellpanel"]["missing_codes"] == {
            "not_administered": -91, "skipped": -92, "withdrawn": -93, "not_applicable": -94}
        assert set(meta.missing_ranges) >= {c for _, c, _ in marked if c in raw.columns
                                            and plain[c].dtype != object}
    else:
        assert resource["wellpanel"]["missing_codes"] == {
            "not_administered": ".a", "skipped": ".b", "withdrawn": ".c",
            "not_applicable": ".d"}
        numeric = {c for _, c, _ in marked if c in raw.columns and plain[c].dtype != object}
        assert numeric and set(meta.missing_user_values) >= numeric


# ---- outcome cells of the panel: not administered, skipped, withdrawn ---------------------

def lose_answers(seeder, person, wave: int, instruments: set[str]) -> None:  # type: ignore[no-untyped-def]
    """The person's surveys of these instruments in this wave closed unanswered."""
    inst = {r["id"]: r for r in seeder.rows["survey_instances"]
            if r["participant_id"] == person.id and r["wave"] == wave
            and r["instrument_key"] in instruments}
    for r in inst.values():
        r.update(status="expired", completed_at=None)
    gone = {r["id"] for r in seeder.rows["survey_responses"] if r["instance_id"] in inst}
    seeder.rows["survey_responses"] = [r for r in seeder.rows["survey_responses"]
                                       if r["id"] not in gone]
    seeder.rows["response_scores"] = [r for r in seeder.rows["response_scores"]
                                      if r["response_id"] not in gone]


def invalidate(seeder, person, wave: int, instrument: str) -> None:  # type: ignore[no-untyped-def]
    """The person answered, with too few items for a valid score."""
    iid = next(r["id"] for r in seeder.rows["survey_instances"]
               if r["participant_id"] == person.id and r["wave"] == wave
               and r["instrument_key"] == instrument)
    rid = next(r["id"] for r in seeder.rows["survey_responses"] if r["instance_id"] == iid)
    score = next(r for r in seeder.rows["response_scores"] if r["response_id"] == rid)
    score.update(valid=False, primary=None, band=None)


def withdraw_between(seeder, person, wave: int, after: str) -> None:  # type: ignore[no-untyped-def]
    """Move the person's stop-contact withdrawal to just after their answer to ``after`` in
    this wave: the rest of the wave (and everything later) comes after it."""
    iid = next(r["id"] for r in seeder.rows["survey_instances"]
               if r["participant_id"] == person.id and r["wave"] == wave
               and r["instrument_key"] == after)
    at = next(r["submitted_at"] for r in seeder.rows["survey_responses"]
              if r["instance_id"] == iid) + timedelta(seconds=30)
    for r in seeder.rows["withdrawals"]:
        if r["participant_id"] == person.id:
            r.update(confirmed_at=at, requested_at=at - timedelta(minutes=5))
    for r in seeder.rows["participants"]:
        if r["id"] == person.id:
            r["withdrawn_at"] = at


def test_empty_outcomes_say_why(engine, seeder, tmp_path):
    rng = random.Random(11)
    seeder.populate(30, 3, seed=11, miss=0.0)
    absent = seeder.participant(rng, enrolled_at=START + timedelta(days=2), waves=3, miss=0.0)
    partial = seeder.participant(rng, enrolled_at=START + timedelta(days=3), waves=3, miss=0.0)
    quits = seeder.participant(rng, enrolled_at=START + timedelta(days=4), waves=3, miss=0.0,
                               withdraw=("stop_contact", 1), answer_after_withdrawal=True)
    lose_answers(seeder, absent, 1, {"who5"})
    invalidate(seeder, partial, 1, "gad7")
    withdraw_between(seeder, quits, 1, "who5")  # phq9, gad7, ucla3... come after it
    seeder.flush()
    key_file = tmp_path / "k.key"
    key_file.write_text("0123456789abcdef0123456789abcdef", "utf-8")
    key, _ = read_key(key_file)
    pid = {name: pseudonym_of(key, p.id) for name, p in
           (("absent", absent), ("partial", partial), ("quits", quits))}
    expected = {("absent", "who5"): "not_administered", ("partial", "gad7"): "skipped",
                ("quits", "phq9"): "withdrawn", ("quits", "gad7"): "withdrawn"}
    for fmt in ("csv", "sav", "dta"):
        out = tmp_path / fmt
        export_panel(engine, ExportOptions(out=out, fmt=fmt, key_file=key_file))
        csv = pd.read_csv(out / "panel.csv", dtype=str, keep_default_na=False)
        row = {name: csv.index[(csv["pid"] == p) & (csv["wave"] == "1")][0]
               for name, p in pid.items()}
        assert csv.at[row["quits"], "who5"] != ""  # answered before withdrawing
        for (who, col), reason in expected.items():
            r = row[who]
            assert csv.at[r, col] == "", (who, col)
            assert col in listed(csv.at[r, f"scores_{reason}"]), (who, col, reason)
            others = {c for c in ("scores_not_administered", "scores_skipped",
                                  "scores_withdrawn") if c != f"scores_{reason}"}
            assert all(col not in listed(csv.at[r, c]) for c in others)
        # every empty outcome cell has exactly one reason, and no answered one has any
        for r in range(len(csv)):
            reasons = [col for c in ("scores_not_administered", "scores_skipped",
                                     "scores_withdrawn") for col in listed(csv.at[r, c])]
            for outcome in ("who5", "phq9", "gad7", "ucla3"):
                assert (csv.at[r, outcome] == "") == (reasons.count(outcome) == 1), (r, outcome)
        if fmt == "csv":
            book = json.loads((out / "datapackage.json").read_text("utf-8"))
            missing = book["wellpanel"]["codebook"]["missing_values"]
            assert missing["reasons"]["withdrawn"] == {
                "meaning": missing["reasons"]["withdrawn"]["meaning"], "sav": -93, "dta": ".c"}
            assert missing["reason_columns"]["scores_withdrawn"]["resource"] == "panel"
            continue
        read = pyreadstat.read_sav if fmt == "sav" else pyreadstat.read_dta
        raw, meta = read(str(out / f"panel.{fmt}"), user_missing=True)
        plain, _ = read(str(out / f"panel.{fmt}"))
        for (who, col), reason in expected.items():
            code, letter = MISSING_CODES[reason]
            mark = float(code) if fmt == "sav" else letter
            assert raw.at[row[who], col] == mark, (fmt, who, col, raw.at[row[who], col])
            assert pd.isna(plain.at[row[who], col])  # never a number in a computation
            assert meta.variable_value_labels[col][mark] == \
                f"{reason.replace('_', ' ')} (missing)"
        assert pd.to_numeric(plain["who5"]).notna().sum() == (csv["who5"] != "").sum()


@pytest.mark.parametrize("fmt", ["sav", "dta"])
def test_a_column_that_starts_with_many_missing_codes_is_written(tmp_path, fmt):
    """pyreadstat 1.3.8 took such a column for text when given the Stata letters as data (its
    type is sniffed from the first 100 values); the letters are now set in the written file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from app.export.writers import write_stat_file

    n = 300
    hours = [None] * 150 + [float(i % 40) / 2 for i in range(150, n)]
    reasons = ["hours" if i < 120 else None for i in range(n)]
    skipped = [None] * 120 + ["hours"] * 30 + [None] * 150
    scratch = tmp_path / "t.parquet"
    pq.write_table(pa.table({"hours": pa.array(hours, pa.float64()),
                             "note": pa.array(["x"] * n, pa.string()),
                             "items_skipped": pa.array(skipped, pa.string()),
                             "items_not_applicable": pa.array(reasons, pa.string())}), scratch)
    fields = [{"name": "hours", "type": "number"}, {"name": "note", "type": "string"},
              {"name": "items_skipped", "type": "string"},
              {"name": "items_not_applicable", "type": "string"}]
    out = tmp_path / f"t.{fmt}"
    info = write_stat_file(scratch, out, fmt, fields, categorical={}, value_labels={})
    read = pyreadstat.read_sav if fmt == "sav" else pyreadstat.read_dta
    raw, meta = read(str(out), user_missing=True)
    plain, _ = read(str(out))
    na_code = -94.0 if fmt == "sav" else "d"
    skip_code = -92.0 if fmt == "sav" else "b"
    assert raw["hours"].tolist()[:120] == [na_code] * 120
    assert raw["hours"].tolist()[120:150] == [skip_code] * 30
    assert raw["hours"].tolist()[150:] == hours[150:]
    assert plain["hours"].isna().sum() == 150 and plain["hours"].tolist()[150:] == hours[150:]
    assert meta.variable_value_labels["hours"][na_code] == "not applicable (missing)"
    assert info["missing_codes"]["not_applicable"] == (-94 if fmt == "sav" else ".d")

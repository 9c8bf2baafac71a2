"""The codebook a data steward expects (issue 16 part 7), read back from the written package:
categories for every categorical column (text ones too) and ordered bands marked ordered,
foreign keys between the tables (checked by frictionless), per-variable frequencies and summary
statistics equal to the files with every count below k hidden, licence and contributors from the
study file, and no export time anywhere in a strict package. SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from frictionless import validate

from app.export import summary
from app.export.service import NO_MTIME, ExportOptions, export_panel
from tests.conftest import STUDY_FILE

K = 5


def descriptor(out: Path) -> dict[str, Any]:
    return json.loads((out / "datapackage.json").read_text("utf-8"))


def fields(desc: dict[str, Any], resource: str) -> dict[str, dict[str, Any]]:
    res = next(r for r in desc["resources"] if r["name"] == resource)
    return {f["name"]: f for f in res["schema"]["fields"]}


def test_categories_foreign_keys_licence_and_contributors(engine, population, tmp_path):
    out = tmp_path / "csv"
    export_panel(engine, ExportOptions(out=out, include_items=True))
    report = validate(str(out / "datapackage.json"))  # foreign keys included
    assert report.valid, report.flatten(["type", "note"])
    desc = descriptor(out)
    participants = fields(desc, "participants")
    assert [c["value"] for c in participants["status"]["categories"]] == [
        "active", "paused", "withdrawn", "completed"]
    assert participants["age_band"]["categoriesOrdered"] is True
    assert "categoriesOrdered" not in participants["gender"]
    assert {c["value"] for c in participants["gender"]["categories"]} >= {"woman", "man"}
    responses = fields(desc, "responses")
    severity = [c["value"] for c in responses["severity"]["categories"]]
    assert severity.index("minimal") < severity.index("mild") < severity.index("severe")
    assert responses["severity"]["categoriesOrdered"] is True
    assert "categoriesOrdered" not in responses["instrument"]
    # every categorical text column has categories, each a value and a label
    for name in ("participants", "responses", "usage"):
        for f in fields(desc, name).values():
            for c in f.get("categories", []):
                assert set(c) == {"value", "label"} and c["label"], (name, f["name"])
    # single-choice text items carry their option labels, Likert items are ordered
    text_items = [f for f in responses.values()
                  if f["type"] == "string" and f.get("categories")
                  and any(c["label"] != c["value"] for c in f["categories"])]
    assert text_items
    likert = responses.get("phq9_1") or next(f for n, f in responses.items()
                                             if n.startswith("phq9"))
    assert likert["categoriesOrdered"] is True
    assert fields(desc, "usage")["model"]["categories"][0]["value"] == "gpt4o_chatgpt"
    # foreign keys: every table's pid refers to participants, long tables to the panel's rows
    for name in ("responses", "usage", "panel"):
        res = next(r for r in desc["resources"] if r["name"] == name)
        refs = {json.dumps(fk, sort_keys=True) for fk in res["schema"]["foreignKeys"]}
        assert json.dumps({"fields": "pid", "reference": {"resource": "participants",
                                                          "fields": "pid"}},
                          sort_keys=True) in refs
    usage_fk = next(r for r in desc["resources"] if r["name"] == "usage")["schema"]["foreignKeys"]
    assert {"fields": ["pid", "wave"],
            "reference": {"resource": "panel", "fields": ["pid", "wave"]}} in usage_fk
    # licence and contributors at package level, from the study file
    study = yaml.safe_load(Path(STUDY_FILE).read_text("utf-8"))["export"]
    assert desc["licenses"] == study["licenses"] and desc["licenses"][0]["name"]
    assert desc["contributors"] == study["contributors"]


def test_a_broken_foreign_key_is_caught(engine, population, tmp_path):
    out = tmp_path / "fk"
    export_panel(engine, ExportOptions(out=out))
    usage = (out / "usage.csv").read_text("utf-8").splitlines()
    first = usage[1].split(",")
    first[0] = "f" * 16  # a pid no participant has
    usage[1] = ",".join(first)
    (out / "usage.csv").write_text("\n".join(usage) + "\n", "utf-8")
    desc = descriptor(out)
    for r in desc["resources"]:
        r.pop("hash", None), r.pop("bytes", None)
    (out / "datapackage.json").write_text(json.dumps(desc), "utf-8")
    report = validate(str(out / "datapackage.json"))
    assert not report.valid
    assert "foreign-key" in {row[0] for row in report.flatten(["type"])}


def hidden(count: Any) -> bool:
    return count == f"<{K}"


def test_frequencies_and_statistics_match_the_files_with_small_counts_hidden(
        engine, population, tmp_path):
    out = tmp_path / "stats"
    export_panel(engine, ExportOptions(out=out, include_items=True))
    book = descriptor(out)["wellpanel"]["codebook"]["variables"]
    assert "<5" in book["suppression"]
    participants = pd.read_csv(out / "participants.csv", dtype=str, keep_default_na=False)
    n_rows = len(participants)
    gender = book["resources"]["participants"]["gender"]
    counted = participants["gender"].value_counts().to_dict()
    shown_total = 0
    any_hidden = False
    for f in gender["frequencies"]:
        true = counted.get(f["value"], 0)
        if hidden(f["count"]):
            any_hidden = True
            assert true > 0  # only real counts are hidden
        else:
            assert f["count"] == true
            assert not 0 < true < K, f  # nothing below k is ever shown
            shown_total += true
    missing = (participants["gender"] == "").sum()
    assert gender["missing"] == missing or hidden(gender["missing"])
    if any_hidden:
        assert gender["n"] is None  # n would give the hidden counts away
    # no count anywhere in the codebook is between 1 and k - 1
    small = []
    for resource, cols in book["resources"].items():
        for col, s in cols.items():
            for value in [s.get("n"), s.get("missing"),
                          *[f["count"] for f in s.get("frequencies", [])]]:
                if isinstance(value, int) and 0 < value < K:
                    small.append((resource, col, value))
    assert small == []
    # a hidden count is never the only one of its variable: not recoverable from the rows
    for cols in book["resources"].values():
        for s in cols.values():
            if s["kind"] == "categorical":
                cells = [s["missing"], *[f["count"] for f in s["frequencies"]]]
                assert sum(map(hidden, cells)) != 1, s
    # numeric statistics equal the file's
    responses = pd.read_csv(out / "responses.csv")
    score = book["resources"]["responses"]["score"]
    assert score["kind"] == "numeric"
    assert score["n"] == responses["score"].notna().sum()
    assert score["mean"] == pytest.approx(responses["score"].mean(), abs=1e-4)
    assert score["sd"] == pytest.approx(responses["score"].std(), abs=1e-4)
    assert score["min"] == responses["score"].min() and score["max"] == responses["score"].max()
    status = book["resources"]["participants"]["status"]
    assert status["n"] in (n_rows - (participants["status"] == "").sum(), None)
    # identifiers and free text are not summarized
    assert "pid" not in book["resources"]["participants"]


def test_suppression_rules():
    s = {"kind": "categorical", "n": 53, "missing": 0,
         "frequencies": [{"value": "a", "count": 50}, {"value": "b", "count": 3},
                         {"value": "c", "count": 0}]}
    out = summary.suppress(s, 5)
    # b alone hidden would be 53 - 50: the next smallest (a) goes too, and n
    assert [f["count"] for f in out["frequencies"]] == ["<5", "<5", 0] and out["n"] is None
    few = summary.suppress({"kind": "numeric", "n": 3, "missing": 40, "mean": 2.0, "sd": 1.0,
                            "min": 1, "max": 3}, 5)
    assert few["n"] == "<5" and few["mean"] is None and few["min"] is None
    clean = summary.suppress({"kind": "numeric", "n": 30, "missing": 0, "mean": 2.0, "sd": 1.0,
                              "min": 1, "max": 3}, 5)
    assert clean["n"] == 30 and clean["mean"] == 2.0


@pytest.mark.parametrize("fmt", ["csv", "parquet", "sav", "dta"])
def test_strict_packages_carry_no_export_time(engine, population, tmp_path, fmt):
    when = datetime(2031, 7, 19, 13, 47, 21, tzinfo=UTC)  # distinctive, never in the data
    out = tmp_path / fmt
    export_panel(engine, ExportOptions(out=out, fmt=fmt), now=when)
    desc = descriptor(out)
    assert "created" not in desc and "created" not in desc["wellpanel"]["export"]
    # the export time as any file format would write it (digits alone would match numbers)
    stamps = [re.escape(s).encode() for s in (
        "2031-07-19", "20310719", "19 Jul 31", "19 Jul 2031", "Jul 19", "13:47", "07/19/31",
        "19/07/2031", "19.07.2031")]
    epoch = str(int(when.timestamp())).encode()
    for f in out.iterdir():
        data = f.read_bytes()
        for pattern in stamps:
            assert not re.search(pattern, data), (f.name, pattern)
        assert epoch not in data, f.name
        assert f.stat().st_mtime == NO_MTIME, f.name  # nor the files' own times
    # the research profile says when it was made (the reference point of the check above)
    research = tmp_path / f"{fmt}-research"
    export_panel(engine, ExportOptions(out=research, fmt=fmt, profile="research", dua="D"),
                 now=when)
    assert descriptor(research)["created"].startswith("2031-07-19T13:47")

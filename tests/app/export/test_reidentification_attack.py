"""The re-identification attack of issue 16, as an outsider makes it: 300 participants x 8 waves,
exported; the attacker reads only the package's files, joins its tables by pseudonym, and looks
for small groups under EVERY combination of the released quasi-identifier columns. Which columns
are quasi-identifiers comes from the study file (the attacker's reading of it, below, shares no
code with the export); the package's own figures must equal what the attacker measures.

A participant's value of a row-level quasi-identifier column (responses/panel/usage) is the set
of values it takes on their earliest wave in that table (what is known of someone at
enrollment; the study file's attacker model)."""

from __future__ import annotations

import csv
import fnmatch
import itertools
import json
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from app.export.service import ExportOptions, export_panel
from tests.app.export.seed import Seeder
from tests.conftest import STUDY_FILE

BANDS = ["minimal", "mild", "moderate", "moderately_severe", "severe"]
TABLES = ("participants", "responses", "usage", "panel")


def read_table(out: Path, name: str) -> list[dict[str, str]]:
    """A table of the package as strings ('' for an empty cell)."""
    path = out / f"{name}.csv"
    if path.exists():
        with path.open(encoding="utf-8", newline="") as f:
            return [{c: v.lower() for c, v in row.items()} for row in csv.DictReader(f)]
    data = pq.read_table(out / f"{name}.parquet")
    cols = {c: data.column(c).to_pylist() for c in data.column_names}
    return [{c: "" if v[i] is None else str(v[i]).lower() for c, v in cols.items()}
            for i in range(data.num_rows)]


def study_classes() -> dict[str, Any]:
    return yaml.safe_load(STUDY_FILE.read_text("utf-8"))


def class_of(classes: dict[str, Any], table: str, column: str,
             items: dict[str, tuple[str, str]]) -> str | None:
    entries = classes.get(table) or {}
    own = entries.get(column) or next(
        (c for pat, c in entries.items() if fnmatch.fnmatchcase(column, pat)), None)
    item = items.get(column)
    if item is None or (own is not None and table == "participants"):
        return own
    spec = (classes.get("items") or {}).get(item[0])
    if isinstance(spec, str):
        return spec
    spec = spec or {}
    return (spec.get("items") or {}).get(item[1], spec.get("class"))


def attacker_view(out: Path) -> tuple[dict[str, dict[str, Any]], list[str], dict[str, Any]]:
    """pid -> {quasi-identifier column: value}, the columns, and the package descriptor."""
    descriptor = json.loads((out / "datapackage.json").read_text("utf-8"))
    study = study_classes()
    classes = study["column_classes"]
    item_ids = {}  # item-answer columns, as the table schema describes them
    for res in descriptor["resources"]:
        for fld in res.get("schema", {}).get("fields", []):
            found = re.match(r"^([a-z0-9_]+)\.([a-z0-9_]+): ", fld.get("description", ""))
            if res["name"] == "responses" and found:
                item_ids[fld["name"]] = (found.group(1), found.group(2))
    tables = {name: read_table(out, name) for name in TABLES}
    people: dict[str, dict[str, Any]] = {row["pid"]: {} for row in tables["participants"]}
    columns: list[str] = []
    for name, rows in tables.items():
        if not rows:
            continue
        qi = []
        for col in rows[0]:
            cls = class_of(classes, name, col, item_ids if name != "participants" else {
                c: ("baseline", c) for c in rows[0] if c not in ("pid", "qi_suppressed")})
            assert cls is not None, f"{name}.{col} is released without a class"
            assert cls != "identifier", f"{name}.{col} is an identifier"
            if cls == "quasi_identifier":
                qi.append(col)
        if name == "participants":
            for row in rows:
                people[row["pid"]].update({c: row[c] for c in qi})
            columns += qi
            continue
        first: dict[str, int] = {}
        for row in rows:
            first[row["pid"]] = min(int(row["wave"]), first.get(row["pid"], 10**9))
        for col in qi:
            seen: dict[str, set[str]] = defaultdict(set)
            for row in rows:
                if int(row["wave"]) == first[row["pid"]]:
                    seen[row["pid"]].add(row[col])
            for pid in people:
                people[pid][f"{name}.{col}"] = frozenset(seen.get(pid, ()))
            columns.append(f"{name}.{col}")
    return people, columns, descriptor


def smallest_groups(people: dict[str, dict[str, Any]], columns: list[str]) -> dict[tuple, int]:
    """The smallest group size under every non-empty combination of the columns."""
    pids = sorted(people)
    codes = []
    for c in columns:
        index: dict[Any, int] = {}
        codes.append(np.array([index.setdefault(people[p][c], len(index)) for p in pids],
                              np.int64))
    radix = [int(c.max()) + 1 for c in codes]
    out = {}
    for r in range(1, len(columns) + 1):
        for combo in itertools.combinations(range(len(columns)), r):
            key = np.zeros(len(pids), np.int64)
            for i in combo:
                key = key * radix[i] + codes[i]
                if key.max() > 2**40:
                    key = np.unique(key, return_inverse=True)[1].reshape(-1)
            out[tuple(columns[i] for i in combo)] = int(np.unique(key, return_counts=True)[1]
                                                       .min())
    return out


def emd_ordered(p: np.ndarray, q: np.ndarray) -> float:
    return float(np.abs(np.cumsum(p - q)).sum() / (len(p) - 1))


def check(out: Path, k: int) -> dict[str, Any]:
    people, columns, descriptor = attacker_view(out)
    report = descriptor["wellpanel"]["deidentification"]["quasi_identifiers"]
    assert len(columns) >= 7  # demographics, status, time in study, AI history, ...
    groups = smallest_groups(people, columns)
    assert len(groups) == 2 ** len(columns) - 1
    worst = min(groups.items(), key=lambda kv: kv[1])
    assert worst[1] >= k, f"a group of {worst[1]} on {worst[0]}"
    # the report states what the attacker measures: k, risk, uniques, l and t
    full = Counter(tuple(people[p][c] for c in columns) for p in people)
    fk = [full[tuple(people[p][c] for c in columns)] for p in people]
    assert report["k"] == min(fk) == groups[tuple(columns)]
    assert report["sample_uniques"] == sum(1 for f in fk if f == 1) == 0
    assert report["max_individual_risk"] == pytest.approx(1 / min(fk), abs=1e-6)
    assert report["expected_reidentifications"] == pytest.approx(sum(1 / f for f in fk))
    assert report["participants"] == len(people)
    assert report["suppressed"] == sum(
        1 for row in read_table(out, "participants") if row["qi_suppressed"] == "true")
    band = {row["pid"]: row["severity"] for row in read_table(out, "responses")
            if row["instrument"] == "phq9" and row["wave"] == "0" and row["severity"]}
    by_class: dict[tuple, list[str]] = defaultdict(list)
    for p in people:
        if p in band:
            by_class[tuple(people[p][c] for c in columns)].append(band[p])
    everyone = np.array([sum(1 for b in band.values() if b == x) for x in BANDS], float)
    everyone /= everyone.sum()
    t = max(emd_ordered(np.array([v.count(x) for x in BANDS], float) / len(v), everyone)
            for v in by_class.values())
    assert report["l"] == min(len(set(v)) for v in by_class.values())
    assert report["t"] == pytest.approx(t, abs=1e-6)
    declared = report["thresholds"]
    assert report["l"] >= declared["l"] and report["t"] <= declared["t"]
    assert report["expected_reidentifications"] <= declared["max_expected_reidentifications"]
    return report


def test_no_combination_of_released_columns_singles_anyone_out(engine, study, tmp_path):
    seeder = Seeder(engine)
    seeder.populate(300, 8, seed=16)
    seeder.flush()
    k = study_classes()["quasi_identifiers"]["k"]
    strict = check(_export(engine, tmp_path / "strict", "strict", items=True), k)
    assert "ai_use_since" in strict["quasi_identifier_columns"]["participants"]
    research = check(_export(engine, tmp_path / "research", "research", fmt="parquet"), k)
    assert any("week_since" in c for c in research["quasi_identifier_columns"]["row_level"])


def _export(engine, out: Path, profile: str, *, items: bool = False,  # type: ignore[no-untyped-def]
            fmt: str = "csv") -> Path:
    export_panel(engine, ExportOptions(out=out, profile=profile, fmt=fmt, include_items=items,
                                       dua="DUA-16" if profile == "research" else None))
    return out

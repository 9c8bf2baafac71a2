"""The panel export end to end, on SQLite and PostgreSQL: a valid Data Package that the analysis
loads, every format read back against the source, no identifier anywhere, withdrawal rules,
k-anonymity, and the audit ledger."""

from __future__ import annotations

import json
import math
import re
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pyreadstat
import pytest
from frictionless import validate
from sqlmodel import Session, select

from analysis import spec
from analysis.panel import load_panel
from app.audit import service as audit
from app.audit.models import AuditEvent
from app.export import deidentify, timeshift
from app.export.service import ExportOptions, export_panel, pseudonym_of, read_key
from app.export.writers import file_digest
from app.surveys.models import ResponseScore, SurveyInstance, SurveyResponse
from tests.app.export.conftest import FREE_TEXT, Population

QI_COLUMNS = ["age_band", "gender", "region", "living_situation"]


def run(engine, out: Path, **kw: Any):  # type: ignore[no-untyped-def]
    return export_panel(engine, ExportOptions(out=out, **kw))


def descriptor(out: Path) -> dict[str, Any]:
    return json.loads((out / "datapackage.json").read_text("utf-8"))


def pid_map(pop: Population) -> dict[str, Any]:
    key, _ = read_key(pop.key_file)
    return {pseudonym_of(key, p.id): p for p in pop.people}


def source_scores(engine) -> dict[tuple[str, str, int], dict[str, Any]]:  # type: ignore[no-untyped-def]
    with Session(engine) as s:
        rows = s.exec(
            select(SurveyResponse.participant_id, SurveyResponse.instrument_key,
                   SurveyInstance.wave, SurveyResponse.submitted_at, ResponseScore.primary,
                   ResponseScore.valid, ResponseScore.band, ResponseScore.subscales)
            .join(SurveyInstance, SurveyInstance.id == SurveyResponse.instance_id)
            .join(ResponseScore, ResponseScore.response_id == SurveyResponse.id)
        ).all()
    return {(r[0], r[1], r[2]): {"at": r[3], "score": r[4], "valid": r[5], "band": r[6],
                                 "subscales": r[7]} for r in rows}


# ---- the package ------------------------------------------------------------------------------

def test_csv_export_validates_loads_and_matches_the_source(engine, population, tmp_path):
    out = tmp_path / "panel"
    result = run(engine, out, key_file=population.key_file)
    report = validate(str(out / "datapackage.json"))
    assert report.valid, report.flatten(["type", "note"])
    panel = load_panel(out)
    assert result.rows == {"participants": len(panel.participants),
                           "responses": len(panel.responses), "usage": len(panel.usage),
                           "panel": len(panel.wide)}
    by_pid = pid_map(population)
    exported = {p.id for p in population.exported}
    assert {by_pid[pid].id for pid in panel.participants["pid"]} == exported

    # every score comes from the database, for the right person, instrument and wave
    source = source_scores(engine)
    cutoffs = {p.id: p.withdrawal[1] for p in population.people if p.withdrawal}
    expected = {k for k, v in source.items() if k[0] in exported
                and (k[0] not in cutoffs or v["at"] <= cutoffs[k[0]])}
    seen = set()
    for row in panel.responses.itertuples(index=False):
        internal = by_pid[row.pid].id
        src = source[(internal, row.instrument, row.wave)]
        seen.add((internal, row.instrument, row.wave))
        assert row.valid == src["valid"]
        if src["score"] is None:
            assert pd.isna(row.score)
        else:
            assert row.score == pytest.approx(src["score"])
        assert (row.severity if isinstance(row.severity, str) else None) == src["band"]
        for name, value in (src["subscales"] or {}).items():
            got = getattr(row, f"subscale_{name}")
            assert (pd.isna(got) and value is None) or got == pytest.approx(value)
    assert seen == expected

    # the wide panel holds the valid scores; usage has seven model rows per ai_usage answer
    wide = panel.wide.set_index(["pid", "wave"])
    valid = panel.responses[panel.responses["valid"] & panel.responses["instrument"].isin(
        spec.OUTCOMES)]
    for row in valid.itertuples(index=False):
        assert wide.loc[(row.pid, row.wave), row.instrument] == pytest.approx(row.score)
    n_usage = sum(1 for (pid, inst, _w) in expected if inst == "ai_usage")
    assert n_usage == 0  # ai_usage has no score row ...
    assert len(panel.usage) % len(spec.MODELS) == 0 and len(panel.usage) > 0
    assert set(panel.usage["model"]) == set(spec.MODELS)
    hours = panel.usage[panel.usage["model"].isin(spec.MODELS_4O)].groupby(
        ["pid", "wave"])["hours_per_week"].sum(min_count=1)
    joined = wide["hours_4o"].dropna()
    for key, value in joined.items():
        assert hours.loc[key] == pytest.approx(value)

    desc = descriptor(out)
    meta = desc["wellpanel"]
    assert meta["generated_by"] == spec.GENERATED_BY_EXPORT
    assert meta["export_profile"] == "strict"
    assert "created" not in desc and all("date" not in e for e in meta["events"])
    assert meta["study"]["protocol_version"] == 1 and meta["study"]["key"] == "keep4o-panel"
    assert meta["software"]["pyarrow"] and meta["software"]["database"]
    assert meta["export"]["rows"] == result.rows
    for name, f in result.files.items():
        assert file_digest(out / name) == (f["sha256"], f["bytes"])


def test_strict_profile_has_no_calendar_information(engine, population, tmp_path):
    out = tmp_path / "strict"
    run(engine, out)
    date_like = re.compile(rb"\d{4}-\d{2}-\d{2}")
    for f in out.iterdir():
        if f.suffix == ".csv":
            assert not date_like.search(f.read_bytes()), f.name
    for name in ("responses.csv", "panel.csv"):
        header = (out / name).read_text("utf-8").splitlines()[0]
        assert "week_since" not in header


def test_research_profile_aligns_to_study_events_and_records_the_dua(
        engine, population, tmp_path):
    out = tmp_path / "research"
    result = run(engine, out, profile="research", dua="DUA-2026-007",
                 key_file=population.key_file)
    desc = descriptor(out)
    assert desc["wellpanel"]["export"]["dua"] == "DUA-2026-007"
    assert desc["wellpanel"]["deidentification"]["dua"] == "DUA-2026-007"
    assert desc["wellpanel"]["events"][0]["date"] == "2026-02-13"
    assert "created" in desc
    panel = load_panel(out)
    assert panel.event_keys == ["gpt4o_retirement"]
    col = spec.event_column("gpt4o_retirement")
    by_pid = pid_map(population)
    source = source_scores(engine)
    from zoneinfo import ZoneInfo

    tzs = {p.id: None for p in population.people}
    with Session(engine) as s:
        from app.participants.models import Participant

        for p in s.exec(select(Participant)).all():
            tzs[p.id] = ZoneInfo(p.timezone)
    # weeks since the event: the 4-week band of each person's keyed shifted enrollment (its
    # middle week) plus the row's whole weeks since enrollment (part 3)
    key, _ = read_key(population.key_file)
    enrolled = {}
    with Session(engine) as s:
        for p in s.exec(select(Participant)).all():
            if p.enrolled_at is not None:
                enrolled[p.id] = p.enrolled_at.astimezone(tzs[p.id]).date()
    for row in panel.responses.head(200).itertuples(index=False):
        internal = by_pid[row.pid].id
        at = source[(internal, row.instrument, row.wave)]["at"]
        local = at.astimezone(tzs[internal]).date()
        shifted = ((enrolled[internal] - date(2026, 2, 13)).days
                   + timeshift.date_shift(key, internal, 14))
        assert row.day == (local - enrolled[internal]).days // 7 * 7
        assert getattr(row, col) == (shifted // 7) // 4 * 4 + 2 + row.day // 7
    assert col in panel.wide.columns and panel.wide[col].notna().all()
    assert result.profile == "research"


# ---- formats ----------------------------------------------------------------------------------

def _normal(v: Any) -> Any:
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, str):
        return v if v != "" else None
    if isinstance(v, bool):
        return v
    if isinstance(v, int | float):
        return round(float(v), 9)
    return v.item() if hasattr(v, "item") else v


def _records(df: pd.DataFrame, key: list[str]) -> list[tuple[Any, ...]]:
    df = df.sort_values(key, ignore_index=True)
    return [tuple(_normal(v) for v in row) for row in df.itertuples(index=False)]


def read_stat(out: Path, name: str, fmt: str) -> tuple[pd.DataFrame, Any]:
    res = next(r for r in descriptor(out)["resources"] if r["name"] == f"{name}-{fmt}")
    info = res["wellpanel"]
    reader = pyreadstat.read_sav if fmt == "sav" else pyreadstat.read_dta
    df, meta = reader(str(out / res["path"]))
    back = {v: k for k, v in info.get("variable_names", {}).items()}
    df = df.rename(columns=back)
    for col, codes in info.get("value_codes", {}).items():
        df[col] = [None if pd.isna(x) else codes[str(int(x))] for x in df[col]]
    for col in info["booleans"]:
        df[col] = [None if pd.isna(x) else bool(x) for x in df[col]]
    return df, meta


def test_every_format_reads_back_identical(engine, population, tmp_path):
    outs = {}
    for fmt in ("csv", "parquet", "sav", "dta"):
        outs[fmt] = tmp_path / fmt
        run(engine, outs[fmt], fmt=fmt, key_file=population.key_file, include_items=True)
        if fmt != "parquet":  # frictionless reads Parquet row by row through pandas: slow
            report = validate(str(outs[fmt] / "datapackage.json"))
            assert report.valid, (fmt, report.flatten(["type", "note"]))
    csv = load_panel(outs["csv"]).frames()
    parquet = load_panel(outs["parquet"]).frames()
    keys = {name: list(spec.RESOURCES[name].primary_key) for name in spec.RESOURCES}
    for name in spec.RESOURCES:
        assert list(csv[name].columns) == list(parquet[name].columns)
        assert _records(csv[name], keys[name]) == _records(parquet[name], keys[name]), name
    # the raw files too (not only through the loader): pandas and pyarrow
    import pyarrow.parquet as pq

    raw = pq.read_table(outs["parquet"] / "responses.parquet")
    assert raw.num_rows == len(csv["responses"])
    assert str(raw.schema.field("valid").type) == "bool"
    assert str(raw.schema.field("wave").type) == "int64"
    for fmt in ("sav", "dta"):
        assert (outs[fmt] / "participants.csv").exists()  # the validated, loadable copy
        for name in spec.RESOURCES:
            df, meta = read_stat(outs[fmt], name, fmt)
            assert list(df.columns) == list(csv[name].columns), (fmt, name)
            assert _records(df, keys[name]) == _records(csv[name], keys[name]), (fmt, name)
            labels = meta.column_names_to_labels
            assert all(labels[c] for c in meta.column_names), (fmt, name)
        _, meta = read_stat(outs[fmt], "usage", fmt)
        assert meta.variable_value_labels["framing"][5] == "a partner"
        assert meta.variable_value_labels["used"][1] == "yes"
        _, meta = read_stat(outs[fmt], "participants", fmt)
        assert set(meta.variable_value_labels["status"].values()) >= {"active", "withdrawn"}


# ---- privacy ----------------------------------------------------------------------------------

def test_no_file_holds_an_email_or_internal_id(engine, population, tmp_path):
    outs = []
    for fmt, extra in (("csv", {}), ("parquet", {"include_items": True}),
                       ("sav", {"include_items": True}),
                       ("dta", {"profile": "research", "dua": "D-1"})):
        outs.append(tmp_path / fmt)
        run(engine, outs[-1], fmt=fmt, **extra)
    needles = []
    for p in population.people:
        needles += [p.email.encode(), p.id.encode(), p.id.replace("-", "").encode(),
                    p.email.split("@")[0].encode()]
    files = [f for out in outs for f in out.rglob("*") if f.is_file()]
    assert len(files) >= 4 * 5
    for f in files:
        content = f.read_bytes()
        for needle in needles:
            assert needle not in content, (f, needle)
        assert b"Signer " not in content  # consent signature names


def test_participants_are_k_anonymous_on_the_quasi_identifiers(engine, population, tmp_path):
    out = tmp_path / "k"
    result = run(engine, out)
    participants = load_panel(out).participants
    q = result.deidentification["quasi_identifiers"]
    # every quasi-identifier column of the participants table, not only the declared four
    cols = q["quasi_identifier_columns"]["participants"]
    assert set(QI_COLUMNS) | {"status", "days_in_study", "used_4o_before_retirement"} <= set(cols)
    rows = participants[cols].astype(object).where(participants[cols].notna(), None)
    assert deidentify.check_k_anonymity(rows.values.tolist(), 5) >= 5
    assert q["k"] >= 5 and q["k_anonymous"] is True  # measured, not declared
    # the default study declares its quasi-identifiers and a sensitive attribute (l-diversity)
    assert q["thresholds"]["source"] == "study file (quasi_identifiers)"
    assert q["sensitive"] == "phq9_band" and q["thresholds"]["l"] == 2 and q["l"] >= 2
    assert q["suppressed"] == int(participants["qi_suppressed"].sum())
    assert q["suppressed_share"] <= 0.1
    assert {"age_band", "gender", "country", "living_situation"} <= set(q["generalization"])
    # country is never released as such: region is a subregion, a continent or nothing
    regions = set(participants["region"].dropna())
    assert not regions & {"us", "de", "gb", "br", "cn", "jp", "au", "in", "za"}
    desc = descriptor(out)
    assert desc["wellpanel"]["deidentification"]["quasi_identifiers"]["smallest_class"] >= 5


def test_withdrawal_rules(engine, population, tmp_path):
    out = tmp_path / "w"
    result = run(engine, out, key_file=population.key_file)
    panel = load_panel(out)
    key, _ = read_key(population.key_file)
    stop = pseudonym_of(key, population.stop_contact.id)
    gone = {pseudonym_of(key, population.delete_data.id),
            pseudonym_of(key, population.never_consented.id)}
    for frame in panel.frames().values():
        assert not gone & set(frame["pid"])
    row = panel.participants.set_index("pid").loc[stop]
    # the only withdrawn participant: a rare status, which de-identification may hide
    assert row["status"] == "withdrawn" or pd.isna(row["status"])
    waves = set(panel.responses.loc[panel.responses["pid"] == stop, "wave"])
    assert waves == {0, 1}  # withdrew after wave 1; later answers are not exported
    assert set(panel.wide.loc[panel.wide["pid"] == stop, "wave"]) == {0, 1}
    assert pd.isna(row["days_in_study"]) or row["days_in_study"] <= 17
    cw = result.deidentification["consent_and_withdrawal"]
    assert cw["never_consented_excluded"] == 1
    assert cw["delete_data_withdrawals_excluded"] == 1
    assert cw["stop_contact_withdrawn_exported_until_withdrawal"] == 1
    assert cw["answers_after_withdrawal_dropped"] > 0


def test_free_text_only_when_asked_and_then_flagged(engine, population, tmp_path):
    plain = tmp_path / "plain"
    run(engine, plain, include_items=True)
    for f in plain.iterdir():
        assert FREE_TEXT.encode() not in f.read_bytes()
    header = (plain / "responses.csv").read_text("utf-8").splitlines()[0]
    assert "other_model_name" not in header
    for qi in ("age_band", "gender", "country", "living_situation"):
        assert f'"{qi}"' not in header  # quasi-identifiers only in participants, generalized
    book = descriptor(plain)["wellpanel"]["codebook"]
    item = next(i for i in book["instruments"]["ai_usage"]["items"]
                if i["id"] == "other_model_name")
    assert item["free_text"] is True and item["exported_as"] is None

    text = tmp_path / "text"
    result = run(engine, text, include_items=True, include_free_text=True, profile="research",
                 dua="DUA-1")
    assert FREE_TEXT.encode() in (text / "responses.csv").read_bytes()  # nothing to mask
    book = descriptor(text)["wellpanel"]["codebook"]
    item = next(i for i in book["instruments"]["ai_usage"]["items"]
                if i["id"] == "other_model_name")
    assert item["free_text"] and "warning" in item and item["exported_as"]
    assert "warning" in book["item_answers"]
    assert result.deidentification["free_text"]["included"] is True
    schema = next(r for r in descriptor(text)["resources"] if r["name"] == "responses")["schema"]
    field = next(f for f in schema["fields"] if f["name"] == "other_model_name")
    assert "FREE TEXT" in field["description"]


def test_pseudonyms_are_fresh_per_export_unless_a_key_file_is_given(
        engine, population, tmp_path):
    def pids(out: Path) -> set[str]:
        return set(load_panel(out).participants["pid"])

    a, b = tmp_path / "a", tmp_path / "b"
    run(engine, a)
    run(engine, b)
    assert pids(a) and not pids(a) & pids(b)
    c, d = tmp_path / "c", tmp_path / "d"
    run(engine, c, key_file=population.key_file)
    run(engine, d, key_file=population.key_file, fmt="parquet")
    assert pids(c) == pids(d) == set(pid_map(population)) & pids(c)
    report = validate(str(d / "datapackage.json"))  # the Parquet package validates too
    assert report.valid, report.flatten(["type", "note"])


def test_codebook_documents_instruments_study_and_protocol(engine, population, tmp_path):
    out = tmp_path / "cb"
    run(engine, out)
    book = descriptor(out)["wellpanel"]["codebook"]
    phq9 = book["instruments"]["phq9"]
    assert phq9["version"] == "1.0.0" and len(phq9["sha256"]) == 64
    assert "Kroenke" in phq9["citation"] or phq9["citation"]
    assert phq9["licence"]["name"]
    assert phq9["languages"]["en"]["translation_status"] == "validated"
    assert phq9["languages"]["de"]["translation_status"] == "study"
    item = phq9["items"][0]
    assert set(item["wording"]) >= {"en", "de", "pt-BR", "zh-CN"}
    assert item["options"][0]["labels"]["en"]
    assert phq9["scoring"]["bands"][-1]["key"] == "severe"
    assert phq9["scoring"]["prorate"]["rounding"] == "half_up"
    assert sum(phq9["answers_by_language"].values()) > 0
    assert phq9["versions_in_data"] == {"1.0.0": sum(phq9["answers_by_language"].values())}
    assert book["study"]["protocol_version"] == 1 and len(book["study"]["protocol_sha256"]) == 64
    age = next(i for i in book["instruments"]["baseline"]["items"] if i["id"] == "age_band")
    assert age["quasi_identifier"] is True


# ---- the audit ledger -------------------------------------------------------------------------

def test_every_export_is_in_the_audit_ledger(engine, population, tmp_path):
    out = tmp_path / "audited"
    result = run(engine, out, fmt="parquet", profile="research", dua="DUA-9", actor="alice")
    with Session(engine) as s:
        event = s.exec(select(AuditEvent).where(AuditEvent.action == "export.panel")).one()
        assert audit.verify(s).ok
    assert event.id == result.audit_seq and event.actor == "alice"
    d = event.details
    assert d["profile"] == "research" and d["format"] == "parquet" and d["dua"] == "DUA-9"
    assert d["rows"] == result.rows and d["export_id"] == result.export_id
    assert d["key"].startswith("fresh")
    for name, sha in d["files"].items():
        assert file_digest(out / name)[0] == sha
    assert set(d["files"]) == {"participants.parquet", "responses.parquet", "usage.parquet",
                               "panel.parquet", "datapackage.json"}

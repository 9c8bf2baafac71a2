"""The anonymized panel export: database -> Frictionless Data Package (see issue 5).

``export_panel(engine, ExportOptions(...))`` writes the four resources of the contract in
:mod:`analysis.spec` (participants, responses, usage, panel) plus ``datapackage.json`` with the
codebook and the de-identification report, and records the export in the audit ledger.

How it runs:

1. Options are checked before anything is touched (format, profile, ``--dua`` for research, the
   key file, an empty or missing output directory).
2. One read-only snapshot (REPEATABLE READ on PostgreSQL, one deferred transaction on SQLite):
   the eligible participants (consented; no confirmed delete_data withdrawal; stop_contact
   participants only up to their withdrawal), their baseline quasi-identifiers, which are
   generalized and suppressed (:mod:`app.export.deidentify`), then every response of those
   participants in one pass ordered by participant and wave, read in chunks through a
   server-side cursor and written as it goes to the responses, usage and panel files
   (:mod:`app.export.writers`). Memory depends on the number of participants (a few small
   values each), not on the number of responses.
3. Everything is written to a temporary directory next to the target, then moved into place in
   one rename; on any error the temporary directory is removed, so no partial package is left.
4. The audit ledger gets one ``export.panel`` row (who, parameters, row counts, SHA-256 of every
   file) in its own short transaction.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import json
import os
import platform
import secrets
import shutil
import sys
import tempfile
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from importlib import metadata
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, exists, func, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool
from sqlmodel import Session

from analysis import spec
from app.core.errors import AppError
from app.db import make_engine, utcnow
from app.export import codebook as cb
from app.export import deidentify, freetext, stream, summary, timeshift, writers
from app.surveys.answers import visible_items
from app.surveys.instruments import Instrument

PROFILES = (spec.PROFILE_STRICT, spec.PROFILE_RESEARCH)
FORMATS = writers.FORMATS
PID_LENGTH = 16  # hex characters of the HMAC-SHA256 (64 bits)
MIN_KEY_BYTES = 16
DEFAULT_CHUNK = 20_000
NO_MTIME = 315_619_200  # strict packages' file times: 1980-01-02T00:00:00Z
USAGE_INSTRUMENT = stream.USAGE_INSTRUMENT
BASELINE_INSTRUMENT = "baseline"
USED_4O_ITEM = "gpt4o_before_retirement"
USED_4O_YES = {"less_than_weekly", "weekly", "several_times_weekly", "daily"}


class ExportError(AppError):
    """A refused export: bad options, or guarantees that cannot be met. Nothing is written."""

    status_code = 422
    code = "export_refused"


@dataclass
class ExportOptions:
    out: Path
    fmt: str = "csv"
    profile: str = spec.PROFILE_STRICT
    study: str | None = None  # study key; the only study when None
    key_file: Path | None = None
    # a stable pseudonym key given in memory (the researcher API): never stored, never printed
    key: bytes | None = field(default=None, repr=False)
    dua: str | None = None
    include_items: bool = False
    include_free_text: bool = False
    actor: str = "cli"


# called with (responses read, responses to read) as the export streams
ProgressCallback = Callable[[int, int], None]


@dataclass
class ExportResult:
    out_dir: Path
    export_id: str
    study: str
    profile: str
    format: str
    rows: dict[str, int]
    files: dict[str, dict[str, Any]]  # relative path -> {sha256, bytes}
    deidentification: dict[str, Any]
    audit_seq: int | None = None
    audit_hash: str | None = None  # row_hash of that ledger row

    def as_dict(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir),
            "export_id": self.export_id,
            "study": self.study,
            "profile": self.profile,
            "format": self.format,
            "rows": self.rows,
            "files": self.files,
            "deidentification": self.deidentification,
            "audit_seq": self.audit_seq,
            "audit_hash": self.audit_hash,
        }


# ---- options ----------------------------------------------------------------------------------


def check_options(opts: ExportOptions) -> tuple[Path, bytes, str]:
    """Validate the options; returns (output dir as given, pseudonym key, key source)."""
    if opts.fmt not in FORMATS:
        raise ExportError(
            f"unknown format {opts.fmt!r}: use one of {', '.join(FORMATS)}",
            code="unknown_format",
            details={"field": "format"},
        )
    if opts.profile not in PROFILES:
        raise ExportError(
            f"unknown profile {opts.profile!r}: use strict or research",
            code="unknown_profile",
            details={"field": "profile"},
        )
    if opts.profile == spec.PROFILE_RESEARCH and not (opts.dua and opts.dua.strip()):
        raise ExportError(
            "the research profile needs --dua: the reference of the data-use agreement that "
            "covers this export (it is recorded in the package and the audit ledger)",
            code="dua_required",
            details={"field": "dua"},
        )
    if opts.include_free_text and opts.profile == spec.PROFILE_STRICT:
        raise ExportError(
            "free text is never released in the strict profile: it can name the participant "
            "and others. Use the research profile with --dua (free text is then masked for "
            "e-mail addresses, phone numbers, URLs and handles)",
            code="free_text_not_in_strict",
            details={"field": "include_free_text"},
        )
    if opts.include_free_text and not opts.include_items:
        raise ExportError(
            "free text is exported only together with item answers: add --items",
            code="free_text_needs_items",
            details={"field": "include_free_text"},
        )
    if opts.key is not None:
        if opts.key_file is not None:
            raise ExportError("give the pseudonym key either in a key file or directly, not both",
                              code="key_conflict", details={"field": "key"})
        if len(opts.key) < MIN_KEY_BYTES:
            raise ExportError(f"a pseudonym key needs at least {MIN_KEY_BYTES} bytes",
                              code="key_too_short", details={"field": "key"})
        key, source = opts.key, "supplied"
    else:
        key, source = read_key(opts.key_file)
    # the output directory is checked by check_output when the export starts (a job checks
    # its options long before it has a directory)
    return Path(opts.out), key, source


def check_output(given: Path | str) -> tuple[Path, list[Path]]:
    """The output directory, absolute, and its missing parents (created by the export, removed
    again if it fails). Refuses, naming the path, anything that cannot become a new package:
    an existing file or non-empty directory, a parent that is a file, a place the process
    cannot write (permissions, read-only file system), a name the system rejects."""
    try:
        if "\0" in str(given):
            raise ValueError("a path cannot contain a NUL character")
        out = Path(given).expanduser().absolute()
        if out.exists() and not out.is_dir():
            raise ExportError(f"{shown(out)} exists and is not a directory",
                              code="output_exists", details={"field": "out"})
        if out.is_dir() and any(out.iterdir()):
            raise ExportError(
                f"{shown(out)} already exists and is not empty; choose a new directory (an export "
                "never overwrites another)",
                code="output_exists",
                details={"field": "out"},
            )
        missing: list[Path] = []
        anchor = out.parent
        while not anchor.exists():
            missing.append(anchor)
            anchor = anchor.parent
        if not anchor.is_dir():
            raise ExportError(f"cannot create {shown(out)}: {shown(anchor)} is not a directory",
                              code="output_unwritable", details={"field": "out"})
        if not os.access(anchor, os.W_OK | os.X_OK):
            raise ExportError(f"cannot create {shown(out)}: {shown(anchor)} is not writable",
                              code="output_unwritable", details={"field": "out"})
    except (OSError, ValueError) as exc:  # a name too long, a NUL byte, an unreadable parent
        raise output_error(given, exc) from exc
    return out, missing


def output_error(out: Path | str, exc: BaseException) -> ExportError:
    """An operating-system failure on the output path as a one-line refusal."""
    reason = (exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)) or \
        type(exc).__name__
    return ExportError(f"cannot write the export to {shown(out)}: {reason}; nothing was written",
                       code="output_unwritable", details={"field": "out"})


def shown(path: Path | str) -> str:
    """A path for a one-line message: control characters (a newline in a name) escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(path))


def read_key(key_file: Path | None) -> tuple[bytes, str]:
    if key_file is None:
        return secrets.token_bytes(32), "fresh"
    try:
        raw = Path(key_file).read_bytes()
    except OSError as exc:
        raise ExportError(
            f"cannot read the key file {key_file}: {exc.strerror or exc}",
            code="key_file_unreadable",
            details={"field": "key_file"},
        ) from exc
    key = raw.strip()
    if len(key) < MIN_KEY_BYTES:
        raise ExportError(
            f"the key file {key_file} holds {len(key)} bytes; a pseudonym key needs at least "
            f"{MIN_KEY_BYTES} (e.g. `python -c \"import secrets; print(secrets.token_hex(32))\"`)",
            code="key_file_unreadable",
            details={"field": "key_file"},
        )
    return key, "key_file"


_KEY_SOURCES = {"key_file": "key file", "supplied": "supplied by the researcher"}


def key_fingerprint(key: bytes) -> str:
    """Identifies a stable key in the audit ledger without revealing it."""
    return hmac.new(key, b"wellpanel export key fingerprint", hashlib.sha256).hexdigest()[:16]


# ---- the read snapshot ------------------------------------------------------------------------


@contextlib.contextmanager
def _snapshot(engine: Engine) -> Iterator[Connection]:
    """A read-only, consistent view of the database for the whole export."""
    if engine.dialect.name == "sqlite":
        database = engine.url.database
        own = None
        if database and database != ":memory:" and not database.startswith("file::memory"):
            # deferred transaction: readers never hold the write lock (WAL keeps the snapshot)
            own = make_engine(engine.url.render_as_string(hide_password=False),
                              begin_immediate=False, poolclass=NullPool)
        eng = own or engine
        try:
            with eng.connect() as conn, conn.begin():
                yield conn
        finally:
            if own is not None:
                own.dispose()
        return
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            conn.execute(text("SET TRANSACTION READ ONLY"))
            yield conn


# ---- what the export reads --------------------------------------------------------------------


@dataclass
class _Person:
    internal: str
    pid: str
    status: str
    tz: ZoneInfo
    enrolled: date
    cutoff: datetime | None
    last_day: int = 0
    enrolled_day: int = 0  # days since 1970-01-01 of the local enrollment date
    shift: int = 0  # research profile: keyed date offset in days (app/export/timeshift.py)
    qi: dict[str, Any] = field(default_factory=dict)


def _tables() -> dict[str, Any]:
    from app.consent.models import ConsentRecord, Withdrawal
    from app.participants.models import Participant
    from app.studies.models import ProtocolVersion, Study
    from app.surveys.models import ResponseScore, SurveyInstance, SurveyResponse

    return {
        "p": Participant.__table__,
        "cr": ConsentRecord.__table__,
        "w": Withdrawal.__table__,
        "pv": ProtocolVersion.__table__,
        "st": Study.__table__,
        "r": SurveyResponse.__table__,
        "i": SurveyInstance.__table__,
        "s": ResponseScore.__table__,
    }


def _eligibility(t: dict[str, Any], study_id: int) -> list[Any]:
    p, cr, w = t["p"], t["cr"], t["w"]
    consented = exists().where(cr.c.participant_id == p.c.id, cr.c.decision == "consent")
    deleted = exists().where(
        w.c.participant_id == p.c.id, w.c.scope == "delete_data", w.c.confirmed_at.is_not(None)
    )
    return [p.c.study_id == study_id, consented, ~deleted]


def _load_study(conn: Connection, t: dict[str, Any], key: str | None) -> tuple[int, str]:
    st = t["st"]
    rows = conn.execute(select(st.c.id, st.c.key).order_by(st.c.key)).all()
    if key is None:
        if len(rows) == 1:
            return rows[0][0], rows[0][1]
        if not rows:
            raise ExportError("no study is loaded in this database", code="study_not_found")
        raise ExportError(
            f"several studies are loaded ({', '.join(r[1] for r in rows)}): "
            "choose one with --study",
            code="study_required",
            details={"field": "study"},
        )
    for sid, skey in rows:
        if skey == key:
            return sid, skey
    raise ExportError(
        f"there is no study {key!r} (loaded: {', '.join(r[1] for r in rows) or 'none'})",
        code="study_not_found",
        details={"field": "study"},
    )


def _counts(conn: Connection, t: dict[str, Any], study_id: int) -> dict[str, int]:
    p, cr, w = t["p"], t["cr"], t["w"]
    consented = exists().where(cr.c.participant_id == p.c.id, cr.c.decision == "consent")
    deleted = exists().where(
        w.c.participant_id == p.c.id, w.c.scope == "delete_data", w.c.confirmed_at.is_not(None)
    )

    def count(*where: Any) -> int:
        return int(conn.execute(select(func.count()).select_from(p).where(
            p.c.study_id == study_id, *where)).scalar_one())

    return {
        "in_study": count(),
        "never_consented": count(~consented),
        "delete_data_withdrawn": count(consented, deleted),
    }


def _people(
    conn: Connection, t: dict[str, Any], study_id: int, key: bytes, excluded: dict[str, int]
) -> dict[str, _Person]:
    p, w = t["p"], t["w"]
    stop_at = (
        select(func.min(w.c.confirmed_at))
        .where(w.c.participant_id == p.c.id, w.c.scope == "stop_contact",
               w.c.confirmed_at.is_not(None))
        .scalar_subquery()
    )
    q = (
        select(p.c.id, p.c.status, p.c.timezone, p.c.enrolled_at, p.c.withdrawn_at,
               stop_at.label("stop_at"))
        .where(*_eligibility(t, study_id))
        .order_by(p.c.id)
    )
    people: dict[str, _Person] = {}
    pids: set[str] = set()
    zones: dict[str, ZoneInfo] = {}
    for pid_internal, status, tzname, enrolled_at, withdrawn_at, stop in conn.execute(q):
        if status not in spec.STATUSES or enrolled_at is None:
            excluded["unexpected_status"] = excluded.get("unexpected_status", 0) + 1
            continue
        tz = zones.setdefault(tzname, _zone(tzname))
        cutoff = stop if stop is not None else (withdrawn_at if status == "withdrawn" else None)
        pseudonym = pseudonym_of(key, pid_internal)
        if pseudonym in pids:  # 64 bits: practically impossible, but never merge two people
            raise ExportError("pseudonym collision; run the export again (a new key is drawn)",
                              code="pseudonym_collision")
        pids.add(pseudonym)
        enrolled = enrolled_at.astimezone(tz).date()
        people[pid_internal] = _Person(
            internal=pid_internal,
            pid=pseudonym,
            status=status,
            tz=tz,
            enrolled=enrolled,
            cutoff=cutoff,
            enrolled_day=stream.epoch_day(enrolled),
        )
    return people


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError):
        return ZoneInfo("UTC")


def pseudonym_of(key: bytes, internal_id: str) -> str:
    from app.core.security import keyed_pseudonym

    return keyed_pseudonym(key, internal_id, PID_LENGTH)


def _first_answers(
    conn: Connection,
    t: dict[str, Any],
    study_id: int,
    instruments: set[str],
    people: Mapping[str, _Person],
) -> dict[tuple[str, str], dict[str, Any]]:
    """(participant, instrument) -> answers of the earliest wave answered before any cutoff."""
    if not instruments:
        return {}
    r, i, p = t["r"], t["i"], t["p"]
    q = (
        select(r.c.participant_id, r.c.instrument_key, r.c.answers, r.c.submitted_at)
        .join(i, i.c.id == r.c.instance_id)
        .join(p, p.c.id == r.c.participant_id)
        .where(r.c.instrument_key.in_(sorted(instruments)), *_eligibility(t, study_id))
        .order_by(r.c.participant_id, r.c.instrument_key, i.c.wave, r.c.submitted_at, r.c.id)
    )
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for pid_internal, ikey, answers, submitted in conn.execute(q):
        person = people.get(pid_internal)
        if person is None or (pid_internal, ikey) in out:
            continue
        if person.cutoff is not None and submitted > person.cutoff:
            continue
        out[(pid_internal, ikey)] = dict(answers or {})
    return out


def _baseline_bands(
    conn: Connection, t: dict[str, Any], study_id: int, instrument: str,
    people: Mapping[str, _Person],
) -> dict[str, Any]:
    r, i, s, p = t["r"], t["i"], t["s"], t["p"]
    q = (
        select(r.c.participant_id, s.c.band, r.c.submitted_at)
        .join(i, i.c.id == r.c.instance_id)
        .join(s, s.c.response_id == r.c.id)
        .join(p, p.c.id == r.c.participant_id)
        # the panel's wave 0 (baseline), as the responses table says: an instance's own wave
        # 0 of a later schedule entry (e.g. the biweekly PHQ-9 on day 14) is not the baseline
        .where(r.c.instrument_key == instrument,
               stream.study_wave(i, p, postgresql=conn.dialect.name == "postgresql") == 0,
               *_eligibility(t, study_id))
        .order_by(r.c.participant_id, r.c.submitted_at)
    )
    out: dict[str, Any] = {}
    for pid_internal, band, submitted in conn.execute(q):
        person = people.get(pid_internal)
        if person is None or pid_internal in out:
            continue
        if person.cutoff is None or submitted <= person.cutoff:
            out[pid_internal] = band
    return out


# ---- columns ----------------------------------------------------------------------------------


@dataclass
class _Layout:
    responses: list[tuple[str, str]]
    usage: list[tuple[str, str]]
    panel: list[tuple[str, str]]
    participants: list[tuple[str, str]]
    item_columns: list[cb.ItemColumn]
    subscales: list[str]
    extra_outcomes: list[str]
    events: list[tuple[str, date]]
    descriptions: dict[str, dict[str, str]]
    value_labels: dict[str, dict[str, dict[int, str]]]
    categorical: dict[str, dict[str, list[str]]]
    free_text: set[str] = field(default_factory=set)  # columns of free-text items
    ordinal: dict[str, set[str]] = field(default_factory=dict)  # resource -> ordered columns
    # resource -> text column -> value -> label (single-choice items' English option labels)
    category_labels: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)


def _layout(
    instruments: Mapping[str, Instrument],
    events: list[dict[str, Any]],
    profile: str,
    include_items: bool,
    include_free_text: bool,
    qi_pairs: set[tuple[str, str]],
    qi_extra_columns: list[str],
) -> _Layout:
    subscales: list[str] = []
    for inst in instruments.values():
        for sub in inst.scoring.subscales if inst.scoring else []:
            if sub.key not in subscales:
                subscales.append(sub.key)
    extra_outcomes = [
        k for k, inst in instruments.items() if inst.scoring is not None and k not in spec.OUTCOMES
    ]
    ev = []
    if profile == spec.PROFILE_RESEARCH:
        for e in events:
            ev.append((e["key"], date.fromisoformat(str(e["date"]))))
    event_cols = [(spec.event_column(k), "integer") for k, _ in ev]
    descriptions: dict[str, dict[str, str]] = defaultdict(dict)
    value_labels: dict[str, dict[str, dict[int, str]]] = defaultdict(dict)
    categorical: dict[str, dict[str, list[str]]] = defaultdict(dict)
    free_text: set[str] = set()
    category_labels: dict[str, dict[str, str]] = {}  # responses' single-choice text items

    responses = [(c, spec.RESPONSES.types[c]) for c in spec.RESPONSES.columns]
    responses += [(f"{spec.SUBSCALE_PREFIX}{s}", "number") for s in subscales]
    responses += [("translation_status", "string")]
    descriptions["responses"]["translation_status"] = (
        "Translation status of the wording the participant saw: validated (published validated "
        "translation or original) or study (the study's own translation)"
    )
    responses += event_cols
    categorical["responses"]["instrument"] = list(instruments)
    categorical["responses"]["translation_status"] = ["validated", "study"]
    categorical["responses"]["severity"] = severity_bands(instruments)
    item_columns: list[cb.ItemColumn] = []
    if include_items:
        taken = {c for c, _ in responses} | {"pid"}
        for inst in instruments.values():
            for item in inst.items:
                if (inst.key, item.id) in qi_pairs:
                    continue
                if item.type == "text" and not include_free_text:
                    continue
                base = item.id if item.id not in taken else f"{inst.key}_{item.id}"
                wording = inst.languages.get("en") or next(iter(inst.languages.values()))
                text_en = wording.items.get(item.id, item.id)
                if item.type == "multiple_choice":
                    for opt in item.options:
                        col = f"{base}_{opt.value}"
                        item_columns.append(cb.ItemColumn(col, inst.key, item.id, opt.value,
                                                          "boolean"))
                        taken.add(col)
                        label = wording.options.get(opt.label, str(opt.value))
                        descriptions["responses"][col] = (
                            f"{inst.key}.{item.id}: {text_en} -- {label}")
                    continue
                if item.type == "single_choice":
                    typ = "integer" if item.has_integer_options else "string"
                    labels = {o.value: wording.options.get(o.label, str(o.value))
                              for o in item.options}
                    if typ == "integer":
                        value_labels["responses"][base] = {int(v): lab for v, lab in labels.items()}
                    else:
                        categorical["responses"][base] = [str(v) for v in labels]
                        category_labels.setdefault(base, {}).update(
                            {str(v): lab for v, lab in labels.items()})
                else:
                    typ = {"integer": "integer", "number": "number", "text": "string"}[item.type]
                item_columns.append(cb.ItemColumn(base, inst.key, item.id, None, typ))
                taken.add(base)
                flag = ""
                if item.type == "text":
                    free_text.add(base)
                    flag = (" [FREE TEXT: e-mail addresses, phone numbers, URLs and handles "
                            "masked; names and places may remain]")
                descriptions["responses"][base] = f"{inst.key}.{item.id}: {text_en}{flag}"
        responses += [(c.column, c.type) for c in item_columns]
        # why an item cell is empty (SPSS/Stata: distinct missing codes, writers.MISSING_CODES)
        for col, reason, why in (
                ("items_skipped", "skipped", "shown to the participant and left unanswered"),
                ("items_not_applicable", "not_applicable",
                 "not shown: the item's display condition was not met")):
            responses.append((col, "string"))
            descriptions["responses"][col] = (
                f"Item columns of this answer that are empty because the item was {why} "
                f"(semicolon-separated column names; missing reason '{reason}')")

    usage = [(c, spec.USAGE.types[c]) for c in spec.USAGE.columns]
    usage += [("purpose_other", "boolean"), ("lost_access_to_model", "boolean")]
    descriptions["usage"]["purpose_other"] = "Used AI for something else (purposes: other)"
    descriptions["usage"]["lost_access_to_model"] = (
        "Lost access to this model in the recall period (lost_access_models)"
    )
    categorical["usage"]["model"] = list(spec.MODELS)
    value_labels["usage"]["framing"] = dict(spec.FRAMING_LABELS)
    value_labels["usage"]["access_loss_distress"] = dict(spec.ACCESS_LOSS_DISTRESS_LABELS)

    panel = [(c, spec.PANEL.types[c]) for c in spec.PANEL.columns]
    for k in extra_outcomes:
        panel.append((k, "number"))
        descriptions["panel"][k] = f"{instruments[k].title}: primary score; empty if missing"
    panel += event_cols
    value_labels["panel"]["framing"] = dict(spec.FRAMING_LABELS)
    # why an outcome cell is empty (SPSS/Stata: distinct missing codes, writers.MISSING_CODES)
    for col, why in (
            ("scores_not_administered", "the survey was not sent in this wave, or closed "
             "unanswered (missing reason 'not_administered')"),
            ("scores_skipped", "the survey was answered with too few items for a valid score "
             "(missing reason 'skipped')"),
            ("scores_withdrawn", "the survey came after the participant's withdrawal (missing "
             "reason 'withdrawn')")):
        panel.append((col, "string"))
        descriptions["panel"][col] = (
            f"Outcome columns of this row that are empty because {why}; semicolon-separated "
            "column names")

    participants = [(c, spec.PARTICIPANTS.types[c]) for c in spec.PARTICIPANTS.columns]
    for c in qi_extra_columns:
        participants.append((c, "string"))
        descriptions["participants"][c] = f"{c} at baseline, generalized (empty if suppressed)"
    participants.append(("qi_suppressed", "boolean"))
    descriptions["participants"]["qi_suppressed"] = (
        "True when de-identification suppressed this participant's quasi-identifiers (their "
        "cells are empty): their combination was too rare"
    )
    categorical["participants"]["status"] = list(spec.STATUSES)
    for c in ("age_band", "gender", "region", "living_situation", *qi_extra_columns):
        categorical["participants"][c] = []  # the hierarchies' values, set once they are known
    ordinal = {"responses": {"severity"}, "participants": {"age_band"}}
    return _Layout(responses, usage, panel, participants, item_columns, subscales,
                   extra_outcomes, ev, dict(descriptions), dict(value_labels), dict(categorical),
                   free_text, ordinal, {"responses": category_labels})


def _withdrawn_cells(conn: Connection, t: dict[str, Any], people: Mapping[str, _Person]
                     ) -> set[tuple[str, int, str]]:
    """(internal id, panel wave, instrument) of every survey a withdrawal took away: scheduled
    or answered after the participant's cutoff (such answers are never exported). Only
    withdrawn participants have any, so the set stays small."""
    cut = {p.internal: p.cutoff for p in people.values() if p.cutoff is not None}
    if not cut:
        return set()
    i, p = t["i"], t["p"]
    wave = stream.study_wave(i, p, postgresql=conn.dialect.name == "postgresql")
    q = (select(i.c.participant_id, wave, i.c.instrument_key, i.c.scheduled_at, i.c.completed_at)
         .join(p, p.c.id == i.c.participant_id)
         .where(i.c.participant_id.in_(sorted(cut))))
    out: set[tuple[str, int, str]] = set()
    for internal, w, inst, scheduled, completed in conn.execute(q):
        c = cut[internal]
        if scheduled > c or (completed is not None and completed > c):
            out.add((internal, int(w), inst))
    return out


def _describe_time(layout: _Layout, policy: timeshift.TimePolicy, profile: str) -> None:
    """The released time columns' descriptions say how coarse they are (the codebook's
    ``time`` entry has the whole story)."""
    r = policy.day_resolution_days
    for name in ("responses", "usage", "panel"):
        layout.descriptions.setdefault(name, {})["day"] = (
            f"Days since the participant's enrollment, rounded down to a multiple of {r}")
    layout.descriptions.setdefault("participants", {})["days_in_study"] = (
        f"Days from enrollment to the participant's last exported answer, rounded down to a "
        f"multiple of {r}")
    if profile == spec.PROFILE_RESEARCH:
        for name in ("responses", "panel"):
            for key, _ in layout.events:
                layout.descriptions[name][spec.event_column(key)] = (
                    f"Weeks since {key}: the middle week of the {policy.event_band_weeks}-week "
                    f"band of the participant's enrollment (shifted by a secret offset of "
                    f"-{policy.max_shift_days}..{policy.max_shift_days} days), plus day // 7")


def severity_bands(instruments: Mapping[str, Instrument]) -> list[str]:
    """Every scoring band of the study's instruments, lowest first: each instrument's bands in
    the order its definition lists them (by score), instruments in the study's order, merged
    so that a band another instrument also has keeps one place (PHQ-9's and GAD-7's "mild" are
    one code). The codes follow the definitions, never the data, so they are the same in every
    export of the protocol; the order is meaningful within an instrument."""
    order: list[str] = []
    for inst in instruments.values():
        at = len(order) - 1  # an instrument's new bands go after those already placed
        for band in inst.scoring.bands if inst.scoring else []:
            if band.key in order:
                at = order.index(band.key)
            else:
                at += 1
                order.insert(at, band.key)
    return order


# ---- the stream (see app.export.stream) ------------------------------------------------------


def response_query_for(conn: Connection, study: str | None = None,
                       include_items: bool = False) -> Any:
    """The query an export streams (for benchmarks comparing it with a raw COPY)."""
    t = _tables()
    study_id, _ = _load_study(conn, t, study)
    pv = t["pv"]
    content = conn.execute(select(pv.c.content).where(pv.c.study_id == study_id)
                           .order_by(pv.c.version.desc()).limit(1)).scalar_one()
    instruments = _instrument_defs(content)
    with_subscales = {k for k, inst in instruments.items()
                      if inst.scoring is not None and inst.scoring.subscales}
    return stream.response_query(t, _eligibility(t, study_id),
                                 None if include_items else {USAGE_INSTRUMENT}, with_subscales,
                                 sql_local_day=conn.dialect.name == "postgresql")


def _item_values(item_columns: list[cb.ItemColumn], answers: Mapping[str, Any],
                 free_text: set[str] | frozenset[str] = frozenset(),
                 masker: Callable[[str], str] | None = None,
                 instrument: Instrument | None = None) -> dict[str, Any]:
    """The item columns of one instrument's answer (``item_columns`` of that instrument);
    free-text columns go through ``masker``, and are left out without one. With the
    ``instrument``, each empty item cell gets its reason: skipped (shown, not answered) or not
    applicable (hidden by its display condition)."""
    out: dict[str, Any] = {}
    shown = ({i.id for i in visible_items(instrument, answers)} if instrument is not None
             else None)
    skipped: list[str] = []
    not_applicable: list[str] = []
    for c in item_columns:
        v = answers.get(c.item)
        if shown is not None and v is None:
            (skipped if c.item in shown else not_applicable).append(c.column)
        if c.option is not None:
            out[c.column] = None if not isinstance(v, list) else (c.option in v)
        elif c.type == "integer":
            out[c.column] = v if isinstance(v, int) and not isinstance(v, bool) else None
        elif c.type == "number":
            out[c.column] = stream._hours(v)
        elif c.column in free_text:
            out[c.column] = None if v is None or masker is None else masker(str(v))
        else:
            out[c.column] = None if v is None else str(v)
    if shown is not None:
        out["items_skipped"] = ";".join(skipped) or None
        out["items_not_applicable"] = ";".join(not_applicable) or None
    return out



# ---- the export -------------------------------------------------------------------------------


def _software(conn: Connection) -> dict[str, Any]:
    out: dict[str, Any] = {"python": platform.python_version()}
    for dist in ("wellpanel", "pandas", "pyarrow", "pyreadstat", "sqlalchemy", "sqlmodel",
                 "frictionless", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    info = conn.dialect.server_version_info
    out["database"] = conn.dialect.name + (
        " " + ".".join(str(x) for x in info) if info else ""
    )
    return out


def _instrument_defs(content: Mapping[str, Any]) -> dict[str, Instrument]:
    out = {}
    order = content["study"].get("instruments") or list(content["instruments"])
    for key in order:
        pinned = content["instruments"].get(key)
        if pinned is not None:
            out[key] = Instrument.model_validate(pinned["definition"])
    return out


class _LeaveOut(Exception):  # noqa: N818 (a signal to export_panel, never shown)
    """Make the export again without these pseudonyms (record suppression)."""

    def __init__(self, pids: frozenset[str]) -> None:
        super().__init__(f"{len(pids)} participant(s) left out")
        self.pids = pids


def _classify(classes: deidentify.ColumnClasses, layout: _Layout,
              sources: Mapping[str, str | None]) -> dict[str, dict[str, str]]:
    """Every column the package will hold, with its privacy class from the study file; refuses
    (naming it) a column without one, or one classified identifier."""
    tables = {"participants": layout.participants, "responses": layout.responses,
              "usage": layout.usage, "panel": layout.panel}
    items = {("responses", c.column): (c.instrument, c.item) for c in layout.item_columns}
    items.update({("participants", deidentify.OUTPUT_COLUMN.get(f, f)): (src, f)
                  for f, src in sources.items() if src is not None})
    try:
        return deidentify.classify_release(
            classes, {name: [c for c, _ in cols] for name, cols in tables.items()}, items)
    except deidentify.DeidentificationError as exc:
        raise ExportError(exc.message, code="unclassified_column", details=exc.details) from exc


def _anonymize(
    cfg: deidentify.QIConfig,
    classified: Mapping[str, Mapping[str, str]],
    raw: dict[str, list[Any]],
    sens_values: list[Any] | None,
    option_values: Mapping[str, Any],
    instruments: Mapping[str, Instrument],
    sens_band: str | None,
    files: Mapping[str, Path],
    pids: list[str],
    removed: int,
) -> deidentify.Anonymized:
    """Generalize and suppress the participants' quasi-identifiers so that the whole package
    meets the study's thresholds (see :mod:`app.export.deidentify`)."""
    part = classified.get("participants", {})
    fields = [*cfg.fields, *(c for c in deidentify.PARTICIPANT_QI_COLUMNS
                             if part.get(c) == deidentify.QUASI_IDENTIFIER)]
    fixed = deidentify.row_level_signatures(files, classified, pids)
    order = None
    if sens_band is not None:  # severity bands are ordinal: t-closeness by ordered distance
        scoring = instruments[sens_band].scoring
        order = [b.key for b in scoring.bands] if scoring else None
    try:
        anon = deidentify.anonymize(raw, cfg, sensitive_values=sens_values,
                                    option_values=option_values, fields=fields, fixed=fixed,
                                    sensitive_order=order, removed=removed)
        anon.report["column_classes"] = {t: dict(c) for t, c in classified.items()}
        return anon
    except deidentify.RemoveRecords as exc:
        raise _LeaveOut(frozenset(pids[i] for i in exc.indices)) from exc
    except deidentify.DeidentificationError as exc:
        raise ExportError(exc.message, code="k_anonymity_unreachable",
                          details=exc.details) from exc


def _qi_sources(
    cfg: deidentify.QIConfig, instruments: Mapping[str, Instrument]
) -> dict[str, str | None]:
    """QI field -> instrument holding it (baseline first); None for the participant's language."""
    order = sorted(instruments, key=lambda k: (k != BASELINE_INSTRUMENT,))
    out: dict[str, str | None] = {}
    for f in cfg.fields:
        if f == "language":
            out[f] = None
            continue
        holder = next((k for k in order if f in instruments[k].item_ids), None)
        if holder is None:
            raise ExportError(
                f"study file: quasi_identifiers.fields: {f!r} is not an item of any of the "
                "study's instruments (nor 'language')",
                code="invalid_quasi_identifiers",
            )
        out[f] = holder
    return out


class _CallbackProgress:
    """The progress bar's interface (update, close) reporting to a callback instead."""

    def __init__(self, callback: ProgressCallback, total: int) -> None:
        self.callback, self.total, self.n = callback, total, 0

    def update(self, n: int) -> None:
        self.n += n
        self.callback(self.n, self.total)

    def close(self) -> None:
        pass


def _progress(progress: bool | ProgressCallback, total: int) -> Any:
    if callable(progress):
        return _CallbackProgress(progress, total)
    from tqdm import tqdm

    return tqdm(total=total, unit=" answers", disable=not progress, file=sys.stderr,
                desc="export", leave=False, mininterval=0.5, ncols=_bar_width())


def _bar_width() -> int | None:
    """tqdm sizes the bar to the terminal, and draws nothing on one reporting zero columns
    (a fresh pty, some container consoles): fall back to 80 there."""
    try:
        return None if os.get_terminal_size(sys.stderr.fileno()).columns else 80
    except (OSError, ValueError, AttributeError):
        return None


def export_panel(
    engine: Engine,
    options: ExportOptions,
    *,
    progress: bool | ProgressCallback = False,
    now: datetime | None = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> ExportResult:
    """Write the panel Data Package to ``options.out``; see the module docstring.

    ``progress``: True draws a progress bar on stderr; a callable is called with (responses
    read, responses to read) after every chunk (an exception it raises aborts the export and
    removes what was written)."""
    out, key, key_source = check_options(options)
    out, created_parents = check_output(out)
    now = now or utcnow()
    export_id = str(uuid.uuid4())
    tmp: Path | None = None
    try:
        for d in reversed(created_parents):
            d.mkdir()
        # mkdtemp: mode 0700, so nothing half-written is readable by anyone else; the rename
        # below publishes the whole package at once (it keeps the mode)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
        try:
            built = _build(engine, options, tmp, key, key_source, export_id, now, progress,
                           chunk_size)
        except _LeaveOut as again:  # record suppression (H-deid): once more, without them
            shutil.rmtree(tmp)
            tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
            built = _build(engine, options, tmp, key, key_source, export_id, now, progress,
                           chunk_size, leave_out=again.pids)
        os.rename(tmp, out)
        tmp = None
    except BaseException as exc:  # errors, KeyboardInterrupt, the CLI's signal exceptions
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        for d in created_parents:
            with contextlib.suppress(OSError):
                d.rmdir()
        if isinstance(exc, OSError):  # disk full, a directory that appeared meanwhile...
            raise output_error(out, exc) from exc
        raise
    try:
        seq, row_hash = _audit(engine, options, built, key, key_source, now)
    except BaseException as exc:
        shutil.rmtree(out, ignore_errors=True)
        for d in created_parents:
            with contextlib.suppress(OSError):
                d.rmdir()
        if not isinstance(exc, Exception):
            raise
        raise ExportError(
            f"the export could not be recorded in the audit ledger ({exc}); it was removed",
            code="audit_failed",
        ) from exc
    built.out_dir = out
    built.audit_seq = seq
    built.audit_hash = row_hash
    return built


def _audit(
    engine: Engine, options: ExportOptions, built: ExportResult, key: bytes, key_source: str,
    now: datetime,
) -> tuple[int, str]:
    from app.audit import service as audit

    details = {
        "export_id": built.export_id,
        "study": built.study,
        "profile": built.profile,
        "format": built.format,
        "dua": options.dua,
        "include_items": options.include_items,
        "include_free_text": options.include_free_text,
        "key": "fresh random key, discarded" if key_source == "fresh"
        else f"{_KEY_SOURCES[key_source]}, fingerprint {key_fingerprint(key)}",
        "out": str(Path(options.out).expanduser().absolute()),
        "rows": built.rows,
        "files": {name: f["sha256"] for name, f in built.files.items()},
        "deidentification": {
            k: built.deidentification.get("quasi_identifiers", {}).get(k)
            for k in ("k", "l", "t", "suppressed", "suppressed_share", "smallest_class",
                      "max_individual_risk", "expected_reidentifications", "sample_uniques")
        },
    }
    with Session(engine, expire_on_commit=False) as session:
        event = audit.append(session, actor=options.actor, action="export.panel",
                             target=f"study:{built.study}", details=details, now=now)
        session.commit()
        return int(event.id), event.row_hash


def _build(
    engine: Engine,
    options: ExportOptions,
    tmp: Path,
    key: bytes,
    key_source: str,
    export_id: str,
    now: datetime,
    progress: bool | ProgressCallback,
    chunk_size: int,
    leave_out: frozenset[str] = frozenset(),
) -> ExportResult:
    t = _tables()
    fmt, profile = options.fmt, options.profile
    with _snapshot(engine) as conn:
        study_id, study_key = _load_study(conn, t, options.study)
        pv = t["pv"]
        protocols = conn.execute(
            select(pv.c.version, pv.c.sha256, pv.c.consent_current, pv.c.content)
            .where(pv.c.study_id == study_id).order_by(pv.c.version)
        ).all()
        if not protocols:
            raise ExportError(f"study {study_key!r} has no protocol loaded", code="study_not_found")
        latest = protocols[-1]
        content = latest.content
        study = content["study"]
        instruments = _instrument_defs(content)
        try:
            cfg = deidentify.parse_config(study)
            classes = deidentify.parse_classes(study)
        except deidentify.DeidentificationError as exc:
            raise ExportError(exc.message, code="invalid_quasi_identifiers") from exc
        if options.include_items and BASELINE_INSTRUMENT in instruments:
            # baseline answers classified quasi-identifier are released generalized (H-deid)
            cfg = dataclasses.replace(cfg, fields=(*cfg.fields, *deidentify.item_quasi_identifiers(
                classes, instruments[BASELINE_INSTRUMENT], cfg.fields)))
        try:
            time_policy = timeshift.parse_policy(study)
        except timeshift.TimePolicyError as exc:
            raise ExportError(str(exc), code="invalid_export_settings",
                              details={"field": "export.time"}) from exc
        sources = _qi_sources(cfg, instruments)
        qi_pairs = {(inst, f) for f, inst in sources.items() if inst is not None}
        # country is generalized into region; any QI outside the contract gets its own column
        contract_cols = set(spec.PARTICIPANTS.columns)
        qi_extra = [deidentify.OUTPUT_COLUMN.get(f, f) for f in cfg.fields
                    if deidentify.OUTPUT_COLUMN.get(f, f) not in contract_cols]
        layout = _layout(instruments, list(study.get("events") or []), profile,
                         options.include_items, options.include_free_text, qi_pairs, qi_extra)
        _describe_time(layout, time_policy, profile)
        classified = _classify(classes, layout, sources)  # refuses an unclassified column (H-deid)

        counts = _counts(conn, t, study_id)
        excluded: dict[str, int] = {}
        people = _people(conn, t, study_id, key, excluded)
        if leave_out:  # their row-level quasi-identifiers were too rare (H-deid)
            people = {i: p for i, p in people.items() if p.pid not in leave_out}
            excluded["row_level_quasi_identifiers_too_rare"] = len(leave_out)
        if profile == spec.PROFILE_RESEARCH:  # strict: no calendar alignment to shift
            for person in people.values():
                person.shift = timeshift.date_shift(key, person.internal,
                                                    time_policy.max_shift_days)

        # -- quasi-identifiers and the sensitive attribute, from the earliest answers --
        need = {inst for inst in sources.values() if inst is not None}
        if BASELINE_INSTRUMENT in instruments:
            need.add(BASELINE_INSTRUMENT)
        sens = cfg.sensitive
        sens_band: str | None = None
        sens_item: str | None = None
        if sens is not None:
            if sens.endswith("_band") and sens[: -len("_band")] in instruments:
                sens_band = sens[: -len("_band")]
            elif sens in ("used_4o_before_retirement", "status"):
                pass
            else:
                sens_item = next((k for k, i in instruments.items() if sens in i.item_ids), None)
                if sens_item is None:
                    raise ExportError(
                        f"study file: quasi_identifiers.sensitive: {sens!r} is not an item, "
                        "a <instrument>_band, used_4o_before_retirement or status",
                        code="invalid_quasi_identifiers",
                    )
                need.add(sens_item)
        first = _first_answers(conn, t, study_id, need, people)
        bands = _baseline_bands(conn, t, study_id, sens_band, people) if sens_band else {}
        # every table lists participants in the order of their pseudonyms, never of their
        # internal ids (which anyone with the database, a backup or audit targets holds)
        order = sorted(people.values(), key=lambda person: person.pid)
        ranks = {person.internal: ix for ix, person in enumerate(order)}
        raw = {
            f: [
                (first.get((p.internal, src), {}).get(f) if src is not None else None)
                for p in order
            ]
            for f, src in sources.items()
        }
        if "language" in sources:
            langs = dict(conn.execute(select(t["p"].c.id, t["p"].c.language).where(
                t["p"].c.study_id == study_id)).all())
            raw["language"] = [langs.get(p.internal) for p in order]
        used4o = []
        for p in order:
            v = first.get((p.internal, BASELINE_INSTRUMENT), {}).get(USED_4O_ITEM)
            used4o.append(None if v is None else v in USED_4O_YES)
        sens_values = None
        if sens is not None:
            if sens_band:
                sens_values = [bands.get(p.internal) for p in order]
            elif sens == "used_4o_before_retirement":
                sens_values = used4o
            elif sens == "status":
                sens_values = [p.status for p in order]
            else:
                sens_values = [
                    _hashable(first.get((p.internal, sens_item or ""), {}).get(sens))
                    for p in order
                ]
        option_values = {
            f: deidentify.released_options(instruments[src].item(f))
            for f, src in sources.items() if src is not None
        }
        # the released values' codes come from the definitions, never from the data
        for f in cfg.fields:
            h = deidentify.hierarchy_for(f, option_values.get(f, ()))
            if h.categories:
                layout.categorical["participants"][h.column] = h.categories
        del first  # every baseline answer: not needed while streaming

        # -- writers --
        collectors: dict[str, summary.StatsCollector] = {}  # the codebook's frequencies

        def open_writers(name: str, cols: list[tuple[str, str]]) -> list[Any]:
            collectors[name] = summary.StatsCollector(cols, categories={
                **layout.categorical.get(name, {}),
                **{c: list(v) for c, v in layout.value_labels.get(name, {}).items()}})
            if fmt in writers.TABULAR_FORMATS:
                return [writers.TableWriter(tmp / f"{name}.{fmt}", cols, fmt), collectors[name]]
            scratch = tmp / ".scratch"  # for the SPSS/Stata conversion at the end
            scratch.mkdir(exist_ok=True)
            return [writers.TableWriter(tmp / f"{name}.csv", cols, "csv"),
                    writers.TableWriter(scratch / f"{name}.parquet", cols, "parquet"),
                    collectors[name]]

        def open_buf(name: str, cols: list[tuple[str, str]]) -> writers.ChunkBuffer:
            return writers.ChunkBuffer([c for c, _ in cols], open_writers(name, cols),
                                       chunk_size)

        sinks = {name: writers.Sink(open_writers(name, cols)) for name, cols in
                 (("responses", layout.responses), ("usage", layout.usage),
                  ("panel", layout.panel))}
        eligibility = _eligibility(t, study_id)
        answer_instruments = None if options.include_items else {USAGE_INSTRUMENT}
        with_subscales = {k for k, inst in instruments.items()
                          if inst.scoring is not None and inst.scoring.subscales}
        fast = stream.server_knows_zones(conn, {p.tz.key for p in people.values()})
        query = stream.response_query(t, eligibility, answer_instruments, with_subscales,
                                      sql_local_day=fast, ranks=ranks,
                                      dialect=conn.dialect.name)
        r = t["r"]
        total = int(conn.execute(
            select(func.count()).select_from(r).join(t["p"], t["p"].c.id == r.c.participant_id)
            .where(*eligibility)).scalar_one()) if progress else 0
        bar = _progress(progress, total)
        masker = freetext.TextMasker()
        items_of: dict[str, list[cb.ItemColumn]] = defaultdict(list)
        for c in layout.item_columns:
            items_of[c.instrument].append(c)
        proc = stream.Processor(
            people, sinks,
            outcomes=[*spec.OUTCOMES, *layout.extra_outcomes],
            subscale_columns=[f"{spec.SUBSCALE_PREFIX}{k}" for k in layout.subscales],
            events=layout.events,
            include_items=options.include_items,
            instruments=set(instruments),
            item_values=lambda ikey, answers: _item_values(
                items_of.get(ikey, []), answers, layout.free_text, masker,
                instruments.get(ikey)),
            progress=bar,
            day_resolution=time_policy.day_resolution_days,
            event_band_weeks=time_policy.event_band_weeks,
            withdrawn_cells=_withdrawn_cells(conn, t, people),
        )

        def local_day(internal: str, at: datetime) -> int:
            person = people.get(internal)
            tz = person.tz if person is not None else ZoneInfo("UTC")
            return stream.epoch_day(at.astimezone(tz).date())

        tables = (stream.copy_tables(conn, query) if fast
                  else stream.row_tables(conn, query, chunk_size, local_day))
        sqlite = None if conn.dialect.name == "postgresql" else conn.connection.driver_connection
        if sqlite is not None:
            stream.register_sqlite_order(sqlite, ranks)
        # closing() ends an interrupted COPY before the snapshot rolls back (else it hangs)
        try:
            with contextlib.closing(tables):
                for table in tables:
                    proc.feed(table)
            proc.finish()
        finally:
            bar.close()
            if sqlite is not None:
                stream.register_sqlite_order(sqlite, None)
        for sink in sinks.values():
            sink.close()
        stats = proc.stats
        after_cutoff = stream.after_cutoff_count(conn, t, eligibility)

        # de-identification over every quasi-identifier of the package (H-deid): the
        # participants' own columns are generalized, the other tables' are read back as written
        raw["status"] = [p.status for p in order]
        raw["days_in_study"] = [timeshift.coarse_days(p.last_day, time_policy.day_resolution_days)
                                for p in order]
        raw["used_4o_before_retirement"] = used4o
        tab = fmt if fmt in writers.TABULAR_FORMATS else "csv"
        anon = _anonymize(cfg, classified, raw, sens_values, option_values, instruments,
                          sens_band, {name: tmp / f"{name}.{tab}"
                                      for name in ("responses", "usage", "panel")},
                          [p.pid for p in order], len(leave_out))

        pbuf = open_buf("participants", layout.participants)
        for ix, p in enumerate(order):  # already in pseudonym order
            row = {
                "pid": p.pid,
                "status": p.status,
                "days_in_study": timeshift.coarse_days(p.last_day,
                                                       time_policy.day_resolution_days),
                "used_4o_before_retirement": used4o[ix],
                "qi_suppressed": anon.suppressed[ix],
            }
            for col, values in anon.columns.items():
                row[col] = values[ix]
            pbuf.append(row)
        pbuf.close()
        variables = summary.codebook_entry(
            {n: collectors[n] for n in ("participants", "responses", "usage", "panel")}, cfg.k)
        software = _software(conn)
        protocol_meta = {
            "protocol_version": latest.version,
            "protocol_sha256": latest.sha256,
            "consent_version_current": latest.consent_current,
            "protocol_versions": [
                {"version": pr.version, "sha256": pr.sha256} for pr in protocols
            ],
        }
        codebook = cb.build_codebook(
            protocol=content,
            protocol_meta=protocol_meta,
            instruments=instruments,
            qi_items={f for f, src in sources.items() if src is not None},
            include_items=options.include_items,
            include_free_text=options.include_free_text,
            item_columns=layout.item_columns,
            time_policy=time_policy,
            answered={k: dict(v) for k, v in stats.answered.items()},
            versions_in_data={k: dict(v) for k, v in stats.versions.items()},
            profile=profile,
        )
    codebook["variables"] = variables
    # the snapshot is closed: from here on only files are touched
    rows = {
        "participants": pbuf.total,
        "responses": sinks["responses"].total,
        "usage": sinks["usage"].total,
        "panel": sinks["panel"].total,
    }
    deid = _deid_report(options, key_source, anon.report, counts, excluded, after_cutoff, people,
                        layout, masker.report())
    deid["time"] = time_policy.report(profile == spec.PROFILE_RESEARCH)
    title = study.get("title")
    title_text = title.get(study.get("default_language", "en")) if isinstance(title, dict) else (
        title or study_key)
    stat_info: dict[str, dict[str, Any]] = {}
    if fmt in writers.STAT_FORMATS:
        for name, cols in (("participants", layout.participants),
                           ("responses", layout.responses), ("usage", layout.usage),
                           ("panel", layout.panel)):
            schema = _schema(name, cols, layout)
            stat_info[name] = writers.write_stat_file(
                tmp / ".scratch" / f"{name}.parquet", tmp / f"{name}.{fmt}", fmt,
                schema["fields"],
                categorical=layout.categorical.get(name, {}),
                value_labels=layout.value_labels.get(name, {}),
                ordinal=layout.ordinal.get(name, set()),
                created=now if profile == spec.PROFILE_RESEARCH else None,
            )
        shutil.rmtree(tmp / ".scratch")
    wellpanel = spec.wellpanel_property(
        generated_by=spec.GENERATED_BY_EXPORT,
        export_profile=profile,
        study={"key": study_key, "title": title_text, **protocol_meta},
        events=[{"key": e["key"], "date": str(e["date"]), "description": e.get("description", "")}
                for e in study.get("events") or []],
        codebook=codebook,
        deidentification=deid,
        software=software,
    )
    wellpanel["export"] = {
        "id": export_id,
        "format": fmt,
        "profile": profile,
        "dua": options.dua,
        "include_items": options.include_items,
        "include_free_text": options.include_free_text,
        "rows": rows,
        "duplicates_dropped": stats.duplicates,
        **({"created": now.isoformat()} if profile == spec.PROFILE_RESEARCH else {}),
    }
    files = _write_descriptor(tmp, fmt, layout, wellpanel, title_text, study_key, stat_info,
                              export_id, now, profile, package_meta=_package_meta(study))

    return ExportResult(
        out_dir=tmp, export_id=export_id, study=study_key, profile=profile, format=fmt,
        rows=rows, files=files, deidentification=deid,
    )


def _hashable(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


def _schema(name: str, cols: list[tuple[str, str]], layout: _Layout) -> dict[str, Any]:
    rs = spec.RESOURCES[name]
    extras = {c: typ for c, typ in cols if rs.field(c) is None and rs.pattern_for(c) is None}
    schema = spec.table_schema(name, [c for c, _ in cols], extras,
                               layout.descriptions.get(name, {}))
    labels = layout.value_labels.get(name, {})
    texts = layout.categorical.get(name, {})
    text_labels = layout.category_labels.get(name, {})
    ordered = layout.ordinal.get(name, set())
    described = layout.descriptions.get(name, {})
    for f in schema["fields"]:
        col = f["name"]
        if col in described:  # contract columns too (e.g. day: how coarse it is)
            f["description"] = described[col]
        if col in labels and "categories" not in f:
            f["categories"] = [{"value": v, "label": lab} for v, lab in labels[col].items()]
        elif col in texts and texts[col] and f["type"] == "string":
            # text categories too (Table Schema v2 `categories`), in the definitions' order
            f["categories"] = [{"value": v, "label": text_labels.get(col, {}).get(v, v)}
                               for v in texts[col]]
        if "categories" in f and (col in ordered or col in labels):
            f["categoriesOrdered"] = True  # bands and labelled scales (Likert, framing)
    if name != "participants":  # every row belongs to an exported participant
        schema["foreignKeys"] = [
            {"fields": "pid", "reference": {"resource": "participants", "fields": "pid"}}]
    if name in ("responses", "usage"):  # ... and to a (participant, wave) row of the panel
        schema["foreignKeys"].append(
            {"fields": ["pid", "wave"], "reference": {"resource": "panel",
                                                      "fields": ["pid", "wave"]}})
    return schema


def _deid_report(
    options: ExportOptions,
    key_source: str,
    qi_report: dict[str, Any],
    counts: dict[str, int],
    excluded: dict[str, int],
    after_cutoff: int,
    people: Mapping[str, _Person],
    layout: _Layout,
    masked: Mapping[str, int],
) -> dict[str, Any]:
    text_items = [f"{c.instrument}.{c.item}" for c in layout.item_columns
                  if c.column in layout.free_text]
    return {
        "profile": options.profile,
        "direct_identifiers": "none exported: email addresses and other contact details, "
        "names (consent signatures), tokens, IP addresses and internal participant ids are "
        "never read by the export",
        "pseudonym": {
            "column": "pid",
            "method": f"HMAC-SHA256 of the internal participant id, first {PID_LENGTH} hex "
            "characters",
            "key": "a fresh random 256-bit key, discarded after the export: pids do not link "
            "to any other export" if key_source == "fresh" else "a stable key (approved "
            "linkage): pids link to other exports made with the same key",
        },
        "time": "days since each participant's enrollment; "
        + ("no calendar information (strict profile)" if options.profile == spec.PROFILE_STRICT
           else "week-level alignment to the study events (research profile, under the DUA)"),
        "dua": options.dua,
        "free_text": {
            "included": options.include_free_text,
            "items": sorted(set(text_items)) if options.include_free_text else [],
            **({"masked": dict(masked),
                "masking": "e-mail addresses, phone numbers, URLs and social-media handles "
                "are replaced by [email], [phone], [url], [handle] (counts above); names, "
                "places and other details written in prose are not detected and may remain"}
               if options.include_free_text else {}),
        },
        "item_answers": options.include_items,
        "consent_and_withdrawal": {
            "participants_in_study": counts["in_study"],
            "never_consented_excluded": counts["never_consented"],
            "delete_data_withdrawals_excluded": counts["delete_data_withdrawn"],
            "stop_contact_withdrawn_exported_until_withdrawal": sum(
                1 for p in people.values() if p.cutoff is not None),
            "answers_after_withdrawal_dropped": after_cutoff,
            "other_excluded": excluded,
            "exported_participants": len(people),
        },
        "quasi_identifiers": qi_report,
        "residual_risks": [
            "translation_status tells whether the validated (usually English) or a study "
            "translation was shown, i.e. a coarse hint of the participant's language",
            "answers themselves (scores, usage patterns) are not generalized",
            "columns the study file classifies sensitive or other (quasi_identifiers."
            "column_classes lists each) are released as they are and are not part of the "
            "k-anonymity key; an attacker who knows them (e.g. which waves someone answered) "
            "is outside the study's attacker model",
        ],
    }


def _write_descriptor(
    tmp: Path,
    fmt: str,
    layout: _Layout,
    wellpanel: dict[str, Any],
    title: str,
    study_key: str,
    stat_info: Mapping[str, dict[str, Any]],
    export_id: str,
    now: datetime,
    profile: str,
    package_meta: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    tab = fmt if fmt in writers.TABULAR_FORMATS else "csv"
    resources = []
    files: dict[str, dict[str, Any]] = {}
    layouts = {"participants": layout.participants, "responses": layout.responses,
               "usage": layout.usage, "panel": layout.panel}
    for name in spec.REQUIRED_RESOURCES:
        rs = spec.RESOURCES[name]
        path = tmp / f"{name}.{tab}"
        digest, size = writers.file_digest(path)
        files[path.name] = {"sha256": digest, "bytes": size}
        res: dict[str, Any] = {
            "name": name,
            "title": rs.title,
            "description": rs.description,
            "path": path.name,
            "type": "table",
            "scheme": "file",
            "format": tab,
            "mediatype": writers.MEDIATYPES[tab],
        }
        if tab == "csv":
            res["encoding"] = "utf-8"
            res["dialect"] = {"csv": {"delimiter": ",", "header": True}}
            # frictionless checks these on the bytes it reads; it reads Parquet through Arrow
            # and cannot, so Parquet hashes are in wellpanel.export.files
            res["hash"] = f"sha256:{digest}"
            res["bytes"] = size
        res["schema"] = _schema(name, layouts[name], layout)
        resources.append(res)
    for name, info in stat_info.items():
        path = tmp / f"{name}.{fmt}"
        digest, size = writers.file_digest(path)
        files[path.name] = {"sha256": digest, "bytes": size}
        resources.append({
            "name": f"{name}-{fmt}",
            "title": f"{spec.RESOURCES[name].title} ({'SPSS' if fmt == 'sav' else 'Stata'})",
            "description": f"The {name} resource as "
            f"{'an SPSS .sav' if fmt == 'sav' else 'a Stata .dta'} file with variable labels "
            "and value labels. Text categories are integer codes (see wellpanel.value_codes); "
            "booleans are 0 = no, 1 = yes.",
            "path": path.name,
            "type": "file",
            "scheme": "file",
            "format": fmt,
            "mediatype": writers.MEDIATYPES[fmt],
            "hash": f"sha256:{digest}",
            "bytes": size,
            "wellpanel": {"source_resource": name, **info},
        })
    wellpanel["export"]["files"] = dict(files)  # every data file's SHA-256 (Parquet included)
    descriptor: dict[str, Any] = {
        "name": f"wellpanel-{study_key}-panel".replace("_", "-").lower(),
        "id": export_id,
        "title": f"{title}: anonymized panel ({profile})",
        "profile": "data-package",
        **dict(package_meta or {}),
        "resources": resources,
        spec.PROPERTY: wellpanel,
    }
    if profile == spec.PROFILE_RESEARCH:
        descriptor["created"] = now.isoformat()
    path = tmp / spec.DESCRIPTOR_FILE
    path.write_text(json.dumps(descriptor, indent=2, ensure_ascii=False, default=_json_default)
                    + "\n", "utf-8")
    digest, size = writers.file_digest(path)
    files[path.name] = {"sha256": digest, "bytes": size}
    if profile == spec.PROFILE_STRICT:
        # no export time anywhere, the files' own modification times included (an archive
        # of the package keeps them): 1980-01-02 00:00 UTC, the earliest a zip holds anywhere
        for name in files:
            os.utime(tmp / name, (NO_MTIME, NO_MTIME))
    return files


def _package_meta(study: Mapping[str, Any]) -> dict[str, Any]:
    """Frictionless package-level licences and contributors, from the study file's export
    block (never invented: a study that names none gets none)."""
    block = study.get("export") or {}
    return {key: [dict(x) for x in block[key]] for key in ("licenses", "contributors")
            if block.get(key)}


def _json_default(o: Any) -> Any:
    if isinstance(o, datetime | date):
        return o.isoformat()
    if isinstance(o, set | tuple):
        return list(o)
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
    except ImportError:  # pragma: no cover
        pass
    raise TypeError(f"not JSON serializable: {type(o).__name__}")

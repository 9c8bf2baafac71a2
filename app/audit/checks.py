"""Verifying the ledger against its signed checkpoints.

1. The sink: every entry readable, numbered without gaps, signed by the trusted key.
2. The anchors: each checkpoint still in force (a recorded restore retires the checkpoints after
   the head it restored) must find its head hash at its row. A different hash means the rows up
   to it were rewritten (the checkpoint's digest names the first row that differs); a missing
   row past the database's head means the ledger was cut (or rolled back to an older copy).
3. The chain: recomputed from the first row (full) or from the last verified checkpoint
   (incremental: the position is kept, signed, beside the key).

Incremental runs trust the recomputation of earlier runs for rows before that checkpoint; the
anchors are still compared every time, so re-hashing, renumbering, cutting and rollback are
caught either way; an edit that leaves the stored hashes alone in old rows needs a full run
(`wellpanel audit verify` is full unless told `--incremental`; the IRB page is incremental and
offers a full run).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel
from sqlalchemy import Connection, text
from sqlmodel import Session

from app.audit import anchor as anchoring
from app.audit import service as chain
from app.audit.anchor import Anchor, DirectorySink, Entry, Sink, Unreadable
from app.audit.models import BrokenLink, ChainReport, CheckpointInfo, RollbackInfo
from app.config import Settings
from app.core.security import canonical_json


@dataclass
class SinkView:
    """What verification reads: the entries of one sink and the key they must be signed with."""

    label: str
    entries: list[Entry]
    unreadable: list[Unreadable]
    key: Ed25519PublicKey | None
    paths: anchoring.LedgerPaths | None = None  # where the verified position is kept
    signer_available: bool = False
    warnings: list[str] = field(default_factory=list)


def load_view(settings: Settings, *, checkpoints: Path | None = None,
              public_key: Path | None = None) -> SinkView:
    """The configured sink (or a directory named on the command line, e.g. the IRB's saved
    email attachments)."""
    anchor = Anchor(settings)
    sink: Sink = DirectorySink(checkpoints) if checkpoints is not None else anchor.read_sink()
    entries, unreadable = anchoring.read_entries(sink)
    key = anchoring.trusted_key(anchor.paths, sink, public_key)
    return SinkView(sink.label, entries, unreadable, key, anchor.paths,
                    anchor.paths.key_file.is_file() and public_key is None)


def load_views(settings: Settings, *, checkpoints: Path | None = None,
               public_key: Path | None = None, sink: str = "all") -> list[SinkView]:
    """What `audit verify` checks: the directory, the bucket (WELLPANEL_LEDGER_S3_URL), or
    both (`all`, the default: the bucket too when one is configured)."""
    if sink not in ("all", "directory", "s3"):
        raise anchoring.AnchorError(f"unknown sink {sink!r}: all, directory or s3")
    if checkpoints is not None or sink == "directory":
        return [load_view(settings, checkpoints=checkpoints, public_key=public_key)]
    if settings.ledger_s3_url is None:
        if sink == "s3":
            raise anchoring.AnchorError("no bucket to check: WELLPANEL_LEDGER_S3_URL is not set")
        return [load_view(settings, public_key=public_key)]
    anchor = Anchor(settings)
    assert anchor.bucket is not None
    bucket = anchor.bucket.open()
    entries, unreadable = anchoring.read_entries(bucket)
    key = anchoring.trusted_key(anchor.paths, bucket, public_key)
    in_bucket = SinkView(bucket.label, entries, unreadable, key, anchor.paths,
                         anchor.paths.key_file.is_file() and public_key is None,
                         warnings=list(bucket.anomalies))
    if sink == "s3":
        return [in_bucket]
    return [load_view(settings, public_key=public_key), in_bucket]


def checkpoint_info(entry: Entry) -> CheckpointInfo:
    return CheckpointInfo(n=entry.n, kind=entry.kind, seq=entry.seq, head=entry.head,
                          at=entry.at, file=entry.name, key_id=str(entry.payload.get("key")),
                          backup=entry.payload.get("backup"),
                          forced=entry.payload.get("forced"), source=entry.payload.get("source"))


# ---- 1. the sink -----------------------------------------------------------------------------

def sink_problem(view: SinkView) -> BrokenLink | None:
    if view.unreadable:
        bad = view.unreadable[0]
        return BrokenLink(seq=None, problem="bad_checkpoint", file=bad.name,
                          message=f"checkpoint file {bad.name} in {view.label}: {bad.reason}")
    if view.entries and view.key is None:
        return BrokenLink(seq=None, problem="no_key",
                          message=f"{view.label} holds checkpoints but no public key was found "
                          "to check them (give one with --public-key)")
    trusted = anchoring.key_id_of(view.key) if view.key is not None else None
    expected = 1
    for entry in view.entries:
        if entry.n > expected:
            return BrokenLink(
                seq=None, problem="missing_checkpoints", checkpoint=expected,
                last_row=entry.n - 1,
                message=f"checkpoint entries {expected} to {entry.n - 1} are missing from "
                f"{view.label}" if entry.n - 1 > expected else
                f"checkpoint entry {expected} is missing from {view.label}")
        expected = entry.n + 1
        if entry.payload.get("key") != trusted:
            return BrokenLink(
                seq=entry.seq, problem="foreign_key", checkpoint=entry.n, file=entry.name,
                message=f"checkpoint {entry.n} ({entry.name}) is signed by another key "
                f"(key id {entry.payload.get('key')}, expected {trusted})")
        if not entry.signed_by(view.key):  # type: ignore[arg-type]
            return BrokenLink(
                seq=entry.seq, problem="bad_signature", checkpoint=entry.n, file=entry.name,
                message=f"checkpoint {entry.n} ({entry.name}) has a bad signature: its content "
                "was changed after it was signed, or it was not signed with this key")
    return None


def disagreement(first: SinkView, other: SinkView) -> tuple[BrokenLink | None, list[str]]:
    """Two sinks hold copies of the same entries: one that differs is named; entries only one
    of them holds are worth a warning (not yet uploaded, or a directory emptied)."""
    mine = {e.n: e for e in first.entries}
    theirs = {e.n: e for e in other.entries}
    for n in sorted(mine.keys() & theirs.keys()):
        if mine[n].to_bytes() != theirs[n].to_bytes():
            return BrokenLink(
                seq=None, problem="sink_mismatch", checkpoint=n, file=mine[n].name,
                message=f"checkpoint {n} ({mine[n].name}) in {first.label} differs from the "
                f"one in {other.label}: one of them was replaced"), []
    warnings = []
    ahead = sorted(mine.keys() - theirs.keys())
    if ahead:
        warnings.append(f"{len(ahead)} checkpoint entries ({_span(ahead)}) are not in "
                        f"{other.label} yet: they are uploaded with the next checkpoint "
                        "(`wellpanel audit checkpoint`)")
    behind = sorted(theirs.keys() - mine.keys())
    if behind:
        warnings.append(f"{other.label} holds {len(behind)} checkpoint entries ({_span(behind)})"
                        f" that {first.label} lacks")
    return None, warnings


def _span(numbers: list[int]) -> str:
    return f"entry {numbers[0]}" if len(numbers) == 1 else f"entries {numbers[0]} to {numbers[-1]}"


# ---- 2. the anchors --------------------------------------------------------------------------

@dataclass
class Anchors:
    """The entries still in force, in row order, and the restores that retired others."""

    in_force: list[Entry] = field(default_factory=list)
    rollbacks: list[RollbackInfo] = field(default_factory=list)


def anchors_in_force(entries: list[Entry]) -> Anchors:
    result = Anchors()
    for entry in entries:
        if entry.kind == "restore":
            retired = [e for e in result.in_force if e.seq > entry.seq]
            result.in_force = [e for e in result.in_force if e.seq <= entry.seq]
            result.rollbacks.append(RollbackInfo(
                checkpoint=entry.n, at=entry.at, to_seq=entry.seq,
                from_seq=max((e.seq for e in retired), default=None),
                forced=bool(entry.payload.get("forced")), source=str(entry.payload.get("source"))))
        result.in_force.append(entry)
    result.in_force.sort(key=lambda e: (e.seq, e.n))
    return result


def _hashes_at(connection: Connection, seqs: list[int]) -> dict[int, str]:
    found: dict[int, str] = {}
    unique = sorted(set(seqs))
    for start in range(0, len(unique), 500):  # bounded IN lists
        chunk = unique[start:start + 500]
        params = {f"s{i}": s for i, s in enumerate(chunk)}
        marks = ", ".join(f":s{i}" for i in range(len(chunk)))
        for seq, row_hash in connection.execute(
                text(f"SELECT id, row_hash FROM audit_events WHERE id IN ({marks})"),  # noqa: S608
                params):
            found[int(seq)] = str(row_hash)
    return found


def anchor_problem(connection: Connection, anchors: Anchors, head: tuple[int, str] | None
                   ) -> tuple[BrokenLink | None, Entry | None]:
    """The first anchor the database contradicts (as a problem), else the latest one it
    matches."""
    head_seq = head[0] if head else 0
    stored = _hashes_at(connection, [e.seq for e in anchors.in_force])
    matched: Entry | None = None
    for entry in anchors.in_force:
        found = stored.get(entry.seq)
        if found is None and entry.seq > head_seq:
            return BrokenLink(
                seq=head_seq + 1, problem="truncated", checkpoint=entry.n, file=entry.name,
                last_row=entry.seq,
                message=f"rows {head_seq + 1} to {entry.seq} are missing: checkpoint "
                f"{entry.n} ({entry.name}, {entry.at.isoformat(timespec='seconds')}) recorded "
                f"the ledger up to row {entry.seq}; it now ends at row {head_seq} (cut off, or "
                "an older copy restored)"), matched
        if found is None:
            return BrokenLink(seq=entry.seq, problem="deleted", checkpoint=entry.n,
                              file=entry.name,
                              message=f"row {entry.seq}, recorded by checkpoint {entry.n} "
                              f"({entry.name}), is missing"), matched
        if found != entry.head:
            return _rewritten(connection, entry, head_seq, anchors), matched
        matched = entry
    return None, matched


def _rewritten(connection: Connection, entry: Entry, head_seq: int, anchors: Anchors
               ) -> BrokenLink:
    since = int(entry.payload.get("since", 0))
    digest = entry.payload.get("digest")
    first = None
    if isinstance(digest, str):
        rows = anchoring.db_hashes(connection, since, entry.seq)
        width = anchoring.DIGEST_CHARS
        recorded = [digest[i:i + width] for i in range(0, len(digest), width)]
        expected_seq = since + 1
        for (seq, row_hash), want in zip(rows, recorded, strict=False):
            if seq != expected_seq or row_hash[:width] != want:
                first = expected_seq
                break
            expected_seq += 1
        else:
            first = expected_seq if len(rows) < len(recorded) else entry.seq
    where = (f"row {first} is not the row checkpoint {entry.n} ({entry.name}) recorded"
             if first is not None else
             f"a row between {since + 1} and {entry.seq} is not what checkpoint {entry.n} "
             f"({entry.name}) recorded (it holds no per-row digest)")
    latest = max((e.seq for e in anchors.in_force), default=0)
    short = (f"; the ledger now ends at row {head_seq}, short of row {latest} that checkpoint "
             "recorded: rows were removed and the rest renumbered" if head_seq < latest else "")
    return BrokenLink(
        seq=first if first is not None else since + 1, problem="rewritten", checkpoint=entry.n,
        file=entry.name, last_row=None if first is not None else entry.seq,
        message=f"{where}: the ledger was rewritten from there on (rows changed, removed or "
        f"inserted, and the later rows re-hashed){short}")


# ---- the verified position -------------------------------------------------------------------

def load_position(view: SinkView) -> dict[str, Any] | None:
    if view.paths is None or view.key is None or not view.paths.state_file.is_file():
        return None
    try:
        doc = json.loads(view.paths.state_file.read_text())
        entry = Entry("position", doc["payload"], doc["signature"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return doc["payload"] if entry.signed_by(view.key) else None


def save_position(view: SinkView, ledger: str | None, entry: Entry) -> None:
    if view.paths is None or not view.signer_available:
        return
    signer = anchoring.Signer(view.paths.key_file)
    payload = {"ledger": ledger, "n": entry.n, "seq": entry.seq, "head": entry.head}
    doc = {"payload": payload, "signature": signer.sign(payload)}
    tmp = view.paths.state_file.with_name(f".{view.paths.state_file.name}.tmp")
    tmp.write_text(canonical_json(doc))
    tmp.replace(view.paths.state_file)


# ---- 3. all together -------------------------------------------------------------------------

def verify(session: Session, view: SinkView | None, *, full: bool = True,
           others: Sequence[SinkView] = ()) -> ChainReport:
    """The chain, the checkpoints and the sink; the first problem, by row, is named. `others`
    are further sinks (the bucket): their entries are checked the same way and against the
    first sink's, and the chain is recomputed once."""
    connection = session.connection()
    head = anchoring.db_head(connection)
    views = [v for v in ([view] if view else []) + list(others) if v.entries or v.unreadable]
    warnings = [w for v in ([view] if view else []) + list(others) for w in v.warnings]
    if not views:
        report = chain.verify(session)
        labels = " and ".join(v.label for v in ([view] if view else []) + list(others))
        return report.model_copy(update={"sink": labels or None, "warnings": warnings,
                                         "unanchored_rows": report.head_seq or 0})
    if view is not None and views[0] is not view:
        warnings.append(f"{view.label} holds no checkpoint entries; {views[0].label} does")
    for empty in [v for v in others if not v.entries and not v.unreadable]:
        warnings += disagreement(views[0], empty)[1]  # e.g. nothing uploaded to the bucket yet
    view, others = views[0], views[1:]
    anchors = anchors_in_force(view.entries)
    sink_issue = sink_problem(view)
    mismatch, matched = (None, None) if sink_issue else anchor_problem(connection, anchors, head)
    best, differs = matched, None
    for other in others:
        issue = sink_problem(other)
        if issue is not None:
            sink_issue = sink_issue or issue
            continue
        differ, notes = disagreement(view, other)
        warnings += notes + ([differ.message] if differ else [])
        differs = differs or differ  # the problem, unless the rows say more (below)
        found_other, matched_other = anchor_problem(connection, anchors_in_force(other.entries),
                                                    head)
        if found_other is not None and (mismatch is None
                                        or (found_other.seq or 0) < (mismatch.seq or 0)):
            mismatch = found_other
        if matched_other is not None and (best is None or matched_other.seq > best.seq):
            best = matched_other
    ledger = anchoring.db_hash_at(connection, 1)
    start = None
    if not full and sink_issue is None and mismatch is None and matched is not None:
        position = load_position(view)
        if (position is not None and position.get("ledger") == ledger
                and any(e.seq == position["seq"] and e.head == position["head"]
                        for e in anchors.in_force if e.seq <= matched.seq)):
            start = (int(position["seq"]), str(position["head"]))
    report = chain.verify(session, start=start)
    found = [p for p in (mismatch, report.first_broken) if p is not None]
    problem = sink_issue or (min(found, key=lambda p: p.seq or 0) if found else differs)
    every = [e for v in views for e in v.entries]
    latest = max(every, key=lambda e: e.n) if every else None
    result = ChainReport(
        ok=problem is None, rows_checked=report.rows_checked,
        head_seq=head[0] if head else None, head_hash=head[1] if head else None,
        first_broken=problem, mode="incremental" if start else "full",
        verified_from=(start[0] + 1) if start else 1, anchored=True,
        sink=" and ".join(v.label for v in views),
        key_id=anchoring.key_id_of(view.key) if view.key is not None else None,
        checkpoints_checked=len({e.n for e in every}),
        latest_checkpoint=checkpoint_info(latest) if latest else None,
        unanchored_rows=max(0, (head[0] if head else 0) - (best.seq if best else 0)),
        rollbacks=anchors.rollbacks, warnings=warnings)
    if result.ok and matched is not None:
        save_position(view, ledger, matched)
    return result


# ---- for the IRB -----------------------------------------------------------------------------

class LedgerStatus(BaseModel):
    """What the IRB pages and API show: the (incremental) verification, the latest checkpoints
    newest first, and the key they must be signed with."""

    report: ChainReport
    checkpoints: list[CheckpointInfo]
    key_id: str | None
    public_key: str | None
    sink: str


def ledger_status(session: Session, settings: Settings, *, full: bool = False,
                  recent: int = 10) -> LedgerStatus:
    try:
        view = load_view(settings)
    except anchoring.AnchorError as exc:  # an unreadable key: say so, as a broken report
        report = ChainReport(ok=False, rows_checked=0, head_seq=None, head_hash=None,
                             first_broken=BrokenLink(seq=None, problem="no_key",
                                                     message=str(exc)))
        return LedgerStatus(report=report, checkpoints=[], key_id=None, public_key=None,
                            sink=str(anchoring.ledger_paths(settings).directory))
    report = verify(session, view, full=full)
    return LedgerStatus(
        report=report,
        checkpoints=[checkpoint_info(e) for e in reversed(view.entries[-recent:])],
        key_id=anchoring.key_id_of(view.key) if view.key is not None else None,
        public_key=anchoring.public_pem(view.key) if view.key is not None else None,
        sink=view.label)

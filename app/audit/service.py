"""Appending to and verifying the audit ledger.

Each row's hash covers its position, time, actor, action, target, details, old/new values and
the previous row's hash. Appends are serialized (an advisory lock on PostgreSQL; SQLite
transactions are already BEGIN IMMEDIATE) so concurrent requests still form one chain.

The lock is held from the append until the caller's commit, so callers append last, just before
they commit, and everything that can happen outside the lock does: the JSON round trip happens
before it, and on PostgreSQL taking the lock and reading the chain's head is one round trip
(two statements, each with its own snapshot, so the head read is the one committed last).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import insert, text
from sqlmodel import Session, col, select

from app.audit import anchor
from app.audit.models import AuditEvent, BrokenLink, ChainReport
from app.core.security import canonical_json, sha256_text
from app.db import utcnow

GENESIS_HASH = "0" * 64
_LEDGER_LOCK_KEY = 7_412_001  # any constant; names the ledger's advisory lock (in the SQL below)
_REORDER_WINDOW = 8


def compute_hash(
    *,
    seq: int,
    occurred_at: datetime,
    actor: str,
    action: str,
    target: str | None,
    details: Any,
    old_value: Any,
    new_value: Any,
    prev_hash: str,
) -> str:
    payload = {
        "seq": seq,
        "at": occurred_at.isoformat(timespec="microseconds"),
        "actor": actor,
        "action": action,
        "target": target,
        "details": details,
        "old": old_value,
        "new": new_value,
        "prev": prev_hash,
    }
    return sha256_text(canonical_json(payload))


def _hash_of(row: AuditEvent, seq: int | None = None) -> str:
    return compute_hash(
        seq=row.id if seq is None else seq,
        occurred_at=row.occurred_at,
        actor=row.actor,
        action=row.action,
        target=row.target,
        details=row.details,
        old_value=row.old_value,
        new_value=row.new_value,
        prev_hash=row.prev_hash,
    )


_LOCK_AND_READ_HEAD = ("SELECT pg_advisory_xact_lock(7412001); "
                      "SELECT id, row_hash FROM audit_events ORDER BY id DESC LIMIT 1")


def _lock_and_read_head(session: Session) -> tuple[int, str] | None:
    """Serialize appends and return the chain's head (seq, hash), or None when it is empty."""
    connection = session.connection()
    if connection.dialect.name != "postgresql":  # SQLite: BEGIN IMMEDIATE already serializes
        row = connection.execute(text(
            "SELECT id, row_hash FROM audit_events ORDER BY id DESC LIMIT 1")).first()
        return None if row is None else (row[0], row[1])
    # One round trip for both statements (psycopg's simple protocol runs them in order).
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(_LOCK_AND_READ_HEAD)
        cursor.nextset()
        row = cursor.fetchone()
    finally:
        cursor.close()
    return None if row is None else (row[0], row[1])


def append(
    session: Session,
    *,
    actor: str,
    action: str,
    target: str | None = None,
    details: dict[str, Any] | None = None,
    old_value: Any = None,
    new_value: Any = None,
    now: datetime | None = None,
) -> AuditEvent:
    """Add one row to the chain inside the caller's transaction (the caller commits soon:
    the chain stays locked until then)."""
    occurred_at = now or utcnow()
    # Round-trip through JSON so the hashed form equals what the database gives back.
    details_j = _json_roundtrip(details or {})
    old_j, new_j = _json_roundtrip(old_value), _json_roundtrip(new_value)
    session.flush()  # the caller's pending writes go out before the lock, not under it
    head = _lock_and_read_head(session)
    seq = 1 if head is None else head[0] + 1
    prev_hash = GENESIS_HASH if head is None else head[1]
    event = AuditEvent(
        id=seq,
        occurred_at=occurred_at,
        actor=actor,
        action=action,
        target=target,
        details=details_j,
        old_value=old_j,
        new_value=new_j,
        prev_hash=prev_hash,
        row_hash="",
    )
    event.row_hash = _hash_of(event)
    # A Core insert in the session's transaction: the ORM's flush bookkeeping for one row cost
    # more than the insert itself. The returned event is not attached to the session.
    session.connection().execute(_INSERT_EVENT, {
        "id": seq, "occurred_at": occurred_at, "actor": actor, "action": action,
        "target": target, "details": details_j, "old_value": old_j, "new_value": new_j,
        "prev_hash": prev_hash, "row_hash": event.row_hash})
    anchor.note_append(session, seq, occurred_at)  # a checkpoint may follow the commit
    return event


_INSERT_EVENT = insert(AuditEvent.__table__)  # type: ignore[attr-defined]


def _json_roundtrip(value: Any) -> Any:
    return json.loads(canonical_json(value)) if value is not None else None


def _iter_rows(session: Session, batch: int = 2000, after: int = -1) -> Iterator[AuditEvent]:
    last_id = after
    while True:
        rows = session.exec(
            select(AuditEvent).where(AuditEvent.id > last_id).order_by(col(AuditEvent.id))
            .limit(batch)
        ).all()
        if not rows:
            return
        yield from rows
        last_id = rows[-1].id


def _original_seq(row: AuditEvent) -> int | None:
    for seq in range(max(1, row.id - _REORDER_WINDOW), row.id + _REORDER_WINDOW + 1):
        if seq != row.id and _hash_of(row, seq) == row.row_hash:
            return seq
    return None


def verify(session: Session, start: tuple[int, str] | None = None) -> ChainReport:
    """Recompute the chain from the first row (or from the row after `start`, a position
    (seq, row hash) already verified) and name the first broken link."""
    prev_hash, prev_prev_hash = (GENESIS_HASH, None) if start is None else (start[1], None)
    expected, checked, last = (1 if start is None else start[0] + 1), 0, None
    for row, following in _with_next(_iter_rows(session, after=expected - 1)):
        broken = _check_row(row, following, expected, prev_hash, prev_prev_hash, last)
        if broken is not None:
            return ChainReport(
                ok=False, rows_checked=checked, head_seq=last.id if last else None,
                head_hash=prev_hash if last else None, first_broken=broken,
            )
        checked += 1
        prev_prev_hash, prev_hash = prev_hash, row.row_hash
        expected, last = row.id + 1, row
    return ChainReport(
        ok=True, rows_checked=checked,
        head_seq=last.id if last else (start[0] if start else None),
        head_hash=last.row_hash if last else (start[1] if start else None),
    )


def _with_next(rows: Iterator[AuditEvent]) -> Iterator[tuple[AuditEvent, AuditEvent | None]]:
    current = next(rows, None)
    while current is not None:
        following = next(rows, None)
        yield current, following
        current = following


def _check_row(
    row: AuditEvent,
    following: AuditEvent | None,
    expected: int,
    prev_hash: str,
    prev_prev_hash: str | None,
    last: AuditEvent | None,
) -> BrokenLink | None:
    if _hash_of(row) != row.row_hash:
        return _classify_moved_or_edited(row, following)
    if row.id > expected:
        return BrokenLink(seq=expected, problem="deleted",
                          message=f"rows {expected} to {row.id - 1} are missing")
    if row.id < expected:
        return BrokenLink(seq=row.id, problem="reordered",
                          message=f"row {row.id} appears after row {expected - 1}")
    if row.prev_hash != prev_hash:
        if last is not None and row.prev_hash == prev_prev_hash:
            return BrokenLink(seq=last.id, problem="inserted",
                              message=f"row {last.id} was inserted: row {row.id} links past it")
        return BrokenLink(seq=row.id, problem="deleted",
                          message=f"row {row.id} does not link to row {row.id - 1}: "
                          "rows were removed or replaced before it")
    return None


def _classify_moved_or_edited(row: AuditEvent, following: AuditEvent | None) -> BrokenLink:
    """A row whose hash fits another position was moved; otherwise its content was edited."""
    original = _original_seq(row)
    if original is None:
        return BrokenLink(seq=row.id, problem="edited",
                          message=f"row {row.id} was changed after it was written")
    if original < row.id:
        return BrokenLink(seq=original, problem="inserted",
                          message=f"a row was inserted at position {original}; "
                          f"the row now at {row.id} was written as row {original}")
    next_original = _original_seq(following) if following is not None else None
    if next_original is not None and next_original < following.id:  # type: ignore[union-attr]
        return BrokenLink(seq=row.id, problem="reordered",
                          message=f"rows {row.id} and {following.id} swapped places "  # type: ignore[union-attr]
                          f"(this row was written as row {original})")
    return BrokenLink(seq=row.id, problem="deleted",
                      message=f"row {row.id} was deleted and later rows renumbered "
                      f"(the row now at {row.id} was written as row {original})")


def entries_about(session: Session, subject: str, targets: set[str]) -> list[AuditEvent]:
    """Ledger rows whose actor is ``subject`` or whose target is ``subject`` or one of
    ``targets`` (e.g. a participant and their consent records), oldest first."""
    names = sorted(targets | {subject})
    found: dict[int, AuditEvent] = {}
    for chunk in range(0, len(names), 500):  # bounded IN lists
        for row in session.exec(select(AuditEvent).where(
                col(AuditEvent.target).in_(names[chunk:chunk + 500]))).all():
            found[row.id] = row
    for row in session.exec(select(AuditEvent).where(AuditEvent.actor == subject)).all():
        found[row.id] = row
    return [found[seq] for seq in sorted(found)]


def recorded_details(session: Session, target: str, actions: tuple[str, ...]
                     ) -> dict[str, Any] | None:
    """The details of the first ledger row about `target` with one of `actions` (e.g. the
    hashes recorded when a consent decision was made), or None."""
    row = session.exec(select(AuditEvent).where(AuditEvent.target == target,
                                                col(AuditEvent.action).in_(actions))
                       .order_by(col(AuditEvent.id)).limit(1)).first()
    return dict(row.details) if row is not None else None

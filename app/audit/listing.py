"""The ledger as the IRB reads it: filtered, paginated newest first, and as CSV.

Participants appear only under their IRB pseudonym (the keyed hash the consent pages show):
`participant:<id>` in actor or target and any participant id inside details or old/new values
is replaced before a row leaves the server. Everything else is shown as recorded, with the row's
hashes, so a reader can recompute them against a checkpoint.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import or_
from sqlmodel import Session, col, select

from app.audit.models import AuditEvent
from app.core import csv_cells
from app.core.security import canonical_json

PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class LedgerEntry(BaseModel):
    seq: int
    at: datetime
    actor: str
    action: str
    target: str | None
    details: Any
    old_value: Any
    new_value: Any
    prev_hash: str
    row_hash: str


class LedgerPage(BaseModel):
    entries: list[LedgerEntry]
    next_before: int | None  # pass as ?before= for the next (older) page; None: the last page
    filters: dict[str, Any]


@dataclass
class LedgerFilter:
    date_from: datetime | None = None  # inclusive
    date_to: datetime | None = None  # exclusive
    action: str | None = None  # exact, or a prefix ending in "." (consent.)
    actor: str | None = None  # exact; participant:<pseudonym> is understood
    participant_id: str | None = None  # from a target pseudonym: rows about this person
    related_targets: frozenset[str] = frozenset()  # their consent records, withdrawals...

    def describe(self) -> dict[str, Any]:
        return {"from": self.date_from.isoformat() if self.date_from else None,
                "to": self.date_to.isoformat() if self.date_to else None,
                "action": self.action, "actor": self.actor,
                "about_participant": self.participant_id is not None}


def _where(statement: Any, f: LedgerFilter) -> Any:
    if f.date_from is not None:
        statement = statement.where(AuditEvent.occurred_at >= f.date_from)
    if f.date_to is not None:
        statement = statement.where(AuditEvent.occurred_at < f.date_to)
    if f.action:
        statement = statement.where(col(AuditEvent.action).startswith(f.action, autoescape=True)
                                    if f.action.endswith(".") else AuditEvent.action == f.action)
    if f.actor:
        statement = statement.where(AuditEvent.actor == f.actor)
    if f.participant_id is not None:
        subject = f"participant:{f.participant_id}"
        targets = sorted(f.related_targets | {subject})[:1000]
        statement = statement.where(or_(AuditEvent.actor == subject,
                                        col(AuditEvent.target).in_(targets)))
    return statement


def page(session: Session, f: LedgerFilter, pseudonym: Any, *, before: int | None = None,
         limit: int = PAGE_SIZE) -> LedgerPage:
    """One page, newest first; `pseudonym(participant_id)` names a participant for the IRB."""
    limit = max(1, min(limit, MAX_PAGE_SIZE))
    statement = _where(select(AuditEvent), f)
    if before is not None:
        statement = statement.where(AuditEvent.id < before)
    rows = session.exec(statement.order_by(col(AuditEvent.id).desc()).limit(limit + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    entries = _public(session, rows, pseudonym)
    return LedgerPage(entries=entries, next_before=rows[-1].id if more and rows else None,
                      filters=f.describe())


def actions(session: Session) -> list[str]:
    return sorted(session.exec(select(AuditEvent.action).distinct()).all())


def _public(session: Session, rows: list[AuditEvent], pseudonym: Any) -> list[LedgerEntry]:
    from app.consent import service as consent

    found = set()
    for row in rows:
        found.update(_UUID.findall(canonical_json(
            [row.actor, row.target, row.details, row.old_value, row.new_value])))
    participants = consent.existing_participant_ids(session, found)
    names = {pid: pseudonym(pid) for pid in participants}

    def hide(value: Any) -> Any:
        if isinstance(value, str):
            return _UUID.sub(lambda m: names.get(m.group(0), m.group(0)), value)
        if isinstance(value, list):
            return [hide(v) for v in value]
        if isinstance(value, dict):
            return {hide(k): hide(v) for k, v in value.items()}
        return value

    return [LedgerEntry(seq=r.id, at=r.occurred_at, actor=hide(r.actor), action=r.action,
                        target=hide(r.target), details=hide(r.details),
                        old_value=hide(r.old_value), new_value=hide(r.new_value),
                        prev_hash=r.prev_hash, row_hash=r.row_hash) for r in rows]


CSV_FIELDS = ["seq", "at", "actor", "action", "target", "details", "old_value", "new_value",
              "prev_hash", "row_hash"]


def csv_chunks(session: Session, f: LedgerFilter, pseudonym: Any, batch: int = 2000
               ) -> Iterator[str]:
    """Every matching row, oldest first, as CSV text in chunks (formula cells neutralized)."""
    buffer = io.StringIO()
    writer = csv_cells.DictWriter(buffer, fieldnames=CSV_FIELDS)
    writer.writeheader()
    last = 0
    while True:
        rows = session.exec(_where(select(AuditEvent), f).where(AuditEvent.id > last)
                            .order_by(col(AuditEvent.id)).limit(batch)).all()
        for entry in _public(session, list(rows), pseudonym):
            row = entry.model_dump()
            row["at"] = entry.at.isoformat()
            for name in ("details", "old_value", "new_value"):
                row[name] = "" if row[name] is None else canonical_json(row[name])
            writer.writerow(row)
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        if len(rows) < batch:
            return
        last = rows[-1].id

"""What someone holding the application's database credentials can do to the ledger and the data
under it, in raw SQL: switch off the append-only triggers (the table owner may), then edit,
re-hash, delete, renumber or cut rows."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlmodel import Session, col, select

from app.audit import service as audit
from app.audit.models import AuditEvent

APPEND_ONLY_TRIGGERS = {  # SQLite: the triggers' names (migrations 0001 and 0008)
    "audit_events": ["audit_events_no_update", "audit_events_no_delete"],
    "consent_documents": ["consent_documents_no_update", "consent_documents_no_delete"],
    "consent_copies": ["consent_copies_no_update", "consent_copies_no_delete"],
}


def unprotect(session: Session, table: str = "audit_events") -> None:
    """Switch off a table's append-only triggers as its owner would."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
    else:
        for name in APPEND_ONLY_TRIGGERS[table]:
            session.execute(text(f"DROP TRIGGER IF EXISTS {name}"))
    session.commit()


def _rows(session: Session, after: int) -> list[dict[str, Any]]:
    rows = session.exec(select(AuditEvent).where(AuditEvent.id > after)
                        .order_by(col(AuditEvent.id))
                        .execution_options(populate_existing=True)).all()
    return [r.model_dump() for r in rows]


def rehash_from(session: Session, seq: int) -> None:
    """Recompute row_hash and prev_hash from row `seq` on, so the chain verifies again."""
    previous = session.execute(text("SELECT row_hash FROM audit_events WHERE id = :s"),
                               {"s": seq - 1}).scalar() or audit.GENESIS_HASH
    for row in _rows(session, seq - 1):
        new_hash = audit.compute_hash(
            seq=row["id"], occurred_at=row["occurred_at"], actor=row["actor"],
            action=row["action"], target=row["target"], details=row["details"],
            old_value=row["old_value"], new_value=row["new_value"], prev_hash=previous)
        session.execute(text("UPDATE audit_events SET prev_hash = :p, row_hash = :h "
                             "WHERE id = :i"), {"p": previous, "h": new_hash, "i": row["id"]})
        previous = new_hash
    session.commit()


def edit_and_rehash(session: Session, seq: int, actor: str = "someone else") -> None:
    session.execute(text("UPDATE audit_events SET actor = :a WHERE id = :i"),
                    {"a": actor, "i": seq})
    session.commit()
    rehash_from(session, seq)


def delete_and_renumber(session: Session, seq: int) -> None:
    session.execute(text("DELETE FROM audit_events WHERE id = :i"), {"i": seq})
    head = session.execute(text("SELECT max(id) FROM audit_events")).scalar()
    for old in range(seq + 1, head + 1):
        session.execute(text("UPDATE audit_events SET id = :n WHERE id = :o"),
                        {"n": old - 1, "o": old})
    session.commit()
    rehash_from(session, seq)


def cut_after(session: Session, seq: int) -> None:
    session.execute(text("DELETE FROM audit_events WHERE id > :i"), {"i": seq})
    session.commit()

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlmodel import Session, select

from app.audit import service as audit
from app.audit.models import AuditEvent
from app.db import make_engine

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def _fill(session: Session, n: int = 6) -> None:
    for i in range(n):
        audit.append(session, actor="test", action="thing.happen", target=f"t:{i}",
                     details={"i": i, "note": "ünïcode ✓"}, old_value={"a": i},
                     new_value={"a": i + 1}, now=T0)
    session.commit()


def _unprotect(session: Session) -> None:
    """What a DBA with full rights could do: switch off the append-only triggers."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("ALTER TABLE audit_events DISABLE TRIGGER USER"))
    else:
        session.execute(text("DROP TRIGGER audit_events_no_update"))
        session.execute(text("DROP TRIGGER audit_events_no_delete"))
    session.commit()


def test_intact_chain_verifies(session):
    _fill(session)
    report = audit.verify(session)
    assert report.ok and report.rows_checked == 6 and report.head_seq == 6
    rows = session.exec(select(AuditEvent).order_by(AuditEvent.id)).all()
    assert rows[0].prev_hash == audit.GENESIS_HASH
    assert all(b.prev_hash == a.row_hash for a, b in zip(rows, rows[1:], strict=False))


def test_edited_row_is_named(session):
    _fill(session)
    _unprotect(session)
    session.execute(text("UPDATE audit_events SET actor = 'someone else' WHERE id = 3"))
    session.commit()
    report = audit.verify(session)
    assert not report.ok
    assert (report.first_broken.seq, report.first_broken.problem) == (3, "edited")


def test_deleted_row_is_named(session):
    _fill(session)
    _unprotect(session)
    session.execute(text("DELETE FROM audit_events WHERE id = 4"))
    session.commit()
    report = audit.verify(session)
    assert (report.first_broken.seq, report.first_broken.problem) == (4, "deleted")


def test_deleted_and_renumbered_rows_are_named(session):
    _fill(session)
    _unprotect(session)
    session.execute(text("DELETE FROM audit_events WHERE id = 2"))
    for i in range(3, 7):
        session.execute(text("UPDATE audit_events SET id = :new WHERE id = :old"),
                        {"new": i - 1, "old": i})
    session.commit()
    report = audit.verify(session)
    assert (report.first_broken.seq, report.first_broken.problem) == (2, "deleted")


def test_inserted_row_is_named(session):
    _fill(session)
    _unprotect(session)
    # Make room at position 3 and insert a forged row that hashes correctly and links to row 2.
    for i in range(6, 2, -1):
        session.execute(text("UPDATE audit_events SET id = :new WHERE id = :old"),
                        {"new": i + 1, "old": i})
    row2 = session.get(AuditEvent, 2)
    forged_hash = audit.compute_hash(seq=3, occurred_at=T0, actor="forger", action="x",
                                     target=None, details={}, old_value=None, new_value=None,
                                     prev_hash=row2.row_hash)
    session.add(AuditEvent(id=3, occurred_at=T0, actor="forger", action="x", details={},
                           prev_hash=row2.row_hash, row_hash=forged_hash))
    session.commit()
    report = audit.verify(session)
    assert (report.first_broken.seq, report.first_broken.problem) == (3, "inserted")


def test_swapped_rows_are_named(session):
    _fill(session)
    _unprotect(session)
    session.execute(text("UPDATE audit_events SET id = 100 WHERE id = 4"))
    session.execute(text("UPDATE audit_events SET id = 4 WHERE id = 5"))
    session.execute(text("UPDATE audit_events SET id = 5 WHERE id = 100"))
    session.commit()
    report = audit.verify(session)
    assert (report.first_broken.seq, report.first_broken.problem) == (4, "reordered")


def test_ledger_rejects_update_and_delete(session):
    _fill(session, 2)
    for statement in ("UPDATE audit_events SET actor = 'x' WHERE id = 1",
                      "DELETE FROM audit_events WHERE id = 2"):
        with pytest.raises((DBAPIError, IntegrityError, OperationalError)):
            session.execute(text(statement))
            session.commit()
        session.rollback()
    assert audit.verify(session).ok


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_postgres_rejects_truncate_of_ledger_and_consent_records(session):
    _fill(session, 1)
    for table in ("audit_events", "consent_records"):
        with pytest.raises(DBAPIError, match="append-only"):
            session.execute(text(f"TRUNCATE {table} CASCADE"))
            session.commit()
        session.rollback()
    assert audit.verify(session).rows_checked == 1


def test_concurrent_appends_form_one_chain(db_url):
    engine = make_engine(db_url)  # configured as the app's: SQLite writers queue up
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(15):
                with Session(engine) as s:
                    audit.append(s, actor=f"w{n}", action="concurrent", details={"i": i})
                    s.commit()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with Session(engine) as s:
        report = audit.verify(s)
    engine.dispose()
    assert report.ok and report.rows_checked == 8 * 15

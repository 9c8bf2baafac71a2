"""One dispatcher tick: escalate overdue safety events and send staff alerts (first, so they
never wait behind participant work), open what is due, expire what is overdue, queue invitations and
reminders, complete ended schedules and erase contact details past retention
(app/participants/erasure.py), deliver the outbox.

Set-based: instances change state in batches, each one conditional UPDATE ... RETURNING (with
FOR UPDATE SKIP LOCKED on PostgreSQL; SQLite serializes writers) in its own transaction, and the
batch's invitations go into the outbox with one bulk INSERT ... ON CONFLICT DO NOTHING on the
message's unique dedupe key. So two schedulers running at once never open, invite or remind
twice, and a tick with tens of thousands of due surveys costs a handful of statements.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import Engine, any_, case, func, literal
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, select, update

from app.config import Settings
from app.db import UTCDateTime
from app.notify import service as notify
from app.notify.channels import Channel
from app.notify.models import OutboxMessage
from app.participants import erasure
from app.participants.models import Participant
from app.scheduling import service as scheduling
from app.studies.models import ProtocolVersion
from app.surveys.models import SurveyInstance

log = logging.getLogger("wellpanel.scheduler")
BATCH = 20_000  # instances claimed per UPDATE; each batch is its own transaction


@dataclass
class TickReport:
    planned: int = 0
    opened: int = 0
    expired: int = 0
    invitations: int = 0
    reminders: int = 0
    sent: int = 0
    failed: int = 0
    retry: int = 0
    cancelled: int = 0
    completed: int = 0  # participants whose schedule ended
    contacts_erased: int = 0  # contact details past the study's retention period
    safety_escalated: int = 0  # events past their acknowledgement deadline, escalated now
    safety_alerts_sent: int = 0  # on-call and escalation emails to staff
    safety_alerts_retry: int = 0


def tick(engine: Engine, settings: Settings, channel: Channel, *, now: datetime) -> TickReport:
    report = TickReport()
    # Safety first: escalations and staff alerts go out before the (possibly long) participant
    # work, so an alert leaves within one tick interval of the answer (app/safety/service.py).
    from app.safety import service as safety

    try:
        with Session(engine, expire_on_commit=False) as session:
            report.safety_escalated = safety.escalate_overdue(session, now=now)
        alerts = safety.deliver_alerts(engine, settings, channel, now=now)
        report.safety_alerts_sent, report.safety_alerts_retry = alerts["sent"], alerts["retry"]
    except Exception:  # the participants' work still runs; the next tick tries again
        log.exception("safety alerts failed in this tick")
    with Session(engine, expire_on_commit=False) as session:
        report.planned = scheduling.materialize_all(session, now=now)
        report.expired = expire_overdue(session, now)
        report.opened, report.invitations = open_due(session, now)
        report.reminders = queue_reminders(session, now)
        retention = erasure.erase_expired_contacts(session, now=now)
        report.completed, report.contacts_erased = retention.completed, retention.contacts_erased
    counts = notify.deliver_due(engine, settings, channel, now=now)
    for outcome, n in counts.items():
        setattr(report, outcome, n)
    log.info("tick", extra=asdict(report) | {"at": now.isoformat()})
    return report


class _Due(NamedTuple):
    participant_id: str
    schedule_entry: str
    wave: int
    scheduled_at: datetime
    closes_at: datetime


def _claim(session: Session, now: datetime, where: list, new_status: str) -> list[_Due]:  # type: ignore[type-arg]
    """Move one batch of matching instances to ``new_status`` and return them; each row is
    claimed by exactly one scheduler (SKIP LOCKED on PostgreSQL, a conditional UPDATE on
    SQLite whose transactions are serialized)."""
    due = select(SurveyInstance.id).where(*where).limit(BATCH)
    claimed = col(SurveyInstance.id).in_(due.scalar_subquery())
    if session.get_bind().dialect.name == "postgresql":
        # id = ANY(ARRAY(...)): primary-key lookups, not a second scan of every due row
        claimed = col(SurveyInstance.id) == any_(func.array(
            due.with_for_update(skip_locked=True).scalar_subquery()))
    rows = session.exec(  # type: ignore[call-overload]
        update(SurveyInstance).where(claimed, *where)
        .values(status=new_status, **({"opened_at": now} if new_status == "open" else {}))
        .returning(SurveyInstance.participant_id, SurveyInstance.schedule_entry,
                   SurveyInstance.wave, SurveyInstance.scheduled_at,
                   SurveyInstance.closes_at)).all()
    return [_Due(*row) for row in rows]


def expire_overdue(session: Session, now: datetime) -> int:
    expired = 0
    while batch := _claim(session, now, [col(SurveyInstance.status).in_(("open", "planned")),
                                         col(SurveyInstance.closes_at) <= now], "expired"):
        session.commit()
        expired += len(batch)
    session.commit()
    return expired


def open_due(session: Session, now: datetime) -> tuple[int, int]:
    """Open planned instances whose time has come and queue one invitation per occasion:
    batch by batch, one UPDATE ... RETURNING and one bulk INSERT of outbox rows each (on
    PostgreSQL both in one statement, see _open_and_queue)."""
    if session.get_bind().dialect.name == "postgresql":
        return _open_due_postgresql(session, now)
    opened = invitations = 0
    while batch := _claim(session, now, [col(SurveyInstance.status) == "planned",
                                         col(SurveyInstance.scheduled_at) <= now,
                                         col(SurveyInstance.closes_at) > now], "open"):
        invitations += _queue_many(session, now, [
            ("invitation", o, f"invitation:{o.participant_id}:{o.schedule_entry}:{o.wave}")
            for o in _one_per_occasion(batch)])
        session.commit()
        opened += len(batch)
    session.commit()
    return opened, invitations


def _open_due_postgresql(session: Session, now: datetime) -> tuple[int, int]:
    opened = invitations = 0
    while True:
        claimed, queued = session.execute(_open_and_queue(now)).one()
        session.commit()
        opened += claimed
        invitations += queued
        if claimed < BATCH:  # SKIP LOCKED found fewer: the rest is another scheduler's
            return opened, invitations


def _open_and_queue(now: datetime):  # type: ignore[no-untyped-def]
    """One batch in one statement: claim due instances (UPDATE ... RETURNING, SKIP LOCKED)
    and insert one invitation per claimed occasion from them (ON CONFLICT DO NOTHING), so the
    rows never travel to Python and back. Returns (instances claimed, invitations queued)."""
    due = [col(SurveyInstance.status) == "planned", col(SurveyInstance.scheduled_at) <= now,
           col(SurveyInstance.closes_at) > now]
    ids = select(SurveyInstance.id).where(*due).limit(BATCH).with_for_update(skip_locked=True)
    claimed = (update(SurveyInstance)
               .where(col(SurveyInstance.id) == any_(func.array(ids.scalar_subquery())), *due)
               .values(status="open", opened_at=now)
               .returning(SurveyInstance.participant_id, SurveyInstance.schedule_entry,
                          SurveyInstance.wave, SurveyInstance.closes_at)
               .cte("claimed"))
    c = claimed.c
    closes = func.min(c.closes_at)
    occasions = (select(c.participant_id, literal("invitation"),
                        func.concat("invitation:", c.participant_id, ":", c.schedule_entry,
                                    ":", c.wave),
                        literal("pending"), literal(0), literal(now, UTCDateTime),
                        literal(now, UTCDateTime),
                        func.json_build_object("entry", c.schedule_entry, "wave", c.wave,
                                               "closes_at", _isoformat_utc(closes)))
                 .group_by(c.participant_id, c.schedule_entry, c.wave)
                 # one insertion order for every scheduler: no deadlock on a shared key
                 .order_by(c.participant_id, c.schedule_entry, c.wave))
    queued = (pg_insert(OutboxMessage)
              .from_select(["participant_id", "kind", "dedupe_key", "status", "attempts",
                            "next_attempt_at", "created_at", "payload"], occasions)
              .on_conflict_do_nothing(index_elements=["dedupe_key"])
              .returning(OutboxMessage.id)
              .cte("queued"))
    return select(select(func.count()).select_from(claimed).scalar_subquery(),
                  select(func.count()).select_from(queued).scalar_subquery())


def _isoformat_utc(moment):  # type: ignore[no-untyped-def]
    """SQL for Python's datetime.isoformat() of a UTC timestamptz (the payload's format):
    2026-11-02T09:00:00+00:00, with .ffffff only when there are microseconds."""
    utc = func.timezone("UTC", moment)
    micros = func.to_char(utc, "US")
    return (func.to_char(utc, 'YYYY-MM-DD"T"HH24:MI:SS')
            + case((micros == "000000", ""), else_="." + micros) + "+00:00")


def _one_per_occasion(instances: Iterable[_Due]) -> list[_Due]:
    seen: dict[tuple[str, str, int], _Due] = {}
    for instance in instances:
        seen.setdefault((instance.participant_id, instance.schedule_entry, instance.wave),
                        instance)
    return list(seen.values())


def _queue_many(session: Session, now: datetime, messages: list[tuple[str, _Due, str]]) -> int:
    """Queue outbox messages in one bulk INSERT, skipping dedupe keys already queued (by this
    scheduler or another one); returns how many were new."""
    if not messages:
        return 0
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    statement = insert(OutboxMessage).on_conflict_do_nothing(
        index_elements=["dedupe_key"]).returning(OutboxMessage.id)
    rows = [{"participant_id": o.participant_id, "kind": kind, "dedupe_key": key,
             "status": "pending", "attempts": 0, "next_attempt_at": now, "created_at": now,
             "payload": {"entry": o.schedule_entry, "wave": o.wave,
                         "closes_at": o.closes_at.isoformat()}}
            for kind, o, key in messages]
    return len(session.exec(statement, params=rows).all())  # type: ignore[call-overload]


def queue_reminders(session: Session, now: datetime) -> int:
    """Queue each due reminder of an occasion that still has unanswered surveys, once."""
    entries = _entries_by_study_version(session)
    earliest = min((h for e in entries.values() for h in e.get("reminders_hours", [])),
                   default=None)
    if earliest is None:
        return 0
    occasions = session.exec(
        select(Participant.study_id, SurveyInstance.protocol_version,
               SurveyInstance.participant_id, SurveyInstance.schedule_entry, SurveyInstance.wave,
               SurveyInstance.scheduled_at, SurveyInstance.closes_at)
        .join(Participant, col(Participant.id) == col(SurveyInstance.participant_id))
        .where(SurveyInstance.status == "open", col(SurveyInstance.closes_at) > now,
               col(SurveyInstance.scheduled_at) <= now - timedelta(hours=earliest))
        .distinct()).all()
    messages = []
    for study_id, version, *occasion in occasions:
        o = _Due(*occasion)
        for hours in entries.get((study_id, version, o.schedule_entry), {}).get(
                "reminders_hours", []):
            if o.scheduled_at + timedelta(hours=hours) <= now:
                messages.append(("reminder", o, f"reminder:{o.participant_id}:"
                                                f"{o.schedule_entry}:{o.wave}:{hours}"))
    queued = 0
    for first in range(0, len(messages), BATCH):
        queued += _queue_many(session, now, messages[first:first + BATCH])
    session.commit()
    return queued


def _entries_by_study_version(session: Session) -> dict[tuple[int, int, str], dict]:  # type: ignore[type-arg]
    """(study id, protocol version, entry name) -> the schedule entry, for every protocol."""
    return {(p.study_id, p.version, e["name"]): e
            for p in session.exec(select(ProtocolVersion)).all()
            for e in p.content["study"].get("schedule", {}).get("entries", [])}

"""One dispatcher tick: open what is due, expire what is overdue, queue invitations and
reminders, deliver the outbox.

Every state change is a conditional UPDATE ... RETURNING (with FOR UPDATE SKIP LOCKED on
PostgreSQL), and every queued message has a unique dedupe key, so two schedulers running at once
never open, invite or remind twice.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine
from sqlmodel import Session, col, select, update

from app.config import Settings
from app.notify import service as notify
from app.notify.channels import Channel
from app.scheduling import service as scheduling
from app.surveys.models import SurveyInstance

log = logging.getLogger("wellpanel.scheduler")
BATCH = 1000


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


def tick(engine: Engine, settings: Settings, channel: Channel, *, now: datetime) -> TickReport:
    report = TickReport()
    with Session(engine, expire_on_commit=False) as session:
        report.planned = scheduling.materialize_all(session, now=now)
        report.expired = expire_overdue(session, now)
        report.opened, report.invitations = open_due(session, now)
        report.reminders = queue_reminders(session, now)
    counts = notify.deliver_due(engine, settings, channel, now=now)
    for outcome, n in counts.items():
        setattr(report, outcome, n)
    log.info("tick", extra=asdict(report) | {"at": now.isoformat()})
    return report


def _claim(session: Session, now: datetime, where: list, new_status: str) -> list[SurveyInstance]:  # type: ignore[type-arg]
    due = select(SurveyInstance.id).where(*where).limit(BATCH)
    if session.get_bind().dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    ids = session.exec(  # type: ignore[call-overload]
        update(SurveyInstance).where(col(SurveyInstance.id).in_(due.scalar_subquery()), *where)
        .values(status=new_status, **({"opened_at": now} if new_status == "open" else {}))
        .returning(SurveyInstance.id)).all()
    if not ids:
        return []
    return list(session.exec(select(SurveyInstance).where(
        col(SurveyInstance.id).in_([i[0] for i in ids]))).all())


def expire_overdue(session: Session, now: datetime) -> int:
    expired = _claim(session, now, [col(SurveyInstance.status).in_(("open", "planned")),
                                    col(SurveyInstance.closes_at) <= now], "expired")
    session.commit()
    return len(expired)


def open_due(session: Session, now: datetime) -> tuple[int, int]:
    """Open planned instances whose time has come and queue one invitation per occasion."""
    opened = _claim(session, now, [col(SurveyInstance.status) == "planned",
                                   col(SurveyInstance.scheduled_at) <= now,
                                   col(SurveyInstance.closes_at) > now], "open")
    invitations = 0
    for instance in _one_per_occasion(opened):
        queued = notify.queue(
            session, instance.participant_id, "invitation", now=now,
            dedupe_key=f"invitation:{instance.participant_id}:{instance.schedule_entry}:"
                       f"{instance.wave}",
            payload={"entry": instance.schedule_entry, "wave": instance.wave,
                     "closes_at": instance.closes_at.isoformat()})
        invitations += queued is not None
    session.commit()
    return len(opened), invitations


def _one_per_occasion(instances: list[SurveyInstance]) -> list[SurveyInstance]:
    seen: dict[tuple[str, str, int], SurveyInstance] = {}
    for instance in instances:
        seen.setdefault((instance.participant_id, instance.schedule_entry, instance.wave),
                        instance)
    return list(seen.values())


def queue_reminders(session: Session, now: datetime) -> int:
    """Queue each due reminder of an occasion that still has unanswered surveys, once."""
    open_rows = session.exec(select(SurveyInstance).where(
        SurveyInstance.status == "open", col(SurveyInstance.closes_at) > now)).all()
    entries_cache: dict[tuple[str, int], dict] = {}  # type: ignore[type-arg]
    queued = 0
    for instance in _one_per_occasion(list(open_rows)):
        entry = _entry(session, instance, entries_cache)
        for hours in (entry or {}).get("reminders_hours", []):
            if instance.scheduled_at + timedelta(hours=hours) > now:
                continue
            message = notify.queue(
                session, instance.participant_id, "reminder", now=now,
                dedupe_key=f"reminder:{instance.participant_id}:{instance.schedule_entry}:"
                           f"{instance.wave}:{hours}",
                payload={"entry": instance.schedule_entry, "wave": instance.wave,
                         "closes_at": instance.closes_at.isoformat()})
            queued += message is not None
    session.commit()
    return queued


def _entry(session: Session, instance: SurveyInstance, cache: dict) -> dict | None:  # type: ignore[type-arg]
    from app.surveys.service import protocol_of

    key = (instance.participant_id, instance.protocol_version)  # one study per participant
    if key not in cache:
        protocol = protocol_of(session, instance)
        cache[key] = {e["name"]: e for e in
                      protocol.content["study"].get("schedule", {}).get("entries", [])}
    return cache[key].get(instance.schedule_entry)



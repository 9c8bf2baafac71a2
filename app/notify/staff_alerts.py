"""Alerts to staff (e.g. a safety event for the on-call clinician): an outbox of their own, sent
over the participants' channel (SMTP).

Queued in the caller's transaction with a unique dedupe key (INSERT ... ON CONFLICT DO NOTHING),
so whatever queues twice queues once. Delivery claims due rows (SKIP LOCKED on PostgreSQL) under
a lease, as the participant outbox does (app/notify/service.py): a claim token and `lease_until`
on the real clock. The holder renews the lease right before it sends and sends only while the
token is still its own, so two deliverers (the API right after an answer, the scheduler's tick)
never send the same alert, and an alert whose holder died goes out once after its lease ran out.
An SMTP failure puts it back to `pending`: the next tick tries again, later ones at growing
intervals up to RETRY_CAP; an alert is never given up.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import Engine, and_, or_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, func, select, update

from app.config import Settings
from app.db import utcnow
from app.notify.channels import Channel, Message
from app.notify.models import StaffAlert
from app.notify.service import scrub_error

log = logging.getLogger("wellpanel.notify")

RETRY_BASE = timedelta(minutes=1)
RETRY_CAP = timedelta(minutes=5)

# The text of an alert, made at send time; a str instead says why it is no longer to be sent.
Renderer = Callable[[Session, StaffAlert, Settings, datetime], "Message | str"]
AfterSend = Callable[[Session, StaffAlert, datetime], None]


def queue(session: Session, *, kind: str, subject_ref: str, recipient_name: str,
          recipient: str, dedupe_key: str, now: datetime) -> bool:
    """Queue one alert unless its dedupe key is queued already; True when it is new. The
    caller commits."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = insert(StaffAlert).values(
        kind=kind, subject_ref=subject_ref, recipient_name=recipient_name, recipient=recipient,
        dedupe_key=dedupe_key, status="pending", attempts=0, next_attempt_at=now,
        created_at=now).on_conflict_do_nothing(index_elements=["dedupe_key"]).returning(
        StaffAlert.id)
    return session.exec(statement).first() is not None  # type: ignore[call-overload]


def claim_due(session: Session, now: datetime, limit: int, *, token: str,
              lease: timedelta) -> list[int]:
    """Claim due alerts (pending ones, and `sending` ones whose lease ran out) for `token`.
    `now` is the study clock (when an alert is due); the lease is on the real clock."""
    wall = utcnow()
    due_now = or_(and_(col(StaffAlert.status) == "pending", col(StaffAlert.next_attempt_at) <= now),
                  and_(col(StaffAlert.status) == "sending", or_(
                      col(StaffAlert.lease_until).is_(None), col(StaffAlert.lease_until) <= wall)))
    due = select(StaffAlert.id).where(due_now).order_by(col(StaffAlert.id)).limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    ids = list(session.exec(due).all())  # then mark: see notify.service.claim_due
    claimed = session.exec(  # type: ignore[call-overload]
        update(StaffAlert).where(col(StaffAlert.id).in_(ids), due_now)
        .values(status="sending", attempts=StaffAlert.attempts + 1, claimed_at=wall,
                claim_token=token, lease_until=wall + lease)
        .returning(StaffAlert.id)).all() if ids else []
    session.commit()
    return sorted(row[0] for row in claimed)


def _renew_lease(session: Session, alert_id: int, token: str, lease: timedelta) -> bool:
    """Extend our lease right before sending; False when the alert is no longer ours."""
    result = session.exec(update(StaffAlert).where(  # type: ignore[call-overload]
        col(StaffAlert.id) == alert_id, col(StaffAlert.status) == "sending",
        col(StaffAlert.claim_token) == token).values(lease_until=utcnow() + lease))
    session.commit()
    return bool(result.rowcount)


def deliver_due(engine: Engine, settings: Settings, channel: Channel, render: Renderer, *,
                now: datetime, after_send: AfterSend | None = None, limit: int = 200
                ) -> dict[str, int]:
    """Send every due alert once; counts by outcome (sent, retry, cancelled, lost: claimed by
    another deliverer after our lease ran out)."""
    counts = {"sent": 0, "retry": 0, "cancelled": 0, "lost": 0}
    token, lease = uuid.uuid4().hex, timedelta(seconds=settings.outbox_lease_seconds)
    with Session(engine, expire_on_commit=False) as session:
        ids = claim_due(session, now, limit, token=token, lease=lease)
    for alert_id in ids:
        outcome = _deliver_one(engine, settings, channel, render, after_send, alert_id, now,
                               token, lease)
        counts[outcome] += 1
    return counts


def _deliver_one(engine: Engine, settings: Settings, channel: Channel, render: Renderer,
                 after_send: AfterSend | None, alert_id: int, now: datetime, token: str,
                 lease: timedelta) -> str:
    with Session(engine, expire_on_commit=False) as session:
        alert = session.get(StaffAlert, alert_id)
        assert alert is not None
        if alert.claim_token != token:
            return "lost"
        try:
            rendered = render(session, alert, settings, now)
            if isinstance(rendered, str):
                alert.status, alert.last_error = "cancelled", rendered
                alert.claim_token = alert.lease_until = None
                session.add(alert)
                session.commit()
                return "cancelled"
            if not _renew_lease(session, alert_id, token, lease):
                log.warning("staff alert lease lost, left to its new sender",
                            extra={"alert_id": alert_id})
                return "lost"
            channel.send(rendered)
        except Exception as exc:  # noqa: BLE001 - recorded and retried, never raised
            session.rollback()
            return _retry_later(session, alert_id, exc, now)
        alert.status, alert.sent_at, alert.last_error = "sent", now, None
        alert.claim_token = alert.lease_until = None
        session.add(alert)
        if after_send is not None:
            after_send(session, alert, now)
        session.commit()
        log.info("staff alert sent", extra={"alert_id": alert_id, "kind": alert.kind})
        return "sent"


def _retry_later(session: Session, alert_id: int, exc: Exception, now: datetime) -> str:
    alert = session.get(StaffAlert, alert_id)
    assert alert is not None
    alert.status = "pending"
    alert.claim_token = alert.lease_until = None
    alert.last_error = f"{type(exc).__name__}: {scrub_error(str(exc))}"[:500]
    alert.next_attempt_at = now + retry_delay(alert.attempts)
    session.add(alert)
    session.commit()
    log.warning("staff alert not sent, will retry",
                extra={"alert_id": alert_id, "kind": alert.kind, "error": type(exc).__name__})
    return "retry"


def retry_delay(attempts: int) -> timedelta:
    """After a first failure (often the API's send right after the answer) the next tick tries
    again; then 1, 2, 4 and at most 5 minutes apart, for as long as it takes."""
    if attempts <= 1:
        return timedelta(0)
    return min(RETRY_BASE * (2 ** (attempts - 2)), RETRY_CAP)


def cancel_pending(session: Session, subject_ref: str, reason: str) -> int:
    """Cancel what is still to be sent about a subject (e.g. an erased event); caller commits."""
    result = session.exec(update(StaffAlert).where(  # type: ignore[call-overload]
        col(StaffAlert.subject_ref) == subject_ref, col(StaffAlert.status) == "pending")
        .values(status="cancelled", last_error=reason))
    return int(result.rowcount)


def for_subjects(session: Session, subject_refs: list[str]) -> list[StaffAlert]:
    """Every alert about the given subjects, oldest first."""
    if not subject_refs:
        return []
    return list(session.exec(select(StaffAlert).where(
        col(StaffAlert.subject_ref).in_(subject_refs)).order_by(col(StaffAlert.id))).all())


def undelivered(session: Session) -> int:
    """Alerts waiting for a retry after a failed attempt (for the metrics)."""
    return session.exec(select(func.count()).select_from(StaffAlert).where(
        col(StaffAlert.status) == "pending", col(StaffAlert.attempts) > 0)).one()

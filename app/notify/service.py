"""The outbox: queue messages in the caller's transaction, deliver them exactly once.

Delivery claims rows with one UPDATE ... RETURNING (with FOR UPDATE SKIP LOCKED on PostgreSQL;
SQLite transactions are serialized), so two deliverers never send the same message. A message is
marked `sending` before it leaves; one that crashed mid-send stays visible as `sending` instead of
being sent again.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select, update

from app.config import Settings
from app.db import utcnow
from app.notify.channels import Channel, Message
from app.notify.models import OutboxMessage

log = logging.getLogger("wellpanel.notify")

MAX_ATTEMPTS = 6
BACKOFF_BASE = timedelta(minutes=1)


def queue(
    session: Session, participant_id: str, kind: str, *, dedupe_key: str, now: datetime,
    payload: dict[str, Any] | None = None,
) -> OutboxMessage | None:
    """Add a message unless one with the same dedupe key exists (the caller commits)."""
    if session.exec(select(OutboxMessage.id).where(OutboxMessage.dedupe_key == dedupe_key)).first():
        return None
    message = OutboxMessage(participant_id=participant_id, kind=kind, dedupe_key=dedupe_key,
                            next_attempt_at=now, created_at=now, payload=payload or {})
    session.add(message)
    return message


def cancel_pending(session: Session, participant_id: str, *, now: datetime) -> int:
    result = session.exec(  # type: ignore[call-overload]
        update(OutboxMessage)
        .where(col(OutboxMessage.participant_id) == participant_id,
               col(OutboxMessage.status) == "pending")
        .values(status="cancelled", last_error="participant withdrew")
    )
    return result.rowcount


def claim_due(session: Session, now: datetime, limit: int) -> list[int]:
    due = (select(OutboxMessage.id)
           .where(col(OutboxMessage.status) == "pending", col(OutboxMessage.next_attempt_at) <= now)
           .order_by(col(OutboxMessage.id)).limit(limit))
    if session.get_bind().dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    claimed = session.exec(  # type: ignore[call-overload]
        update(OutboxMessage)
        .where(col(OutboxMessage.id).in_(due.scalar_subquery()),
               col(OutboxMessage.status) == "pending")
        .values(status="sending", attempts=OutboxMessage.attempts + 1)
        .returning(OutboxMessage.id)
    ).all()
    session.commit()
    return sorted(row[0] for row in claimed)


Renderer = Callable[[Session, OutboxMessage, datetime, Settings], Message | None]


def deliver_due(
    engine: Engine, settings: Settings, channel: Channel, *, now: datetime | None = None,
    limit: int = 200,
) -> dict[str, int]:
    """Send every due message once; returns counts by outcome."""
    from app.notify.render import render_message

    now = now or utcnow()
    counts = {"sent": 0, "failed": 0, "retry": 0, "cancelled": 0}
    with Session(engine, expire_on_commit=False) as session:
        ids = claim_due(session, now, limit)
    for message_id in ids:
        outcome = _deliver_one(engine, settings, channel, message_id, now, render_message)
        counts[outcome] += 1
    return counts


def _deliver_one(
    engine: Engine, settings: Settings, channel: Channel, message_id: int, now: datetime,
    render: Renderer,
) -> str:
    with Session(engine, expire_on_commit=False) as session:
        message = session.get(OutboxMessage, message_id)
        assert message is not None
        try:
            rendered = render(session, message, now, settings)
            if rendered is None:
                message.status, message.last_error = "cancelled", "participant not reachable"
                session.add(message)
                session.commit()
                return "cancelled"
            channel.send(rendered)
        except Exception as exc:  # noqa: BLE001 - any delivery failure is recorded, not raised
            session.rollback()
            return _record_failure(session, message_id, exc, now)
        message.status, message.sent_at, message.last_error = "sent", now, None
        session.add(message)
        session.commit()
        log.info("message sent", extra={"message_id": message_id, "kind": message.kind})
        return "sent"


def _record_failure(session: Session, message_id: int, exc: Exception, now: datetime) -> str:
    message = session.get(OutboxMessage, message_id)
    assert message is not None
    # The error class and a short reason only: SMTP errors can echo the address.
    message.last_error = f"{type(exc).__name__}: {_redact(str(exc))}"[:500]
    if message.attempts >= MAX_ATTEMPTS:
        message.status = "failed"
        outcome = "failed"
    else:
        message.status = "pending"
        message.next_attempt_at = now + BACKOFF_BASE * (2 ** (message.attempts - 1))
        outcome = "retry"
    session.add(message)
    session.commit()
    log.warning("message not sent", extra={"message_id": message_id, "outcome": outcome,
                                            "error": type(exc).__name__})
    return outcome


def _redact(text_: str) -> str:
    return re.sub(r"[^\s<>@]+@[^\s<>@]+", "<address>", text_)

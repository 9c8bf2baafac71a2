"""The outbox: queue messages in the caller's transaction, deliver them exactly once.

Delivery claims rows with one UPDATE ... RETURNING (with FOR UPDATE SKIP LOCKED on PostgreSQL;
SQLite transactions are serialized), so two deliverers never send the same message. A claimed
row is `sending` under a lease: a random claim token and `lease_until`, measured on the real
clock (it times processes, not the study). The holder renews the lease right before each send
and sends only while the token is still its own; a row whose holder died (killed, restarted)
comes back when the lease runs out and is claimed by the next deliverer. SMTP timeouts (shorter
than the lease, see Settings) bound each send, so a live holder never loses a lease mid-send; a
message that was already handed to the server when its sender died keeps its Message-ID
(derived from the dedupe key) when it is sent again.

A batch goes over one SMTP connection (app/notify/channels.py SMTPBatch): a connection the
server drops between messages is opened again once; a refusal of one message leaves the rest
of the batch going. When the mail server does not answer (timeout, refused or dropped
connection) the rest of the batch goes back to pending at once, so a dead server costs one
timeout per batch, not one per message.
"""

from __future__ import annotations

import logging
import re
import smtplib
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func
from sqlmodel import Session, and_, col, or_, select, update

from app.config import Settings
from app.db import utcnow
from app.notify import bounces
from app.notify.channels import Channel, Message
from app.notify.models import NotificationCount, NotificationFailure, OutboxMessage

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


def queued_since(session: Session, participant_id: str, kind: str, since: datetime
                 ) -> list[tuple[str, datetime]]:
    """(dedupe key, queued at) of the participant's messages of ``kind`` queued after ``since``,
    whatever became of them: for callers that limit how often something may be asked for."""
    rows = session.exec(select(OutboxMessage.dedupe_key, OutboxMessage.created_at).where(
        OutboxMessage.participant_id == participant_id, OutboxMessage.kind == kind,
        col(OutboxMessage.created_at) > since)).all()
    return [(key, at) for key, at in rows]


def cancel_pending(session: Session, participant_id: str, *, now: datetime) -> int:
    result = session.exec(  # type: ignore[call-overload]
        update(OutboxMessage)
        .where(col(OutboxMessage.participant_id) == participant_id,
               col(OutboxMessage.status) == "pending")
        .values(status="cancelled", last_error="participant withdrew")
    )
    return result.rowcount


def claim_due(session: Session, now: datetime, limit: int, *, token: str | None = None,
              lease: timedelta = timedelta(minutes=5)) -> list[int]:
    """Claim due messages (pending ones, and `sending` ones whose lease ran out) for
    ``token``; returns their ids. ``now`` is the study clock (when a message is due), the
    lease is on the real clock."""
    wall = utcnow()
    due_now = or_(and_(col(OutboxMessage.status) == "pending",
                       col(OutboxMessage.next_attempt_at) <= now),
                  and_(col(OutboxMessage.status) == "sending",
                       col(OutboxMessage.lease_until) <= wall))
    due = select(OutboxMessage.id).where(due_now).order_by(col(OutboxMessage.id)).limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    # Pick, then mark, in two statements: PostgreSQL may run an `IN (SELECT ... LIMIT n FOR
    # UPDATE SKIP LOCKED)` subquery more than once, each time skipping rows it locked before,
    # and so claim more than `limit` rows (H-jobs saw this with the jobs table).
    ids = list(session.exec(due).all())
    if not ids:
        session.commit()
        return []
    claimed = session.exec(  # type: ignore[call-overload]
        update(OutboxMessage)
        .where(col(OutboxMessage.id).in_(ids), due_now)
        .values(status="sending", attempts=OutboxMessage.attempts + 1,
                claim_token=token or uuid.uuid4().hex, claimed_at=wall,
                lease_until=wall + lease)
        .returning(OutboxMessage.id)
    ).all()
    session.commit()
    return sorted(row[0] for row in claimed)


def _renew_lease(session: Session, message_id: int, token: str, lease: timedelta) -> bool:
    """Extend our lease on a message right before sending it; False when it is no longer ours
    (our lease ran out and another sender claimed it)."""
    result = session.exec(  # type: ignore[call-overload]
        update(OutboxMessage)
        .where(col(OutboxMessage.id) == message_id, col(OutboxMessage.status) == "sending",
               col(OutboxMessage.claim_token) == token)
        .values(lease_until=utcnow() + lease))
    session.commit()
    return bool(result.rowcount)


def _release(session: Session, message_ids: list[int], token: str) -> int:
    """Give claimed, unattempted messages back (pending, the attempt not counted)."""
    if not message_ids:
        return 0
    result = session.exec(  # type: ignore[call-overload]
        update(OutboxMessage)
        .where(col(OutboxMessage.id).in_(message_ids), col(OutboxMessage.status) == "sending",
               col(OutboxMessage.claim_token) == token)
        .values(status="pending", attempts=OutboxMessage.attempts - 1, claim_token=None,
                lease_until=None))
    session.commit()
    return int(result.rowcount)


# The server itself is unreachable or silent: no point trying the rest of the batch now.
SERVER_DOWN = (TimeoutError, ConnectionError, smtplib.SMTPServerDisconnected,
               smtplib.SMTPConnectError)


Renderer = Callable[[Session, OutboxMessage, datetime, Settings], Message | None]


def deliver_due(
    engine: Engine, settings: Settings, channel: Channel, *, now: datetime | None = None,
    limit: int = 200,
) -> dict[str, int]:
    """Send every due message once; returns counts by outcome."""
    from app.notify.render import render_message

    now = now or utcnow()
    counts = {"sent": 0, "failed": 0, "retry": 0, "cancelled": 0}
    token, lease = uuid.uuid4().hex, timedelta(seconds=settings.outbox_lease_seconds)
    with Session(engine, expire_on_commit=False) as session:
        ids = claim_due(session, now, limit, token=token, lease=lease)
    if not ids:
        return counts
    # One SMTP connection for the whole batch (opened at its first message; see SMTPBatch).
    with _batch(channel) as sender:
        for position, message_id in enumerate(ids):
            try:
                outcome = _deliver_one(engine, settings, sender, message_id, now,
                                       render_message, token, lease)
            except _ServerDown:
                counts["retry"] += 1
                with Session(engine) as session:
                    counts["retry"] += _release(session, ids[position + 1:], token)
                break
            if outcome is not None:
                counts[outcome] += 1
    return counts


def _batch(channel: Channel) -> AbstractContextManager[Channel]:
    """The channel's batch connection when it has one (SMTP), else the channel itself."""
    batch = getattr(channel, "batch", None)
    return batch() if batch is not None else nullcontext(channel)


class _ServerDown(Exception):
    """The mail server did not answer; the failure of this message is recorded already."""


def _deliver_one(
    engine: Engine, settings: Settings, channel: Channel, message_id: int, now: datetime,
    render: Renderer, token: str, lease: timedelta,
) -> str | None:
    """Send one claimed message; the outcome, or None when it is no longer ours to send."""
    with Session(engine, expire_on_commit=False) as session:
        message = session.get(OutboxMessage, message_id)
        assert message is not None
        if message.claim_token != token:
            return None
        rendered: Message | None = None
        try:
            rendered = render(session, message, now, settings)
            if rendered is None:
                message.status, message.last_error = "cancelled", "participant not reachable"
                message.claim_token = message.lease_until = None
                session.add(message)
                session.commit()
                return "cancelled"
            if not _renew_lease(session, message_id, token, lease):
                log.warning("message lease lost, left to its new sender",
                            extra={"message_id": message_id})
                return None
            channel.send(replace(rendered, key=message.dedupe_key))
        except Exception as exc:  # noqa: BLE001 - any delivery failure is recorded, not raised
            session.rollback()
            code = bounces.permanent_code(exc)
            if code is not None and rendered is not None:
                return _record_undeliverable(session, message_id, exc, code, rendered.to,
                                             settings, now)
            outcome = _record_failure(session, message_id, exc, now)
            if isinstance(exc, SERVER_DOWN):
                raise _ServerDown from exc
            return outcome
        message.status, message.sent_at, message.last_error = "sent", now, None
        message.claim_token = message.lease_until = None
        session.add(message)
        session.commit()
        log.info("message sent", extra={"message_id": message_id, "kind": message.kind})
        return "sent"


def _record_failure(session: Session, message_id: int, exc: Exception, now: datetime) -> str:
    message = session.get(OutboxMessage, message_id)
    assert message is not None
    # The error class and a short reason only: SMTP errors can echo the address.
    message.last_error = f"{type(exc).__name__}: {scrub_error(str(exc))}"[:500]
    if message.attempts >= MAX_ATTEMPTS:
        message.status = "failed"
        outcome = "failed"
    else:
        message.status = "pending"
        message.claim_token = message.lease_until = None
        message.next_attempt_at = now + BACKOFF_BASE * (2 ** (message.attempts - 1))
        outcome = "retry"
    session.add(message)
    session.commit()
    log.warning("message not sent", extra={"message_id": message_id, "outcome": outcome,
                                            "error": type(exc).__name__})
    return outcome


def _record_undeliverable(session: Session, message_id: int, exc: Exception, code: int,
                          address: str, settings: Settings, now: datetime) -> str:
    """A 5xx to RCPT or DATA: the message fails at once (no retries) and the address is marked
    undeliverable (app/notify/bounces.py); nothing more goes to it until it is changed."""
    message = session.get(OutboxMessage, message_id)
    assert message is not None
    message.last_error = f"{type(exc).__name__}: {scrub_error(str(exc))}"[:500]
    message.status = "failed"
    message.claim_token = message.lease_until = None
    session.add(message)
    bounces.mark_undeliverable(session, message.participant_id, address, code=code,
                               source="smtp", secret_key=settings.secret_key, now=now)
    session.commit()
    log.warning("message not sent", extra={"message_id": message_id, "outcome": "undeliverable",
                                            "smtp_code": code, "error": type(exc).__name__})
    return "failed"


# Anything that looks like an address: a word with an @ (plain or URL-encoded) in it.
_ADDRESS_LIKE = re.compile(r"[^\s,;]*(?:@|%40)[^\s,;]*", re.IGNORECASE)


def scrub_error(text_: str | None) -> str | None:
    """An error text without addresses (SMTP servers echo recipients in their replies)."""
    return None if text_ is None else _ADDRESS_LIKE.sub("<address>", text_)


# ---- for researchers: what did not go out --------------------------------------------------
# Used by GET /api/v1/researcher/notifications and meant for console pages too.

def status_counts(session: Session) -> list[NotificationCount]:
    """How many outbox messages there are by kind and status."""
    rows = session.exec(
        select(OutboxMessage.kind, OutboxMessage.status, func.count())
        .group_by(col(OutboxMessage.kind), col(OutboxMessage.status))
        .order_by(col(OutboxMessage.kind), col(OutboxMessage.status))).all()
    return [NotificationCount(kind=kind, status=status, count=n) for kind, status, n in rows]


def list_failures(session: Session, secret_key: str, *, limit: int = 200
                  ) -> list[NotificationFailure]:
    """Failed messages and pending ones whose last attempt failed, newest first.

    Participants appear under their IRB pseudonym (keyed by ``secret_key``); error texts are
    scrubbed of anything that looks like an address.
    """
    from app.consent.service import irb_pseudonym

    rows = session.exec(
        select(OutboxMessage)
        .where(or_(col(OutboxMessage.status) == "failed",
                   (col(OutboxMessage.status) == "pending")
                   & col(OutboxMessage.last_error).is_not(None)))
        .order_by(col(OutboxMessage.created_at).desc(), col(OutboxMessage.id).desc())
        .limit(limit)).all()
    return [NotificationFailure(
        id=m.id, kind=m.kind, status=m.status, attempts=m.attempts,  # type: ignore[arg-type]
        last_error=scrub_error(m.last_error), created_at=m.created_at,
        next_attempt_at=m.next_attempt_at, pseudonym=irb_pseudonym(secret_key, m.participant_id))
        for m in rows]

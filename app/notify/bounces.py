"""Addresses that cannot receive mail (#15 part 4).

A permanent refusal (an SMTP 5xx to RCPT or DATA while sending, or a provider's bounce
notification posted to the webhook) marks the participant's address undeliverable: the time,
the SMTP code and where it was learned, and a keyed hash of the refused address, never the
address. Nothing more goes to that address; once the participant changes their address (the
hash no longer matches) mail flows again. Researchers see a count and a list by IRB pseudonym
(GET /api/v1/researcher/notifications, the console's Notifications page). A 4xx is no such
thing: the message is retried (app/notify/service.py).

The webhook (POST /api/v1/notify/bounces, off unless WELLPANEL_BOUNCE_WEBHOOK_SECRET is set)
takes the minimal JSON most providers can be mapped to:
    {"email": "person@example.org", "type": "permanent", "code": 550}
`type` is "permanent" (marks the address) or "transient" (ignored: the outbox retries); `code`
is optional. The shared secret comes as `Authorization: Bearer <secret>`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import smtplib
from datetime import datetime

from sqlmodel import Session, col, select

from app.notify.models import MailContact, UndeliverableContact, UndeliverableReport

log = logging.getLogger("wellpanel.notify")

SOURCES = ("smtp", "webhook", "dsn")  # refused while sending; a provider; the bounce mailbox
AUDIT_ACTORS = {"smtp": "mail-server", "webhook": "bounce-webhook", "dsn": "bounce-mailbox"}


def address_key(secret_key: str, address: str) -> str:
    """A keyed hash of an address: tells whether the refused address is still the one in use
    without keeping it."""
    return hmac.new(secret_key.encode(), b"wellpanel-address\0" + address.strip().lower()
                    .encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()


def permanent_code(exc: BaseException) -> int | None:
    """The SMTP code when the server refused the recipient (RCPT) or the message (DATA) for
    good (5xx), else None. A 5xx to MAIL FROM is about our sender, not the participant."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        return codes[0] if codes and all(500 <= c < 600 for c in codes) else None
    if isinstance(exc, smtplib.SMTPDataError) and 500 <= exc.smtp_code < 600:
        return exc.smtp_code
    return None


def mark_undeliverable(session: Session, participant_id: str, address: str, *, code: int | None,
                       source: str, secret_key: str, now: datetime) -> None:
    """Record that `address` refuses mail for good (audited; the caller commits)."""
    from app.audit import service as audit
    from app.notify.unsubscribe import ensure_row

    ensure_row(session, participant_id, now)
    row = session.get(MailContact, participant_id)
    assert row is not None
    row.undeliverable_at, row.undeliverable_code = now, code
    row.undeliverable_source, row.updated_at = source, now
    row.undeliverable_address = address_key(secret_key, address)
    session.add(row)
    audit.append(session, actor=AUDIT_ACTORS[source],
                 action="participant.email_undeliverable",
                 target=f"participant:{participant_id}",
                 details={"code": code, "source": source}, now=now)
    log.warning("address undeliverable", extra={"code": code, "source": source})


def is_undeliverable(session: Session, participant_id: str, address: str,
                     secret_key: str) -> bool:
    row = session.get(MailContact, participant_id)
    return (row is not None and row.undeliverable_at is not None
            and row.undeliverable_address == address_key(secret_key, address))


def report(session: Session, secret_key: str, *, limit: int = 200) -> UndeliverableReport:
    """Participants whose current address was refused for good, newest first (by IRB
    pseudonym; an address changed since does not count)."""
    from app.consent.service import irb_pseudonym
    from app.participants import service as participants

    rows = session.exec(select(MailContact).where(col(MailContact.undeliverable_at).is_not(None))
                        .order_by(col(MailContact.undeliverable_at).desc())).all()
    current = [row for row in rows if row.undeliverable_address == _current_key(
        participants.contact_address(session, row.participant_id), secret_key)]
    return UndeliverableReport(count=len(current), contacts=[UndeliverableContact(
        pseudonym=irb_pseudonym(secret_key, row.participant_id),
        since=row.undeliverable_at,  # type: ignore[arg-type]
        code=row.undeliverable_code, source=row.undeliverable_source or "smtp")
        for row in current[:limit]])


def _current_key(address: str | None, secret_key: str) -> str | None:
    return None if address is None else address_key(secret_key, address)


def bounce_reported(session: Session, address: str, kind: str, code: int | None, *,
                    secret_key: str, now: datetime, source: str = "webhook") -> int:
    """A bounce reported after sending (a provider's webhook, a DSN in the bounce mailbox): a
    permanent one marks every participant using the address (in any study); returns how many.
    The caller commits."""
    from app.participants import service as participants

    if kind != "permanent":
        return 0
    ids = participants.participants_with_address(session, address)
    for participant_id in ids:
        mark_undeliverable(session, participant_id, address, code=code, source=source,
                           secret_key=secret_key, now=now)
    return len(ids)

"""The signed consent copy by email: sent once on signing, again when the participant asks.

The outbox row holds only the consent record's id; the PDF is built when the message is sent
(app/notify/render.py), in the language of the document that was signed, and the address is
looked up then too, so a withdrawn participant or an erased address gets nothing.

Asking again is deduplicated (a double click, a reload or a resubmitted form within
``RESEND_GAP`` queues one message) and limited to ``COPY_EMAILS_PER_DAY`` per participant.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from app.consent.models import ConsentRecordPublic
from app.core.errors import AppError, Conflict
from app.notify.channels import Attachment
from app.participants.models import Participant

KIND = "consent_copy"
COPY_EMAILS_PER_DAY = 3  # per participant, the one sent on signing included
RESEND_GAP = timedelta(minutes=10)


class CopyEmailLimit(AppError):
    status_code = 429
    code = "copy_email_limit"


def queue_on_signing(session: Session, participant: Participant, record_id: int, *,
                     now: datetime) -> None:
    """The copy of a consent just signed, once (the caller commits)."""
    from app.notify import service as notify

    notify.queue(session, participant.id, KIND, dedupe_key=f"{KIND}:{record_id}:signed",
                 now=now, payload={"consent_record_id": record_id})


def email_again(session: Session, participant: Participant, record_id: int, *,
                now: datetime) -> bool:
    """Queue the copy of one of the participant's signed records again (the caller commits).

    Returns False when the same copy was queued less than ``RESEND_GAP`` ago (nothing new is
    queued: the one on its way is the answer). Raises NotFound for a record that is not theirs,
    Conflict when there is nothing to send or nowhere to send it, CopyEmailLimit past the daily
    limit.
    """
    from app.consent import service as consent
    from app.notify import service as notify
    from app.participants import erasure

    record, _ = consent.record_of(session, participant.id, record_id)
    if record.decision != "consent":
        raise Conflict("Only a signed consent has a copy to email; this record is a decline.",
                       code="nothing_to_send")
    if participant.status == "withdrawn" or not erasure.has_contact(session, participant.id):
        raise Conflict("We no longer hold your email address, so we cannot email the copy; "
                       "please download it from this page instead.", code="no_email_address")
    recent = notify.queued_since(session, participant.id, KIND, now - timedelta(days=1))
    prefix = f"{KIND}:{record_id}:"
    if any(key.startswith(prefix) and at > now - RESEND_GAP for key, at in recent):
        return False
    if len(recent) >= COPY_EMAILS_PER_DAY:
        raise CopyEmailLimit(
            f"Your copy was emailed {len(recent)} times in the last 24 hours, the most we send "
            "in a day; please try again tomorrow or download it from this page.",
            details={"per_day": COPY_EMAILS_PER_DAY})
    # One key per record and RESEND_GAP-long slot: two requests racing past the check above
    # collide on the outbox's unique key, and the second is dropped.
    slot = int(now.timestamp() // RESEND_GAP.total_seconds())
    try:
        with session.begin_nested():
            queued = notify.queue(session, participant.id, KIND, now=now,
                                  dedupe_key=f"{prefix}{slot}",
                                  payload={"consent_record_id": record_id})
    except IntegrityError:
        return False
    return queued is not None


def copy_filename(record: ConsentRecordPublic) -> str:
    return f"consent-{record.study}-{record.version}.pdf"


def signed_copy_attachment(session: Session, participant: Participant,
                           payload: dict[str, Any]) -> Attachment | None:
    """At send time: the PDF of the signed record named in ``payload``, or None if there is
    none (not theirs, or a decline)."""
    from app.consent import service as consent
    from app.consent.copy import consent_pdf
    from app.core.errors import NotFound
    from app.i18n import translator

    record_id = payload.get("consent_record_id")
    if not isinstance(record_id, int):
        return None
    try:
        copy = consent.signed_copy(session, participant, record_id)
    except NotFound:
        return None
    if copy.record.decision != "consent":
        return None
    pdf = consent_pdf(copy.record, copy.body_md, copy.statement_texts,
                      translator(copy.record.language))
    return Attachment(copy_filename(copy.record), pdf, "application/pdf")

"""Turning an outbox row into a message in the participant's language, at send time.

The address and the magic link are looked up and issued only now, so a withdrawn participant or
an erased address means nothing is sent, and no link token is stored in the outbox.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlmodel import Session

from app.auth import service as auth
from app.config import Settings
from app.i18n import translator
from app.notify.channels import Message
from app.notify.models import OutboxMessage
from app.participants.models import Contact, Participant
from app.studies import service as studies
from app.studies.models import Study

LINK_KINDS = ("magic_link", "already_enrolled")
BLOCKED_STATUSES = ("withdrawn",)


def render_message(
    session: Session, message: OutboxMessage, now: datetime, settings: Settings
) -> Message | None:
    participant = session.get(Participant, message.participant_id)
    contact = session.get(Contact, message.participant_id)
    if participant is None or contact is None or participant.status in BLOCKED_STATUSES:
        return None
    study = session.get(Study, participant.study_id)
    assert study is not None
    protocol = studies.current_protocol(session, study.id)  # type: ignore[arg-type]
    t = translator(participant.language)
    title = studies.localized(protocol["title"], participant.language)
    token = auth.issue_participant_token(
        session, participant.id, "link", timedelta(days=settings.magic_link_ttl_days), now=now)
    link = f"{settings.base_url}/p/login/{token}"
    params = {"study": title, "link": link, **{k: str(v) for k, v in message.payload.items()}}
    return Message(
        to=contact.email,
        subject=t(f"email.{message.kind}.subject", **params),
        body=t(f"email.{message.kind}.body", **params),
        language=participant.language,
    )

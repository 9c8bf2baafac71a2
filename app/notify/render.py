"""Turning an outbox row into a message in the participant's language, at send time.

The address and the magic link are looked up and issued only now, so a withdrawn participant or
an erased address means nothing is sent, and no link token is stored in the outbox.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlmodel import Session, select

from app.auth import service as auth
from app.config import Settings
from app.i18n import translator
from app.notify.channels import Message
from app.notify.models import OutboxMessage
from app.participants.models import Contact, Participant
from app.studies import service as studies
from app.studies.models import Study

BLOCKED_STATUSES = ("withdrawn",)  # and "paused" for invitations and reminders
OCCASION_KINDS = ("invitation", "reminder")
MESSAGE_KINDS = ("magic_link", "already_enrolled", *OCCASION_KINDS)  # each has email.<kind>.*


def _occasion_still_due(session: Session, participant: Participant, message: OutboxMessage,
                        now: datetime) -> bool:
    """Checked again at send time: consent current, and something left to answer."""
    from app.consent import service as consent
    from app.core.errors import Forbidden
    from app.surveys.models import SurveyInstance

    if participant.status == "paused":
        return False
    try:
        consent.check_gate(session, participant)
    except Forbidden:
        return False
    unanswered = session.exec(select(SurveyInstance.id).where(
        SurveyInstance.participant_id == participant.id,
        SurveyInstance.schedule_entry == message.payload.get("entry"),
        SurveyInstance.wave == message.payload.get("wave"),
        SurveyInstance.status == "open", SurveyInstance.closes_at > now)).first()
    return unanswered is not None


def render_message(
    session: Session, message: OutboxMessage, now: datetime, settings: Settings
) -> Message | None:
    participant = session.get(Participant, message.participant_id)
    contact = session.get(Contact, message.participant_id)
    if participant is None or contact is None or participant.status in BLOCKED_STATUSES:
        return None
    if message.kind in OCCASION_KINDS and not _occasion_still_due(session, participant, message,
                                                                  now):
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

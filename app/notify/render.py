"""Turning an outbox row into a message in the participant's language, at send time.

The address and the magic link are looked up and issued only now, so a withdrawn participant or
an erased address means nothing is sent, and no link token is stored in the outbox.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, select

from app.auth import service as auth
from app.config import Settings
from app.i18n import Translator, translator
from app.notify import bounces, unsubscribe
from app.notify.channels import Attachment, Message
from app.notify.html import render_html
from app.notify.models import OutboxMessage
from app.participants.models import Contact, Participant
from app.participants.timezones import local_datetime
from app.studies import service as studies
from app.studies.models import Study

BLOCKED_STATUSES = ("withdrawn",)  # and "paused" for invitations and reminders
OCCASION_KINDS = ("invitation", "reminder")
# email_change goes to the requested new address (read from email_changes at send time) with a
# confirmation link and no login link; email_change_taken is the neutral notice sent instead to
# the owner of an address someone asked to use; email_changed_notice goes to the address a
# confirmed change replaced, with a link to take the change back for a week.
EMAIL_CHANGE_KINDS = ("email_change", "email_change_taken", "email_changed_notice")
# The email-change messages that carry a link: the participants service function that issues
# it (address, token) at send time, and the page it opens.
EMAIL_CHANGE_LINKS = {"email_change": ("issue_email_change_link", "/p/email/confirm/"),
                      "email_changed_notice": ("issue_email_undo_link", "/p/email/undo/")}
# consent_copy carries the signed consent as a PDF attachment (built now from the record id in
# its payload) and no login link: people keep and forward such a copy.
ATTACHMENT_KINDS = ("consent_copy",)
MESSAGE_KINDS = ("magic_link", "already_enrolled", *OCCASION_KINDS,
                 *EMAIL_CHANGE_KINDS, *ATTACHMENT_KINDS)  # each has email.<kind>.*


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
    if message.kind in OCCASION_KINDS and (
            unsubscribe.email_stopped(session, participant.id)
            or not _occasion_still_due(session, participant, message, now)):
        return None  # stopped email contact: no invitations or reminders (asked-for mail goes)
    if message.kind not in EMAIL_CHANGE_LINKS and bounces.is_undeliverable(
            session, participant.id, contact.email, settings.secret_key):
        return None  # refused for good (a 5xx, a bounce) until the address is changed
    study = session.get(Study, participant.study_id)
    assert study is not None
    protocol = studies.current_protocol(session, study.id)  # type: ignore[arg-type]
    t = translator(participant.language)
    title = studies.localized(protocol["title"], participant.language)
    address_and_link = _address_and_link(session, message, contact.email, now, settings)
    if address_and_link is None:
        return None
    to, link = address_and_link
    if bounces.is_undeliverable(session, participant.id, to, settings.secret_key):
        return None
    attachments = _attachments(session, participant, message)
    if attachments is None:
        return None
    params = {"study": title, "link": link, **_payload_params(message.payload, participant)}
    subject = t(f"email.{message.kind}.subject", **params)
    body = t(f"email.{message.kind}.body", **params).rstrip()
    footer = _footer(t, settings, participant.language)
    headers: tuple[tuple[str, str], ...] = ()
    if message.kind in OCCASION_KINDS:
        # RFC 8058: a mail client's "unsubscribe" button posts to this address; the same link,
        # in the text, opens the page where the person chooses what it does.
        stop_link = unsubscribe.link_for(session, settings.secret_key, settings.base_url,
                                         participant.id, now)
        footer = f"{t('unsubscribe.email_footer', url=stop_link)}\n{footer}"
        headers = (("List-Unsubscribe", f"<{stop_link}>"),
                   ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
    return Message(
        to=to,
        subject=subject,
        body=f"{body}\n\n{footer}\n",
        language=participant.language,
        attachments=attachments,
        html=render_html(body, footer, subject=subject, language=participant.language),
        headers=headers,
    )


def _attachments(session: Session, participant: Participant, message: OutboxMessage
                 ) -> tuple[Attachment, ...] | None:
    """What the message carries (built now, never stored); None when it has nothing to carry."""
    if message.kind != "consent_copy":
        return ()
    from app.consent import copy_mail

    attachment = copy_mail.signed_copy_attachment(session, participant, message.payload)
    return None if attachment is None else (attachment,)


def _payload_params(payload: dict[str, Any], participant: Participant) -> dict[str, str]:
    """The payload as text; a time (a key ending in _at) in the participant's zone and language
    as they are now, at send time, with the zone named (never UTC as queued)."""
    params = {key: str(value) for key, value in payload.items()}
    for key, value in payload.items():
        if key.endswith("_at") and isinstance(value, str):
            try:
                moment = datetime.fromisoformat(value)
            except ValueError:
                continue
            params[key] = local_datetime(moment, participant.timezone, participant.language)
    return params


def _footer(t: Translator, settings: Settings, language: str) -> str:
    """Every message ends with where crisis lines are (added here once, not in each text)."""
    url = f"{settings.base_url}/help?lang={language}"
    return t("help.email_footer", url=url)


def _address_and_link(session: Session, message: OutboxMessage, contact_email: str,
                      now: datetime, settings: Settings) -> tuple[str, str] | None:
    """Where the message goes and the link it carries (issued now, never stored)."""
    from app.participants import service as participants

    if message.kind in EMAIL_CHANGE_LINKS:
        # The confirmation link goes to the new address only (a login link must never go to an
        # unconfirmed address); the notice goes to the replaced one, with the way to undo it.
        issue, path = EMAIL_CHANGE_LINKS[message.kind]
        issued = getattr(participants, issue)(
            session, message.participant_id, message.payload.get("email_change_id"), now)
        if issued is None:
            return None
        address, token = issued
        return address, f"{settings.base_url}{path}{token}"
    if message.kind in ("email_change_taken", *ATTACHMENT_KINDS):
        return contact_email, ""  # a notice or a copy to keep: no login link in it
    token = auth.issue_participant_token(
        session, message.participant_id, "link", timedelta(days=settings.magic_link_ttl_days),
        now=now)
    return contact_email, f"{settings.base_url}/p/login/{token}"

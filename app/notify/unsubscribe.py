"""One-click unsubscribe (RFC 8058) and how a participant may be emailed.

Invitations and reminders carry `List-Unsubscribe: <BASE/p/unsubscribe/TOKEN>` and
`List-Unsubscribe-Post: List-Unsubscribe=One-Click`. The token is an HMAC of the participant's
internal id under the app's secret key: the same in every message (a new sign-in link does not
change it), it reveals nothing, and it is not a credential: it opens the unsubscribe page and
nothing else. Only its SHA-256 is stored, to find the participant; after a withdrawal it finds
no one.

The person chooses what it does: stop email contact (the default; no invitations or reminders,
while mail they ask for, such as a sign-in link, still goes) or pause their participation
(participants.set_paused). A one-click POST from a mail client applies the stored choice. Each
change is written to the audit ledger (target participant:<id>, shown to reviewers as the IRB
pseudonym; never an address).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, select

from app.core.errors import NotFound, ValidationFailed
from app.notify.models import MailContact
from app.participants.models import Participant

PATH = "/p/unsubscribe/"
CHOICES = ("stop", "pause")  # what a one-click unsubscribe may do; "stop" unless chosen
ACTOR = "unsubscribe-link"


def token_for(secret_key: str, participant_id: str) -> str:
    digest = hmac.new(secret_key.encode(), b"wellpanel-unsubscribe\0" + participant_id.encode(),
                      hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def ensure_row(session: Session, participant_id: str, now: datetime, *,
               unsubscribe_hash: str | None = None) -> None:
    """The participant's row (created once; two senders at once cannot both insert it)."""
    values = {"participant_id": participant_id, "one_click": "stop", "updated_at": now,
              "unsubscribe_hash": unsubscribe_hash}
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    statement = insert(MailContact).values(**values).on_conflict_do_nothing(
        index_elements=["participant_id"])
    session.exec(statement)  # type: ignore[call-overload]
    if unsubscribe_hash is not None:
        row = session.get(MailContact, participant_id)
        if row is not None and row.unsubscribe_hash != unsubscribe_hash:
            row.unsubscribe_hash = unsubscribe_hash  # the secret key was rotated
            session.add(row)


def link_for(session: Session, secret_key: str, base_url: str, participant_id: str,
             now: datetime) -> str:
    """The participant's unsubscribe address (at send time; registers the token's hash)."""
    token = token_for(secret_key, participant_id)
    ensure_row(session, participant_id, now, unsubscribe_hash=_hash(token))
    return f"{base_url}{PATH}{token}"


def state_of(session: Session, participant_id: str) -> MailContact | None:
    return session.get(MailContact, participant_id)


def email_stopped(session: Session, participant_id: str) -> bool:
    row = session.get(MailContact, participant_id)
    return row is not None and row.email_stopped_at is not None


def page_if_stopped(session: Session, secret_key: str, participant_id: str) -> str | None:
    """The unsubscribe page's path while the participant's email contact is stopped (their
    settings page links to it, as no invitation will bring the link any more), else None."""
    if not email_stopped(session, participant_id):
        return None
    return f"{PATH}{token_for(secret_key, participant_id)}"


def forget_address(session: Session, participant_id: str) -> None:
    """With the address erased (withdrawal, retention), what was derived from it goes too: the
    refused address's keyed hash, and the unsubscribe link's hash (it finds no one after)."""
    row = session.get(MailContact, participant_id)
    if row is not None:
        row.undeliverable_address = row.unsubscribe_hash = None
        session.add(row)


def participant_for(session: Session, token: str) -> tuple[Participant, MailContact]:
    """Whose unsubscribe link this is; NotFound for an unknown token or a withdrawn person."""
    if not token or len(token) > 100:
        raise NotFound("This link is not valid.", code="invalid_link")
    row = session.exec(select(MailContact).where(
        MailContact.unsubscribe_hash == _hash(token))).first()
    participant = None if row is None else session.get(Participant, row.participant_id)
    if row is None or participant is None or participant.status == "withdrawn":
        raise NotFound("This link is not valid.", code="invalid_link")
    return participant, row


def can_pause(participant: Participant) -> bool:
    return participant.status in ("active", "paused")


def stop_email(session: Session, participant: Participant, row: MailContact, *, via: str,
               now: datetime) -> bool:
    """Stop email contact (audited); False when it was stopped already. The caller commits."""
    return _switch_email(session, participant, row, stopped=True, via=via, now=now)


def resume_email(session: Session, participant: Participant, row: MailContact, *, via: str,
                 now: datetime) -> bool:
    """Turn email contact on again (audited); False when it was on. The caller commits."""
    return _switch_email(session, participant, row, stopped=False, via=via, now=now)


def _switch_email(session: Session, participant: Participant, row: MailContact, *,
                  stopped: bool, via: str, now: datetime) -> bool:
    from app.audit import service as audit

    if (row.email_stopped_at is not None) == stopped:
        return False
    row.email_stopped_at, row.updated_at = (now if stopped else None), now
    session.add(row)
    before, after = ("on", "stopped") if stopped else ("stopped", "on")
    audit.append(session, actor=ACTOR,
                 action="participant.email_stopped" if stopped else "participant.email_resumed",
                 target=f"participant:{participant.id}", details={"via": via},
                 old_value={"email": before}, new_value={"email": after}, now=now)
    return True


def pause(session: Session, participant: Participant, *, now: datetime) -> bool:
    """Pause participation through the participants service (which audits and commits)."""
    from app.participants import service as participants

    if participant.status == "paused":
        return False
    participants.set_paused(session, participant, True, now=now)
    return True


def remember_choice(session: Session, row: MailContact, choice: str, *, now: datetime) -> None:
    if choice not in CHOICES:
        raise ValidationFailed("choice: choose stop or pause.", details={"field": "choice"})
    if row.one_click != choice:
        row.one_click, row.updated_at = choice, now
        session.add(row)


def one_click(session: Session, token: str, *, now: datetime) -> str:
    """What a mail client's one-click POST does: the participant's stored choice (pause only
    while they take part; else email contact stops). Returns what was applied."""
    participant, row = participant_for(session, token)
    if row.one_click == "pause" and can_pause(participant):
        pause(session, participant, now=now)
        return "pause"
    stop_email(session, participant, row, via="one_click", now=now)
    return "stop"

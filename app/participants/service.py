"""Joining a study (screening, enrollment), contact details, erasure."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import func, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, delete, select

from app.core.errors import Conflict, NotFound, ValidationFailed
from app.core.security import hash_token, new_token
from app.db import utcnow
from app.participants.models import (
    Contact,
    EmailChange,
    EnrollmentCreate,
    Participant,
    ScreeningTally,
)
from app.studies.models import Study


def screening_problems(eligibility: list[dict], answers: dict[str, bool]) -> list[dict]:
    """Every problem with the screening answers at once (unknown questions, then unanswered
    ones), so a form can mark them all in one round."""
    known = {q["id"] for q in eligibility}
    unknown = [{"field": f"screening.{u}", "problem": "unknown"}
               for u in sorted(set(answers) - known)]
    missing = [{"field": f"screening.{q['id']}", "problem": "required"}
               for q in eligibility if q["id"] not in answers]
    return unknown + missing


def check_eligibility(eligibility: list[dict], answers: dict[str, bool]) -> bool:
    """True when every screening question has the answer that makes a person eligible."""
    problems = screening_problems(eligibility, answers)
    if problems:
        first = problems[0]
        what = ("not a screening question of this study" if first["problem"] == "unknown"
                else "please answer this question")
        raise ValidationFailed(f"{first['field']}: {what}", details=problems)
    return all(answers[q["id"]] == (q["eligible_if"] == "yes") for q in eligibility)


def count_screening(session: Session, study_id: int, outcome: str) -> None:
    updated = session.execute(
        update(ScreeningTally)
        .where(ScreeningTally.study_id == study_id, ScreeningTally.outcome == outcome)  # type: ignore[arg-type]
        .values(count=ScreeningTally.count + 1)
    )
    if updated.rowcount == 0:  # type: ignore[attr-defined]
        try:
            with session.begin_nested():
                session.add(ScreeningTally(study_id=study_id, outcome=outcome, count=1))
        except IntegrityError:  # another request created the row first
            session.execute(
                update(ScreeningTally)
                .where(ScreeningTally.study_id == study_id, ScreeningTally.outcome == outcome)  # type: ignore[arg-type]
                .values(count=ScreeningTally.count + 1)
            )



def enroll(
    session: Session, study: Study, data: EnrollmentCreate, eligibility: list[dict],
    *, now: datetime | None = None,
) -> tuple[bool, Participant | None, bool]:
    """Screen and, if eligible, enroll. Returns (eligible, participant, is_new).

    An address that is already enrolled gets the same outward answer as a new one; the caller
    sends that person a fresh link instead of creating a second participant.
    """
    from app.notify import service as notify

    now = now or utcnow()
    assert study.id is not None
    eligible = check_eligibility(eligibility, data.screening)
    count_screening(session, study.id, "eligible" if eligible else "ineligible")
    if not eligible:
        session.commit()
        return False, None, False
    contact = session.exec(select(Contact).where(
        Contact.study_id == study.id, Contact.email == data.email)).first()
    if contact is not None:
        participant = session.get(Participant, contact.participant_id)
        assert participant is not None
        notify.queue(session, participant.id, "already_enrolled",
                     dedupe_key=f"already_enrolled:{participant.id}:{now.isoformat()}", now=now)
        session.commit()
        return True, participant, False
    participant = Participant(id=str(uuid.uuid4()), study_id=study.id, language=data.language,
                              timezone=data.timezone, created_at=now)
    session.add(participant)
    session.flush()
    session.add(Contact(participant_id=participant.id, study_id=study.id, email=data.email,
                        updated_at=now))
    notify.queue(session, participant.id, "magic_link",
                 dedupe_key=f"magic_link:{participant.id}:first", now=now)
    try:
        session.commit()
    except IntegrityError:
        # The same address enrolled concurrently: behave as for an existing address.
        session.rollback()
        return True, None, False
    return True, participant, True




def mark_contact_verified(session: Session, participant_id: str, now: datetime) -> datetime | None:
    contact = session.get(Contact, participant_id)
    if contact is None:
        return None
    if contact.verified_at is None:
        contact.verified_at = now
        session.add(contact)
    return contact.verified_at


def contact_address(session: Session, participant_id: str) -> str | None:
    """The participant's current address (for the notify domain; never logged)."""
    contact = session.get(Contact, participant_id)
    return None if contact is None else contact.email


def participants_with_address(session: Session, email: str) -> list[str]:
    """Ids of the participants (in any study) whose contact address is `email`."""
    return list(session.exec(select(Contact.participant_id).where(
        Contact.email == email.strip().lower())).all())


def forget_contact(session: Session, participant_id: str) -> int:
    """After withdrawal the address is erased, so nobody can contact the person again.

    Requested address changes (pending or not) hold addresses too and go with it. Returns how
    many rows were erased (0: nothing was held, or another transaction erased it first).
    """
    from app.notify import unsubscribe

    unsubscribe.forget_address(session, participant_id)  # its hashes, kept by notify
    changes = session.exec(delete(EmailChange).where(  # type: ignore[call-overload]
        EmailChange.participant_id == participant_id)).rowcount
    contacts = session.exec(delete(Contact).where(  # type: ignore[call-overload]
        Contact.participant_id == participant_id)).rowcount
    return changes + contacts


def erase_research_data(session: Session, participant_id: str) -> int:
    """Erase a withdrawn participant's answers (delete_data scope). Returns rows erased."""
    from app.surveys import service as surveys

    return surveys.erase_participant_responses(session, participant_id)


def change_settings(session: Session, participant: Participant, *, timezone: str | None,
                    language: str | None, now: datetime) -> Participant:
    """Change time zone and/or language (audit-logged); a new zone re-plans future surveys."""
    from app.audit import service as audit
    from app.scheduling.amendments import replan_participant
    from app.studies import service as studies

    old = {"timezone": participant.timezone, "language": participant.language}
    if timezone is not None:
        participant.timezone = timezone
    if language is not None:
        participant.language = language
    new = {"timezone": participant.timezone, "language": participant.language}
    if new == old:
        return participant
    session.add(participant)
    if new["timezone"] != old["timezone"] and participant.enrolled_at is not None:
        # Across protocol versions: occasions already sent under an older one stay sent.
        replan_participant(session, participant,
                           studies.latest_protocol(session, participant.study_id), now)  # type: ignore[arg-type]
    audit.append(session, actor=f"participant:{participant.id}", action="participant.settings",
                 target=f"participant:{participant.id}", old_value=old, new_value=new, now=now)
    session.commit()
    return participant


def set_paused(session: Session, participant: Participant, paused: bool, *, now: datetime
               ) -> Participant:
    from app.audit import service as audit

    if participant.status not in ("active", "paused"):
        raise ValidationFailed(f"A participant who is {participant.status} cannot pause or "
                               "resume.", code="invalid_state")
    old = participant.status
    participant.status = "paused" if paused else "active"
    if participant.status != old:
        session.add(participant)
        audit.append(session, actor=f"participant:{participant.id}",
                     action="participant.pause" if paused else "participant.resume",
                     target=f"participant:{participant.id}", old_value={"status": old},
                     new_value={"status": participant.status}, now=now)
        session.commit()
    return participant


# ---- email change ----------------------------------------------------------------------------
# The requester always gets the same answer; whether the address is free only decides which
# message goes out (a confirmation link to a free address, a neutral notice to a taken one).

EMAIL_CHANGE_TTL = timedelta(days=3)
EMAIL_CHANGES_PER_DAY = 10  # beyond this, requests are answered as usual but send nothing
EMAIL_UNAVAILABLE = ("This address cannot be used for your participation in this study. "
                     "Please choose another address.")


def request_email_change(session: Session, participant: Participant, new_email: str, *,
                         now: datetime) -> EmailChange | None:
    """Queue a confirmation link to a free ``new_email`` (or a notice to a taken one).

    Returns the pending change, or None when nothing was created; callers must answer the
    same in both cases so the reply never tells whether the address is enrolled.
    """
    from app.notify import service as notify

    contact = session.get(Contact, participant.id)
    if contact is None or contact.email == new_email or _too_many_changes(session, participant,
                                                                         now):
        return None
    owner = session.exec(select(Contact.participant_id, Participant.status)
                         .join(Participant, col(Participant.id) == Contact.participant_id)
                         .where(Contact.study_id == participant.study_id,
                                Contact.email == new_email)).first()
    if owner is not None:
        owner_id, owner_status = owner
        if owner_status != "declined":  # someone who said no is not written to again
            # One neutral notice per address and hour at most: requests cannot flood a mailbox.
            notify.queue(session, owner_id, "email_change_taken", now=now,
                         dedupe_key=f"email_change_taken:{owner_id}:{now:%Y-%m-%dT%H}")
            session.commit()
        return None
    # The link's token is issued when the message is rendered (issue_email_change_link); until
    # then the row holds the hash of a token nobody knows.
    change = EmailChange(participant_id=participant.id, new_email=new_email,
                         token_hash=hash_token(new_token()), created_at=now,
                         expires_at=now + EMAIL_CHANGE_TTL)
    session.add(change)
    session.flush()
    notify.queue(session, participant.id, "email_change", now=now,
                 dedupe_key=f"email_change:{change.id}", payload={"email_change_id": change.id})
    session.commit()
    return change


def _too_many_changes(session: Session, participant: Participant, now: datetime) -> bool:
    recent = session.exec(select(func.count()).select_from(EmailChange).where(
        EmailChange.participant_id == participant.id,
        col(EmailChange.created_at) > now - timedelta(days=1))).one()
    return recent >= EMAIL_CHANGES_PER_DAY


def issue_email_change_link(session: Session, participant_id: str, change_id: object,
                            now: datetime) -> tuple[str, str] | None:
    """At send time: (new address, fresh token) for a pending change, or None if it is over.

    A fresh token replaces the stored hash, so no usable token is ever stored anywhere (the
    caller's transaction is rolled back if sending fails, keeping the previous hash).
    """
    change = _change_of(session, participant_id, change_id)
    if change is None or not _pending(change, now):
        return None
    token = new_token()
    change.token_hash = hash_token(token)
    session.add(change)
    return change.new_email, token


def _change_of(session: Session, participant_id: str, change_id: object) -> EmailChange | None:
    """The participant's own email change with this id (from a queued message's payload)."""
    change = session.get(EmailChange, change_id) if isinstance(change_id, int) else None
    return change if change is not None and change.participant_id == participant_id else None


def _pending(change: EmailChange, now: datetime) -> bool:
    return change.confirmed_at is None and change.cancelled_at is None and now < change.expires_at


def confirm_email_change(session: Session, participant: Participant, token: str, *,
                         now: datetime) -> None:
    """Make the confirmed address the contact address (audit-logged without any address)."""
    from app.audit import service as audit

    change = session.exec(select(EmailChange).where(
        EmailChange.token_hash == hash_token(token))).first()
    if change is None or change.participant_id != participant.id:
        raise NotFound("token: this confirmation link is not valid for your participation; "
                       "open the latest link we sent to the new address.")
    if change.confirmed_at is not None:
        raise Conflict("This address change was already confirmed.", code="already_confirmed")
    if not _pending(change, now):
        raise Conflict("This confirmation link has expired; please ask for the change again.",
                       code="expired")
    contact = session.get(Contact, participant.id)
    if contact is None:
        raise NotFound("There is no contact address to change.")
    taken = session.exec(select(Contact.participant_id).where(
        Contact.study_id == participant.study_id, Contact.email == change.new_email,
        Contact.participant_id != participant.id)).first()
    if taken is not None:
        raise Conflict(EMAIL_UNAVAILABLE, code="email_unavailable")
    # The old address hears of it and may take it back (issue_email_undo_link, at send time).
    change.old_email = contact.email
    change.undo_token_hash = hash_token(new_token())
    change.undo_expires_at = now + EMAIL_UNDO_WINDOW
    contact.email, contact.verified_at, contact.updated_at = change.new_email, now, now
    change.confirmed_at = now
    session.add_all([contact, change])
    try:
        session.flush()
    except IntegrityError as exc:  # the address was enrolled by someone else a moment ago
        session.rollback()
        raise Conflict(EMAIL_UNAVAILABLE, code="email_unavailable") from exc
    others = session.exec(  # type: ignore[call-overload]
        update(EmailChange).where(
            col(EmailChange.participant_id) == participant.id, col(EmailChange.id) != change.id,
            col(EmailChange.confirmed_at).is_(None), col(EmailChange.cancelled_at).is_(None))
        .values(cancelled_at=now)).rowcount
    audit.append(session, actor=f"participant:{participant.id}", action="participant.email_change",
                 target=f"participant:{participant.id}",
                 details={"email_change_id": change.id, "other_requests_cancelled": others},
                 now=now)
    from app.notify import service as notify

    notify.queue(session, participant.id, "email_changed_notice", now=now,
                 dedupe_key=f"email_changed_notice:{change.id}",
                 payload={"email_change_id": change.id})
    session.commit()


# ---- taking an address change back from the old address ---------------------------------------

EMAIL_UNDO_WINDOW = timedelta(days=7)


def issue_email_undo_link(session: Session, participant_id: str, change_id: object,
                          now: datetime) -> tuple[str, str] | None:
    """At send time: (old address, fresh undo token) for a confirmed change that can still be
    taken back, or None. As for confirmation links, only the new token's hash is kept."""
    change = _change_of(session, participant_id, change_id)
    if change is None or not change.old_email or not _undoable(change, now):
        return None
    token = new_token()
    change.undo_token_hash = hash_token(token)
    session.add(change)
    return change.old_email, token


def _undoable(change: EmailChange, now: datetime) -> bool:
    return (change.confirmed_at is not None and change.undone_at is None
            and change.undo_expires_at is not None and now < change.undo_expires_at)


def undo_email_change(session: Session, token: str, *, now: datetime) -> Participant:
    """Put the old address back, end every credential of the participant (whoever changed it
    is signed out) and send a new link to the old address; audited. The caller commits."""
    from app.audit import service as audit
    from app.auth import service as auth
    from app.notify import service as notify

    change = session.exec(select(EmailChange).where(
        EmailChange.undo_token_hash == hash_token(token))).first()
    if change is None:
        raise NotFound("This link is not valid.", code="invalid_link")
    if not _undoable(change, now):
        raise Conflict("This change can no longer be taken back here; please write to the "
                       "study team.", code="expired")
    participant = session.get(Participant, change.participant_id)
    contact = session.get(Contact, change.participant_id)
    if participant is None or contact is None or participant.status == "withdrawn":
        raise NotFound("This link is not valid.", code="invalid_link")
    taken = session.exec(select(Contact.participant_id).where(
        Contact.study_id == participant.study_id, Contact.email == change.old_email,
        Contact.participant_id != participant.id)).first()
    if taken is not None:
        raise Conflict(EMAIL_UNAVAILABLE, code="email_unavailable")
    contact.email, contact.verified_at, contact.updated_at = change.old_email, now, now  # type: ignore[assignment]
    change.undone_at = now
    session.add_all([contact, change])
    revoked = auth.revoke_all(session, participant.id, now=now)
    audit.append(session, actor="email-undo-link", action="participant.email_change_undone",
                 target=f"participant:{participant.id}",
                 details={"email_change_id": change.id,
                          "credentials_revoked": sum(revoked.values())}, now=now)
    notify.queue(session, participant.id, "magic_link", now=now,
                 dedupe_key=f"magic_link:{participant.id}:undo:{change.id}")
    return participant


# ---- the participant's own data (for "download my data") -----------------------------------

def own_record(session: Session, participant: Participant) -> dict[str, object]:
    """The participant's record as they may see it (the internal id never leaves the server)."""
    study = session.get(Study, participant.study_id)
    return {"study": study.key if study else None, "status": participant.status,
            "language": participant.language, "timezone": participant.timezone,
            "joined_at": participant.created_at, "enrolled_at": participant.enrolled_at,
            "withdrawn_at": participant.withdrawn_at}


def own_contact(session: Session, participant: Participant) -> dict[str, object] | None:
    """Their contact address and whether it was confirmed (None once erased)."""
    contact = session.get(Contact, participant.id)
    if contact is None:
        return None
    return {"email": contact.email, "verified_at": contact.verified_at,
            "updated_at": contact.updated_at}


def own_email_changes(session: Session, participant: Participant) -> list[dict[str, object]]:
    """Their requests to change the address (never the link's token hash)."""
    rows = session.exec(select(EmailChange).where(EmailChange.participant_id == participant.id)
                        .order_by(col(EmailChange.created_at), col(EmailChange.id))).all()
    return [{"id": c.id, "new_email": c.new_email, "requested_at": c.created_at,
             "expires_at": c.expires_at, "confirmed_at": c.confirmed_at,
             "cancelled_at": c.cancelled_at} for c in rows]

"""Joining a study (screening, enrollment), contact details, erasure."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, delete, select

from app.core.errors import ValidationFailed
from app.db import utcnow
from app.participants.models import Contact, EnrollmentCreate, Participant, ScreeningTally
from app.studies.models import Study


def check_eligibility(eligibility: list[dict], answers: dict[str, bool]) -> bool:
    """True when every screening question has the answer that makes a person eligible."""
    known = {q["id"] for q in eligibility}
    unknown = sorted(set(answers) - known)
    if unknown:
        raise ValidationFailed(f"screening.{unknown[0]}: not a screening question of this study",
                               details=[{"field": f"screening.{u}", "problem": "unknown"}
                                        for u in unknown])
    missing = [q["id"] for q in eligibility if q["id"] not in answers]
    if missing:
        raise ValidationFailed(f"screening.{missing[0]}: please answer this question",
                               details=[{"field": f"screening.{m}", "problem": "required"}
                                        for m in missing])
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


def forget_contact(session: Session, participant_id: str) -> None:
    """After withdrawal the address is erased, so nobody can contact the person again."""
    session.exec(delete(Contact).where(Contact.participant_id == participant_id))  # type: ignore[call-overload]


def erase_research_data(session: Session, participant_id: str) -> int:
    """Erase a withdrawn participant's answers (delete_data scope). Returns rows erased."""
    from app.surveys import service as surveys

    return surveys.erase_participant_responses(session, participant_id)


def change_settings(session: Session, participant: Participant, *, timezone: str | None,
                    language: str | None, now: datetime) -> Participant:
    """Change time zone and/or language (audit-logged); a new zone re-plans future surveys."""
    from app.audit import service as audit
    from app.scheduling import service as scheduling

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
        scheduling.replan_future(session, participant, now=now)
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

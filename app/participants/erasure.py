"""Erasing contact details: at once when someone declines consent, and once the study is over
for them (the study file's ``data_policy.contact_retention_days`` after their last survey
closed). Each erasure writes one audit row, ``participant.contact_erased``, with the reason and
never the address.

``erase_expired_contacts`` is run by the dispatcher's tick and by
``wellpanel participants erase-expired-contacts``; it also marks people whose schedule has ended
``completed``. Running it again changes nothing and writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, col, exists, or_, select, update

from app.participants.models import Contact, EmailChange, Participant
from app.studies.models import ProtocolVersion, Study

SYSTEM = "system"
SCHEDULED = ("active", "paused")  # become completed once their schedule has ended
HOLD_CONTACTS = (*SCHEDULED, "completed")  # withdrawn and declined people hold none


def _holds_contact(participant_id: Any) -> Any:
    return or_(exists().where(Contact.participant_id == participant_id),
               exists().where(EmailChange.participant_id == participant_id))


def has_contact(session: Session, participant_id: str) -> bool:
    """Whether an address is held for the participant (their contact address)."""
    return session.get(Contact, participant_id) is not None


def erase_contact(session: Session, participant: Participant, *, actor: str, reason: str,
                  now: datetime) -> bool:
    """Erase the participant's address and address changes, audited (the caller commits).

    Returns False, writing nothing, when nothing was held.
    """
    from app.audit import service as audit
    from app.participants.service import forget_contact

    # The deletes' row counts, not a read before them: of two runs at once, only the one that
    # deleted something writes the audit row.
    if not forget_contact(session, participant.id):
        return False
    audit.append(session, actor=actor, action="participant.contact_erased",
                 target=f"participant:{participant.id}", details={"reason": reason}, now=now)
    return True


@dataclass
class RetentionReport:
    completed: int = 0  # schedules that ended: active or paused -> completed
    contacts_erased: int = 0


def erase_expired_contacts(session: Session, *, now: datetime) -> RetentionReport:
    """Mark people whose last survey has closed ``completed``; erase the contact details of
    those whose last survey closed more than the study's retention period ago. Commits each
    participant's change with its audit row."""
    from app.studies import service as studies

    report = RetentionReport()
    for study_id in session.exec(select(Study.id)).all():
        protocol = studies.latest_protocol(session, study_id)  # type: ignore[arg-type]
        if protocol is None:
            continue
        days = protocol.content["study"]["data_policy"].get("contact_retention_days")
        report.completed += _complete_ended(session, protocol, now)
        if days is not None:
            report.contacts_erased += _erase_after(session, protocol, timedelta(days=days), now)
    return report


def _ended_before(session: Session, protocol: ProtocolVersion, statuses: tuple[str, ...],
                  cutoff: datetime, *, holding_contact: bool) -> list[Participant]:
    """People of the protocol's study in ``statuses`` whose last survey closed at or before
    ``cutoff``.

    Cheap filters first (enrolled long enough ago for any schedule to have ended, no survey
    closing after the cutoff); the planner decides for the few left.
    """
    from app.scheduling.ends import schedule_end, shortest_schedule
    from app.scheduling.service import schedule_of
    from app.surveys.models import SurveyInstance

    later = exists().where(SurveyInstance.participant_id == Participant.id,
                           col(SurveyInstance.status) != "cancelled",
                           col(SurveyInstance.closes_at) > cutoff)
    query = select(Participant).where(
        Participant.study_id == protocol.study_id, col(Participant.status).in_(statuses),
        col(Participant.enrolled_at) <= cutoff - shortest_schedule(schedule_of(protocol)),
        ~later)
    if holding_contact:
        query = query.where(_holds_contact(Participant.id))
    people = session.exec(query.order_by(col(Participant.id))).all()
    return [p for p in people
            if (end := schedule_end(session, p, protocol)) is not None and end <= cutoff]


def _complete_ended(session: Session, protocol: ProtocolVersion, now: datetime) -> int:
    from app.audit import service as audit

    done = 0
    for participant in _ended_before(session, protocol, SCHEDULED, now, holding_contact=False):
        old = participant.status
        # Conditional, so two runs at once complete (and audit) each person once.
        changed = session.exec(update(Participant).where(  # type: ignore[call-overload]
            col(Participant.id) == participant.id, col(Participant.status) == old)
            .values(status="completed")).rowcount
        if not changed:
            session.rollback()
            continue
        set_committed_value(participant, "status", "completed")
        audit.append(session, actor=SYSTEM, action="participant.complete",
                     target=f"participant:{participant.id}", details={"reason": "schedule_ended"},
                     old_value={"status": old}, new_value={"status": "completed"}, now=now)
        session.commit()
        done += 1
    return done


def _erase_after(session: Session, protocol: ProtocolVersion, retention: timedelta,
                 now: datetime) -> int:
    erased = 0
    for participant in _ended_before(session, protocol, HOLD_CONTACTS, now - retention,
                                     holding_contact=True):
        erased += erase_contact(session, participant, actor=SYSTEM, reason="retention", now=now)
        session.commit()
    return erased

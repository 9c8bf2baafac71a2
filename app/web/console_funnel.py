"""The enrollment funnel: counts only, never a row about a person.

A read-only aggregate across the participants, consent and studies tables for the console; it
changes nothing and returns numbers, so it lives beside the page rather than in one domain.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session, col, func, select

from app.consent.models import ConsentRecord
from app.participants.models import Participant, ScreeningTally
from app.studies.models import Study

STATUS_STAGES = ("active", "paused", "withdrawn", "completed")


@dataclass(frozen=True)
class Stage:
    key: str
    label: str
    count: int | None  # None: not measured
    note: str


def studies(session: Session) -> list[str]:
    return list(session.exec(select(Study.key).order_by(Study.key)).all())


def enrollment_funnel(session: Session, study_key: str) -> list[Stage]:
    study = session.exec(select(Study).where(Study.key == study_key)).first()
    study_id = study.id if study else -1
    tallies = dict(session.exec(select(ScreeningTally.outcome, ScreeningTally.count)
                                .where(ScreeningTally.study_id == study_id)).all())
    by_status = dict(session.exec(
        select(Participant.status, func.count()).where(Participant.study_id == study_id)
        .group_by(Participant.status)).all())
    consented = session.exec(
        select(func.count(func.distinct(ConsentRecord.participant_id)))
        .join(Participant, col(Participant.id) == ConsentRecord.participant_id)
        .where(Participant.study_id == study_id, ConsentRecord.decision == "consent")).one()
    eligible = tallies.get("eligible", 0)
    stages = [
        Stage("visited", "Visited the join page", None,
              "Not tracked: the join page keeps no visit counts or identifiers."),
        Stage("screened", "Screened", eligible + tallies.get("ineligible", 0),
              "Screening forms submitted (a person who tries twice counts twice)."),
        Stage("eligible", "Eligible", eligible, "Screened as eligible."),
        Stage("consented", "Consented", consented,
              "Signed consent at least once (including people who later withdrew)."),
    ]
    stages += [Stage(s, s.capitalize(), by_status.get(s, 0), f"Current status: {s}.")
               for s in STATUS_STAGES]
    return stages

"""Rows written directly, for tests that need many consented participants quickly."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlmodel import Session, select

from app.consent.models import ConsentRecord, ConsentVersion
from app.participants.models import Contact, Participant
from app.studies.models import Study
from app.surveys.models import SurveyInstance


def consented_participants(session: Session, n: int, *, now: datetime,
                           timezone: str = "Europe/Berlin", prefix: str = "p") -> list[Participant]:
    study = session.exec(select(Study)).one()
    version = session.exec(select(ConsentVersion).where(ConsentVersion.study_id == study.id)
                           .order_by(ConsentVersion.ordinal.desc())).first()  # type: ignore[attr-defined]
    people = []
    for i in range(n):
        participant = Participant(id=str(uuid.uuid4()), study_id=study.id, status="active",
                                  language="en", timezone=timezone, created_at=now,
                                  enrolled_at=now)
        session.add(participant)
        people.append(participant)
    session.flush()
    for i, participant in enumerate(people):
        session.add(Contact(participant_id=participant.id, study_id=study.id,
                            email=f"{prefix}{i}@example.org", verified_at=now, updated_at=now))
        session.add(ConsentRecord(
            participant_id=participant.id, consent_version_id=version.id, decision="consent",
            language="en", document_sha256="0" * 64, signature_name="Test", statements=[],
            decided_at=now, identity_method="email_magic_link", identity_verified_at=now))
    session.commit()
    return people


def planned_instances(session: Session, people: list[Participant], *, entry: str,
                      instruments: list[str], wave: int, at: datetime, open_hours: int,
                      protocol_version: int) -> None:
    for participant in people:
        for position, key in enumerate(instruments):
            session.add(SurveyInstance(
                id=str(uuid.uuid4()), participant_id=participant.id,
                protocol_version=protocol_version, schedule_entry=entry, instrument_key=key,
                instrument_version="1.0.0", wave=wave, position=position, status="planned",
                scheduled_at=at, local_time=at.replace(tzinfo=None).isoformat(timespec="minutes"),
                timezone=participant.timezone, closes_at=at + timedelta(hours=open_hours),
                created_at=at))
    session.commit()

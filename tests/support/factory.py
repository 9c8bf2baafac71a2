"""Rows written directly, for tests that need many consented participants quickly."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlmodel import Session, select

from app.consent.models import ConsentRecord, ConsentVersion
from app.participants.models import Contact, Participant
from app.studies.models import Study


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

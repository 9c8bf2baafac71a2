"""Turning the schedule of the study file into survey instances.

This first part covers what enrollment needs: the `at_enrollment` entries are planned the moment
a participant consents, open at once and close `open_for_hours` later.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlmodel import Session, select

from app.participants.models import Participant
from app.studies import service as studies
from app.surveys.models import SurveyInstance

DEFAULT_OPEN_HOURS = 168


def plan_at_enrollment(session: Session, participant: Participant, *, now: datetime) -> int:
    """Create (once) the instances of every `at_enrollment` schedule entry; returns how many."""
    latest = studies.latest_protocol(session, participant.study_id)
    assert latest is not None
    content = latest.content
    existing = set(session.exec(select(SurveyInstance.schedule_entry, SurveyInstance.instrument_key)
                                .where(SurveyInstance.participant_id == participant.id)).all())
    local = now.astimezone(ZoneInfo(participant.timezone)).replace(tzinfo=None)
    created = 0
    for entry in content["study"].get("schedule", {}).get("entries", []):
        if not entry.get("cadence", {}).get("at_enrollment"):
            continue
        hours = entry.get("open_for_hours", DEFAULT_OPEN_HOURS)
        for position, key in enumerate(entry["instruments"]):
            if (entry["name"], key) in existing:
                continue
            session.add(SurveyInstance(
                id=str(uuid.uuid4()), participant_id=participant.id,
                protocol_version=latest.version, schedule_entry=entry["name"],
                instrument_key=key, instrument_version=content["instruments"][key]["version"],
                wave=0, position=position, status="open", scheduled_at=now,
                local_time=local.isoformat(timespec="minutes"), timezone=participant.timezone,
                closes_at=now + timedelta(hours=hours), opened_at=now, created_at=now))
            created += 1
    return created

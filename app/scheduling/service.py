"""Materializing the study schedule as survey instances, in each participant's time zone.

Occurrences come from the pure planner (app/scheduling/planner.py, which documents the
daylight-saving rule) up to a rolling horizon. Instances are inserted idempotently: the unique
key (participant, protocol version, entry, instrument, wave) means planning twice, or from two
schedulers at once, never creates a second row.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from functools import lru_cache

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from app.participants.models import Participant
from app.scheduling.planner import Occurrence, plan_occurrences
from app.scheduling.schedule import Schedule, parse_schedule
from app.studies import service as studies
from app.studies.models import ProtocolVersion
from app.surveys.models import SurveyInstance


@lru_cache(maxsize=64)
def _schedule(sha256: str, schedule_json: str, recall_json: str) -> Schedule:
    return parse_schedule(json.loads(schedule_json), json.loads(recall_json))


def schedule_of(protocol: ProtocolVersion) -> Schedule:
    """The parsed schedule of a protocol version (validated when the study was loaded)."""
    recall = {k: p["definition"]["recall_period_days"]
              for k, p in protocol.content["instruments"].items()}
    return _schedule(protocol.sha256, json.dumps(protocol.content["study"]["schedule"]),
                     json.dumps(recall))


def occurrences_for(protocol: ProtocolVersion, participant: Participant, now: datetime
                    ) -> list[Occurrence]:
    schedule = schedule_of(protocol)
    assert participant.enrolled_at is not None
    return plan_occurrences(schedule, enrolled_at=participant.enrolled_at,
                            timezone=participant.timezone, until=schedule.horizon_end(now),
                            participant_key=participant.id)


def materialize(session: Session, participant: Participant, *, now: datetime) -> int:
    """Insert the participant's missing instances up to the horizon; returns how many."""
    protocol = studies.latest_protocol(session, participant.study_id)
    assert protocol is not None
    existing = set(session.exec(
        select(SurveyInstance.schedule_entry, SurveyInstance.instrument_key, SurveyInstance.wave)
        .where(SurveyInstance.participant_id == participant.id,
               SurveyInstance.protocol_version == protocol.version)).all())
    created = 0
    for occurrence in occurrences_for(protocol, participant, now):
        if occurrence.key in existing:
            continue
        session.add(_instance(participant, protocol, occurrence, now))
        created += 1
    return created


def _instance(participant: Participant, protocol: ProtocolVersion, occurrence: Occurrence,
              now: datetime) -> SurveyInstance:
    return SurveyInstance(
        id=str(uuid.uuid4()), participant_id=participant.id, protocol_version=protocol.version,
        schedule_entry=occurrence.entry, instrument_key=occurrence.instrument,
        instrument_version=protocol.content["instruments"][occurrence.instrument]["version"],
        wave=occurrence.wave, position=occurrence.position, status="planned",
        scheduled_at=occurrence.scheduled_at, local_time=occurrence.local_time,
        timezone=occurrence.timezone, closes_at=occurrence.closes_at, created_at=now)


def plan_at_enrollment(session: Session, participant: Participant, *, now: datetime) -> int:
    """At consent: plan the horizon and open what is due now (the baseline), in one go."""
    created = materialize(session, participant, now=now)
    session.flush()
    for instance in session.exec(select(SurveyInstance).where(
            SurveyInstance.participant_id == participant.id,
            SurveyInstance.status == "planned", col(SurveyInstance.scheduled_at) <= now)).all():
        instance.status, instance.opened_at = "open", now
        session.add(instance)
    return created


def materialize_all(session: Session, *, now: datetime) -> int:
    """Roll every active participant's horizon forward (run by the dispatcher)."""
    created = 0
    for participant in session.exec(select(Participant).where(
            Participant.status == "active")).all():
        try:
            with session.begin_nested():
                created += materialize(session, participant, now=now)
        except IntegrityError:  # another scheduler planned the same rows first
            continue
    session.commit()
    return created


def replan_future(session: Session, participant: Participant, *, now: datetime) -> int:
    """Drop planned, not yet opened instances and plan them again (e.g. after a time-zone
    change). Opened, sent or answered instances are never touched."""
    for instance in session.exec(select(SurveyInstance).where(
            SurveyInstance.participant_id == participant.id,
            SurveyInstance.status == "planned", col(SurveyInstance.scheduled_at) > now)).all():
        session.delete(instance)
    session.flush()
    return materialize(session, participant, now=now)


def upcoming(session: Session, participant: Participant, *, now: datetime
             ) -> list[SurveyInstance]:
    return list(session.exec(select(SurveyInstance).where(
        SurveyInstance.participant_id == participant.id,
        col(SurveyInstance.status).in_(("planned", "open")), col(SurveyInstance.closes_at) > now)
        .order_by(col(SurveyInstance.scheduled_at), col(SurveyInstance.position))).all())

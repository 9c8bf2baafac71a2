"""Protocol amendments: re-plan only what has not happened yet.

When a study file is loaded with changed content, a new protocol version exists and every
participant still being scheduled (active or paused) has the not-yet-opened part of their
schedule replaced by the new version's plan:

* Replaced: instances of older versions that are still ``planned`` and lie in the future
  (``scheduled_at > now``). Nobody has seen them and no invitation was queued for them, so they
  are **deleted**, not marked: a superseded row would count as "scheduled" in compliance and
  keep an occasion key that the new version has to take over. The new version's unique key
  (participant, protocol_version, entry, instrument, wave) differs anyway, so nothing collides.
* Kept as they are: everything opened, sent, answered, expired or cancelled, and planned
  instances already due (the next dispatcher tick opens them under the version that was in
  force when they fell due). Answers are never touched.
* An occasion is (entry, instrument, wave), across versions, exactly as the invitation dedupe
  key ``invitation:<pid>:<entry>:<wave>`` names it: an occasion already held by a kept instance
  is not planned again under the new version, so a delivered invitation is never sent twice
  (and an amendment that renumbers waves should give the entry a new name).
* The new version's occurrences are planned in each participant's own time zone up to the
  rolling horizon; an occurrence that is already closed is not planned (it could only show up
  as "expired" for a survey nobody was ever offered).

Withdrawn participants (and people not yet consented) get nothing planned.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert
from sqlmodel import Session, col, func, select

from app.participants.models import Participant
from app.scheduling import service as scheduling
from app.scheduling.planner import Occurrence
from app.studies.models import ProtocolVersion, Study
from app.surveys.models import SurveyInstance

SCHEDULED_STATUSES = ("active", "paused")  # still being scheduled (paused: not contacted)
OccasionKey = tuple[str, str, int]  # (entry, instrument, wave)


@dataclass
class AmendmentReport:
    participants: int = 0
    replaced: int = 0  # future planned instances of older versions removed
    planned: int = 0  # instances planned under the new version


def apply_amendment(session: Session, study: Study, new_version: ProtocolVersion,
                    now: datetime) -> AmendmentReport:
    """Re-plan every scheduled participant's future under ``new_version`` (the caller commits).

    Audit-logged with counts only.
    """
    from app.audit import service as audit

    people = list(session.exec(select(Participant).where(*_scheduled(study.id))).all())
    report = AmendmentReport(participants=len(people))
    for first in range(0, len(people), 500):
        batch = people[first:first + 500]
        replaced, planned = _replan(session, batch, new_version, now)
        report.replaced += replaced
        report.planned += planned
    audit.append(session, actor=new_version.loaded_by, action="protocol.amendment",
                 target=f"study:{study.key}",
                 details={"version": new_version.version, **asdict(report)}, now=now)
    return report


def _scheduled(study_id: int | None) -> tuple[Any, ...]:
    return (Participant.study_id == study_id, col(Participant.status).in_(SCHEDULED_STATUSES),
            col(Participant.enrolled_at).is_not(None))


def participants_to_replan(session: Session, study_id: int) -> int:
    """How many people an amendment of this study would re-plan (for a dry run)."""
    return session.exec(select(func.count()).select_from(Participant)
                        .where(*_scheduled(study_id))).one()


def replan_participant(session: Session, participant: Participant, protocol: ProtocolVersion,
                       now: datetime) -> int:
    """Re-plan one participant's future under ``protocol`` (e.g. after a time-zone change),
    keeping every occasion already opened, sent or answered, in any version. Returns how many
    instances were planned (the caller commits)."""
    return _replan(session, [participant], protocol, now)[1]


def _replan(session: Session, people: list[Participant], protocol: ProtocolVersion,
            now: datetime) -> tuple[int, int]:
    ids = [p.id for p in people]
    if not ids:
        return 0, 0
    replaced = session.execute(delete(SurveyInstance).where(
        col(SurveyInstance.participant_id).in_(ids), col(SurveyInstance.status) == "planned",
        col(SurveyInstance.scheduled_at) > now)).rowcount  # type: ignore[attr-defined]
    held = _held_occasions(session, ids)
    rows = [_row(person, protocol, occurrence, now)
            for person in people
            for occurrence in scheduling.occurrences_for(protocol, person, now)
            if occurrence.key not in held[person.id] and occurrence.closes_at > now]
    if rows:
        session.execute(insert(SurveyInstance), rows)
    session.flush()
    return replaced, len(rows)


def _held_occasions(session: Session, ids: list[str]) -> dict[str, set[OccasionKey]]:
    """participant -> occasions that already have an instance (of any version)."""
    held: dict[str, set[OccasionKey]] = defaultdict(set)
    for pid, entry, instrument, wave in session.exec(select(
            SurveyInstance.participant_id, SurveyInstance.schedule_entry,
            SurveyInstance.instrument_key, SurveyInstance.wave)
            .where(col(SurveyInstance.participant_id).in_(ids))).all():
        held[pid].add((entry, instrument, wave))
    return held


def _row(participant: Participant, protocol: ProtocolVersion, occurrence: Occurrence,
         now: datetime) -> dict[str, object]:
    return {
        "id": str(uuid.uuid4()), "participant_id": participant.id,
        "protocol_version": protocol.version, "schedule_entry": occurrence.entry,
        "instrument_key": occurrence.instrument,
        "instrument_version": protocol.content["instruments"][occurrence.instrument]["version"],
        "wave": occurrence.wave, "position": occurrence.position, "status": "planned",
        "scheduled_at": occurrence.scheduled_at, "local_time": occurrence.local_time,
        "timezone": occurrence.timezone, "closes_at": occurrence.closes_at, "created_at": now,
    }

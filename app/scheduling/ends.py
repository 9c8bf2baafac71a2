"""When a participant's schedule ends: the moment their last survey closes.

Planned from the study's newest protocol (the schedule that governs what is still to come), and
never earlier than the close of any survey they already hold, so a survey planned under an
older protocol that closes later still counts.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlmodel import Session, col, func, select

from app.participants.models import Participant
from app.scheduling.planner import plan_occurrences
from app.scheduling.schedule import Schedule
from app.scheduling.service import schedule_of
from app.studies import service as studies
from app.studies.models import ProtocolVersion
from app.surveys.models import SurveyInstance


def shortest_schedule(schedule: Schedule) -> timedelta:
    """A lower bound of (schedule end - enrollment) for anyone in this schedule.

    Callers use it to skip people enrolled too recently for their schedule to have ended,
    without planning each one. The last study day depends on the weekday of enrollment (for
    weekday cadences), so the smallest over the seven weekdays counts; a day less covers the
    time of day and the zone (day N starts at local midnight, less than a day before
    ``enrolled_at + N days``).
    """
    last_days = [
        max((day for entry in schedule.entries
             for day in entry.cadence.days(enrolled_weekday=weekday,
                                           study_length_days=schedule.study_length_days)[-1:]),
            default=0)
        for weekday in range(7)]
    return timedelta(days=max(min(last_days) - 1, 0))


def schedule_end(session: Session, participant: Participant,
                 protocol: ProtocolVersion | None = None) -> datetime | None:
    """When the participant's last survey closes; None for someone not enrolled (no consent,
    so no schedule). ``protocol``: their study's newest, when the caller has it already."""
    if participant.enrolled_at is None:
        return None
    protocol = protocol or studies.latest_protocol(session, participant.study_id)
    assert protocol is not None and protocol.study_id == participant.study_id
    schedule = schedule_of(protocol)
    # Past the last study day (local dates, daylight-saving shifts included) in any zone.
    until = participant.enrolled_at + timedelta(days=(schedule.study_length_days or 0) + 2)
    planned = plan_occurrences(schedule, enrolled_at=participant.enrolled_at,
                               timezone=participant.timezone, until=until,
                               participant_key=participant.id)
    held = session.exec(select(func.max(SurveyInstance.closes_at)).where(
        SurveyInstance.participant_id == participant.id,
        col(SurveyInstance.status) != "cancelled")).one()
    closes = [o.closes_at for o in planned] + ([held] if held is not None else [])
    return max(closes, default=participant.enrolled_at)

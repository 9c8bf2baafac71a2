"""Materializing the study schedule as survey instances, in each participant's time zone.

Occurrences come from the pure planner (app/scheduling/planner.py, which documents the
daylight-saving rule) up to a rolling horizon. Instances are inserted idempotently: the unique
key (participant, protocol version, entry, instrument, wave) means planning twice, or from two
schedulers at once, never creates a second row.

``materialize`` plans one participant (at consent, after a change); the dispatcher's
``materialize_all`` plans everyone through ``materialize_many``: the BulkPlanner (occasions
resolved once per zone and enrollment date) and bulk inserts (COPY on PostgreSQL, falling back
to INSERT ... ON CONFLICT DO NOTHING through a staging table when a row exists already; INSERT OR
IGNORE on SQLite).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import NamedTuple
from zoneinfo import ZoneInfo

from sqlmodel import Session, col, func, select

from app.participants.models import Participant
from app.scheduling.planner import BulkPlanner, Occurrence, Slot, plan_occurrences
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
    planees = session.exec(select(Participant.id, Participant.study_id, Participant.enrolled_at,
                                  Participant.timezone)
                           .where(Participant.status == "active",
                                  col(Participant.enrolled_at).is_not(None))
                           .order_by(col(Participant.id))).all()
    return materialize_many(session, [Planee(*row) for row in planees], now=now)


class Planee(NamedTuple):
    """What planning needs to know about a participant."""

    id: str
    study_id: int
    enrolled_at: datetime
    timezone: str


def materialize_many(session: Session, people: Sequence[Planee], *, now: datetime,
                     until: datetime | None = None, chunk: int = 1000) -> int:
    """Insert the missing instances of many participants, up to the horizon (or ``until``),
    in bulk; commits each chunk of participants and returns how many rows were created.

    Waves are planned in order, so what a participant already has of an (entry, instrument),
    under any protocol version, is waves 0..k: only later waves are planned, under the latest
    version. Cancelled rows do not count (a wave an amendment cancelled is planned again under
    the new version). The unique key (ON CONFLICT DO NOTHING) still guards against a second
    scheduler planning the same rows at the same time.
    """
    created = 0
    plans: dict[int, tuple[ProtocolVersion, BulkPlanner, dict[str, str]]] = {}
    for first in range(0, len(people), chunk):
        batch = people[first:first + chunk]
        for study_id in {p.study_id for p in batch} - plans.keys():
            protocol = studies.latest_protocol(session, study_id)
            assert protocol is not None
            versions = {k: v["version"] for k, v in protocol.content["instruments"].items()}
            plans[study_id] = (protocol, BulkPlanner(schedule_of(protocol)), versions)
        latest = _latest_rows(session, [p.id for p in batch])
        todo = []
        for person in batch:
            protocol, planner, versions = plans[person.study_id]
            end = until or planner.schedule.horizon_end(now)
            slots = list(planner.slots(enrolled_at=person.enrolled_at,
                                       timezone=person.timezone, until=end,
                                       participant_key=person.id))
            last = latest.get(person.id)
            # Planned with this very version and nothing later due in the horizon: up to date
            # (the usual case on a tick), no need to look at which waves they hold.
            if last is None or last[1] != protocol.version or slots[-1:] and \
                    slots[-1].scheduled_at > last[0]:
                todo.append((person, protocol.version, versions, slots))
        held = _last_waves(session, [p.id for p, *_ in todo if p.id in latest])
        rows = [row for person, version, versions, slots in todo
                for row in _rows(person, version, versions, now, slots, held)]
        created += insert_instances(session, rows)
        session.commit()
    return created


def _latest_rows(session: Session, ids: list[str]) -> dict[str, tuple[datetime, int]]:
    """participant id -> (their latest scheduled_at, their oldest protocol version held)."""
    return {p: (at, version) for p, at, version in session.exec(
        select(SurveyInstance.participant_id, func.max(SurveyInstance.scheduled_at),
               func.min(SurveyInstance.protocol_version))
        .where(col(SurveyInstance.participant_id).in_(ids))
        .group_by(col(SurveyInstance.participant_id))).all()}


def _last_waves(session: Session, ids: list[str]) -> dict[tuple[str, str, str], int]:
    """(participant id, entry, instrument) -> the last wave held under any version."""
    if not ids:
        return {}
    return {(p, e, i): w for p, e, i, w in session.exec(
        select(SurveyInstance.participant_id, SurveyInstance.schedule_entry,
               SurveyInstance.instrument_key, func.max(SurveyInstance.wave))
        .where(col(SurveyInstance.participant_id).in_(ids), SurveyInstance.status != "cancelled")
        .group_by(col(SurveyInstance.participant_id), col(SurveyInstance.schedule_entry),
                  col(SurveyInstance.instrument_key))).all()}


def _rows(person: Planee, version: int, instrument_versions: dict[str, str], now: datetime,
          slots: Iterable[Slot], held: dict[tuple[str, str, str], int]
          ) -> Iterator[tuple[object, ...]]:
    for slot in slots:
        entry = slot.entry
        for position, instrument in enumerate(entry.instruments):
            if held and slot.wave <= held.get((person.id, entry.name, instrument), -1):
                continue
            yield (str(uuid.uuid4()), person.id, version, entry.name, instrument,
                   instrument_versions[instrument], slot.wave, position, "planned",
                   slot.scheduled_at, slot.local_time, person.timezone, slot.closes_at, now)


# PostgreSQL types of INSTANCE_COLUMNS, for binary COPY (less parsing on the server than text).
_PG_TYPES = ("text", "text", "int4", "text", "text", "text", "int4", "int4", "text",
             "timestamptz", "text", "text", "timestamptz", "timestamptz")
INSTANCE_COLUMNS = ("id", "participant_id", "protocol_version", "schedule_entry",
                    "instrument_key", "instrument_version", "wave", "position", "status",
                    "scheduled_at", "local_time", "timezone", "closes_at", "created_at")


def insert_instances(session: Session, rows: list[tuple[object, ...]]) -> int:
    """Insert survey instance rows (``INSTANCE_COLUMNS`` order), skipping any whose unique
    key exists already; returns how many were inserted. PostgreSQL: COPY (into a staging table
    with INSERT ... ON CONFLICT DO NOTHING if a row exists already); SQLite: INSERT OR IGNORE.
    """
    if not rows:
        return 0
    if session.get_bind().dialect.name == "postgresql":
        return _copy_instances(session, rows)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    result = session.connection().execute(
        sqlite_insert(SurveyInstance).on_conflict_do_nothing(),
        [dict(zip(INSTANCE_COLUMNS, row, strict=True)) for row in rows])
    return int(result.rowcount)


def _copy_instances(session: Session, rows: list[tuple[object, ...]]) -> int:
    import psycopg

    columns = ", ".join(INSTANCE_COLUMNS)
    raw = session.connection().connection.driver_connection
    try:  # psycopg's transaction() inside the session's transaction is a SAVEPOINT
        with raw.transaction(), raw.cursor() as cur, \
                cur.copy(f"COPY survey_instances ({columns}) FROM STDIN (FORMAT binary)") as copy:
            copy.set_types(_PG_TYPES)
            for row in rows:
                copy.write_row(row)
        return len(rows)
    except psycopg.errors.UniqueViolation:  # planned meanwhile by another scheduler
        pass
    with raw.cursor() as cur:
        cur.execute("CREATE TEMP TABLE IF NOT EXISTS survey_instances_stage "
                    "(LIKE survey_instances) ON COMMIT DROP")
        cur.execute("TRUNCATE survey_instances_stage")
        with cur.copy(f"COPY survey_instances_stage ({columns}) FROM STDIN (FORMAT binary)"
                      ) as copy:
            copy.set_types(_PG_TYPES)
            for row in rows:
                copy.write_row(row)
        cur.execute(f"INSERT INTO survey_instances ({columns}) SELECT {columns} "  # noqa: S608 (constant names)
                    "FROM survey_instances_stage ON CONFLICT DO NOTHING")
        return cur.rowcount


def upcoming(session: Session, participant: Participant, *, now: datetime
             ) -> list[SurveyInstance]:
    return list(session.exec(select(SurveyInstance).where(
        SurveyInstance.participant_id == participant.id,
        col(SurveyInstance.status).in_(("planned", "open")), col(SurveyInstance.closes_at) > now)
        .order_by(col(SurveyInstance.scheduled_at), col(SurveyInstance.position))).all())


def own_schedule(session: Session, participant: Participant) -> list[dict[str, object]]:
    """Every survey instance of the participant (past, open, planned, cancelled) with its times
    and status: their part of "download my data"."""
    rows = session.exec(select(SurveyInstance).where(
        SurveyInstance.participant_id == participant.id)
        .order_by(col(SurveyInstance.scheduled_at), col(SurveyInstance.schedule_entry),
                  col(SurveyInstance.wave), col(SurveyInstance.position))).all()
    return [{"instance_id": i.id, "schedule_entry": i.schedule_entry, "wave": i.wave,
             "instrument": i.instrument_key, "instrument_version": i.instrument_version,
             "protocol_version": i.protocol_version, "status": i.status,
             "opens_at": i.scheduled_at, "local_time": i.local_time, "timezone": i.timezone,
             "closes_at": i.closes_at, "opened_at": i.opened_at,
             "first_viewed_at": i.first_viewed_at, "completed_at": i.completed_at}
            for i in rows]


@dataclass(frozen=True)
class StudyProgress:
    """How far a participant is through the study, for the thank-you page."""

    sets_completed: int  # occasions (entry and wave) with every questionnaire answered
    sets_planned: int  # occasions the study's schedule plans from enrollment to its last day
    week: int | None  # study week of today (1-based), None without a study length
    weeks: int | None


def progress(session: Session, participant: Participant, *, now: datetime) -> StudyProgress:
    """Questionnaire sets done and planned in all, and the study week, from the schedule of the
    study's current protocol (so an amendment's new length counts)."""
    protocol = studies.latest_protocol(session, participant.study_id)
    assert protocol is not None and participant.enrolled_at is not None
    schedule = schedule_of(protocol)
    zone = ZoneInfo(participant.timezone)
    enrolled_local = participant.enrolled_at.astimezone(zone)
    planned = sum(len(entry.cadence.days(enrolled_weekday=enrolled_local.weekday(),
                                         study_length_days=schedule.study_length_days))
                  for entry in schedule.entries)
    states: dict[tuple[str, int], set[str]] = {}
    for entry, wave, status in session.exec(
            select(SurveyInstance.schedule_entry, SurveyInstance.wave, SurveyInstance.status)
            .where(SurveyInstance.participant_id == participant.id,
                   SurveyInstance.status != "cancelled")).all():
        states.setdefault((entry, wave), set()).add(status)
    completed = sum(1 for statuses in states.values() if statuses == {"completed"})
    if schedule.study_length_days is None:
        return StudyProgress(completed, max(planned, completed), None, None)
    weeks = max(1, schedule.study_length_days // 7)
    day = (now.astimezone(zone).date() - enrolled_local.date()).days
    return StudyProgress(completed, max(planned, completed), min(day // 7 + 1, weeks), weeks)


def next_occasion(session: Session, participant: Participant, *, now: datetime
                  ) -> SurveyInstance | None:
    """The first planned questionnaire that opens after ``now`` (None when none is planned)."""
    return next((i for i in upcoming(session, participant, now=now)
                 if i.status == "planned" and i.scheduled_at > now), None)

"""The fast path: BulkPlanner gives exactly what plan_occurrences gives; bulk inserts and the
tick's planning are idempotent on both databases; the benchmark's functions run (tiny size)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlmodel import Session, delete, func, select

from app.db import make_engine
from app.notify.models import OutboxMessage
from app.scheduling import dispatcher
from app.scheduling import service as scheduling
from app.scheduling.planner import BulkPlanner, plan_occurrences
from app.scheduling.schedule import parse_schedule
from app.studies import service as studies
from app.surveys.models import SurveyInstance
from tests.support.factory import consented_participants

RECALL = {"baseline": 0, "phq9": 14, "who5": 14, "mood": 0, "swls": 28}
ENTRIES = [
    {"name": "baseline", "instruments": ["baseline", "phq9"], "cadence": {"at_enrollment": True},
     "open_for_hours": 336},
    {"name": "biweekly", "instruments": ["phq9", "who5"], "cadence": {"every_days": 14},
     "local_time": "02:30", "open_for_hours": 72, "reminders_hours": [24]},
    {"name": "early", "instruments": ["swls"], "cadence": {"offsets_days": [0, 28, 56]},
     "local_time": "01:30", "open_for_hours": 24},  # day 0 at 01:30 has usually passed
    {"name": "esm", "instruments": ["mood"], "cadence": {"weekdays": ["mon", "thu"]},
     "local_window": {"start": "09:00", "end": "21:00"}, "open_for_hours": 2},
]
SCHEDULE = parse_schedule({"study_length_days": 120, "entries": ENTRIES}, RECALL)
ZONES = ["America/New_York", "Europe/Berlin", "Australia/Sydney", "Asia/Shanghai",
         "Australia/Lord_Howe", "Asia/Kolkata", "America/St_Johns"]


def _reference(enrolled: datetime, zone: str, until: datetime, key: str) -> set[tuple[Any, ...]]:
    return {(o.entry, o.instrument, o.wave, o.scheduled_at, o.local_time, o.closes_at)
            for o in plan_occurrences(SCHEDULE, enrolled_at=enrolled, timezone=zone,
                                      until=until, participant_key=key)}


def _bulk(planner: BulkPlanner, enrolled: datetime, zone: str, until: datetime, key: str
          ) -> set[tuple[Any, ...]]:
    return {(s.entry.name, instrument, s.wave, s.scheduled_at, s.local_time, s.closes_at)
            for s in planner.slots(enrolled_at=enrolled, timezone=zone, until=until,
                                   participant_key=key)
            for instrument in s.entry.instruments}


@settings(max_examples=150, deadline=None)
@given(zone=st.sampled_from(ZONES),
       minutes=st.integers(min_value=0, max_value=400 * 24 * 60),
       horizon_days=st.integers(min_value=0, max_value=140))
def test_bulk_planner_matches_plan_occurrences(zone: str, minutes: int, horizon_days: int
                                               ) -> None:
    """Across daylight-saving changes, day-0 lateness, windows and every horizon cut; one
    planner is reused so that its per-(zone, date) cache is exercised too."""
    enrolled = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes)
    until = enrolled + timedelta(days=horizon_days, hours=minutes % 24)
    key = f"p-{minutes}"
    planner = _PLANNER
    assert _bulk(planner, enrolled, zone, until, key) == _reference(enrolled, zone, until, key)


_PLANNER = BulkPlanner(SCHEDULE)


def test_insert_instances_skips_rows_that_exist(session, clock, loaded_study):
    [person] = consented_participants(session, 1, now=clock(), prefix="bulk")
    row = (str(uuid.uuid4()), person.id, 1, "biweekly", "who5", "1.0", 3, 0, "planned",
           clock(), "2026-11-02T10:00", "Europe/Berlin", clock() + timedelta(days=1), clock())
    assert scheduling.insert_instances(session, [row]) == 1
    session.commit()
    twin = (str(uuid.uuid4()), *row[1:])  # same unique key, new id
    other = (str(uuid.uuid4()), *row[1:6], 4, *row[7:])
    assert scheduling.insert_instances(session, [twin, other]) == 1  # only the new wave
    session.commit()
    assert session.exec(select(func.count()).select_from(SurveyInstance)).one() == 2


def test_tick_planning_is_idempotent_and_matches_one_by_one_planning(session, clock,
                                                                     loaded_study):
    people = consented_participants(session, 5, now=clock(), prefix="idem")
    now = clock()
    created = scheduling.materialize_all(session, now=now)
    assert created > 0
    assert scheduling.materialize_all(session, now=now) == 0
    later = now + timedelta(days=20)  # the horizon rolls forward by 20 days, nothing twice
    added = scheduling.materialize_all(session, now=later)
    session.expire_all()
    protocol = studies.latest_protocol(session, people[0].study_id)
    assert protocol is not None
    expected = {o.key for o in scheduling.occurrences_for(protocol, people[0], later)}
    rows = session.exec(select(SurveyInstance.schedule_entry, SurveyInstance.instrument_key,
                               SurveyInstance.wave)
                        .where(SurveyInstance.participant_id == people[0].id)).all()
    assert sorted(rows) == sorted(expected)
    assert created + added == 5 * len(expected)


def test_open_due_queues_one_invitation_per_occasion_with_the_payload_python_writes(
        session, clock, loaded_study):
    """Both backends (PostgreSQL builds the outbox rows in SQL): same keys, same payload text,
    microseconds included."""
    [person] = consented_participants(session, 1, now=clock(), prefix="payload")
    session.execute(delete(SurveyInstance))  # only the rows below
    now = clock()
    closes = {3: now + timedelta(days=1, microseconds=250), 4: now + timedelta(days=2)}
    rows = [(str(uuid.uuid4()), person.id, 1, "biweekly", instrument, "1.0", wave, position,
             "planned", now - timedelta(minutes=5), "2026-11-02T10:00", "Europe/Berlin",
             closes[wave], now)
            for wave in closes for position, instrument in enumerate(("phq9", "who5"))]
    scheduling.insert_instances(session, rows)
    session.commit()
    assert dispatcher.open_due(session, now) == (4, 2)
    assert dispatcher.open_due(session, now) == (0, 0)
    messages = session.exec(select(OutboxMessage).where(
        OutboxMessage.participant_id == person.id, OutboxMessage.kind == "invitation")).all()
    assert sorted((m.dedupe_key, m.payload, m.status, m.next_attempt_at) for m in messages) == [
        (f"invitation:{person.id}:biweekly:{wave}",
         {"entry": "biweekly", "wave": wave, "closes_at": closes[wave].isoformat()},
         "pending", now)
        for wave in (3, 4)]
    assert ".000250+00:00" in messages[0].payload["closes_at"] + messages[1].payload["closes_at"]


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_benchmark_runs_at_a_tiny_size(db_url, tmp_path: Path) -> None:
    import bench.scheduling as bench

    dsn = db_url.replace("postgresql+psycopg", "postgresql")
    plan, tick = bench.run(db_url, dsn, participants=40, weeks=4, workdir=tmp_path)
    assert plan["occurrences"] == plan["baseline_rows"] > 40 * 9
    assert tick["due_invitations"] == tick["baseline_invitations"] == 4
    assert tick["opened"] == tick["baseline_opened"] == 4 * 9
    engine = make_engine(db_url)
    with Session(engine) as s:
        opened = s.exec(select(func.count()).select_from(SurveyInstance)
                        .where(SurveyInstance.status == "open")).one()
    engine.dispose()
    assert opened == 4 * 9


def test_planner_rejects_naive_times() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        list(_PLANNER.slots(enrolled_at=datetime(2026, 1, 1), timezone="UTC",
                            until=datetime(2026, 2, 1, tzinfo=UTC), participant_key="k"))

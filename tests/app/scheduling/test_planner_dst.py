"""Daylight saving: occurrences follow local wall time, never skipped or doubled, UTC right.

Hand-computed UTC values for the 2026/2027 transitions (offsets from the IANA database):
New York EST -5 / EDT -4 (2026-03-08, 2026-11-01, 2027-03-14, 2027-11-07), Berlin CET +1 /
CEST +2 (2026-03-29, 2026-10-25, 2027-03-28, 2027-10-31), Sydney AEST +10 / AEDT +11 and
Adelaide ACST +9:30 / ACDT +10:30 (ends 2026-04-05 and 2027-04-04, starts 2026-10-04 and
2027-10-03), Lord Howe +10:30 / +11 (a 30-minute change), Shanghai +8 and Kolkata +5:30 (none).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from app.scheduling.planner import Occurrence, plan_occurrences
from app.scheduling.schedule import Schedule, parse_schedule

ZONES = ["America/New_York", "Europe/Berlin", "Australia/Sydney", "Asia/Shanghai",
         "Asia/Kolkata", "Australia/Adelaide"]
# 18:00 is an ordinary evening; 02:30 falls in the gap or the overlap in most of these zones;
# 01:30 is New York's overlap; 00:00 and 23:30 are the edges of a day.
TIMES = ["18:00", "02:30", "01:30", "00:00", "23:30", "03:00"]
ENROLLED = datetime(2026, 1, 1, 12, 0)  # local wall time of enrollment
LENGTH = 740  # days: covers 2026 and 2027 from the enrollment date


def every(days: int, local_time: str, *, start_day: int | None = None,
          length: int = LENGTH) -> Schedule:
    cadence: dict = {"every_days": days}
    if start_day is not None:
        cadence["start_day"] = start_day
    return parse_schedule({"study_length_days": length, "entries": [
        {"name": "s", "instruments": ["x"], "cadence": cadence, "local_time": local_time}]},
        {"x": 0})


def plan(schedule: Schedule, zone: str, enrolled_local: datetime = ENROLLED) -> list[Occurrence]:
    enrolled_at = enrolled_local.replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)
    return plan_occurrences(schedule, enrolled_at=enrolled_at, timezone=zone,
                            until=datetime(2029, 1, 1, tzinfo=UTC), participant_key="p")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# (zone, local time, study date, expected UTC, expected wall time)
HAND_COMPUTED = [
    # New York, spring forward 2026-03-08 02:00 EST -> 03:00 EDT
    ("America/New_York", "18:00", "2026-03-07", "2026-03-07T23:00", "2026-03-07T18:00"),
    ("America/New_York", "18:00", "2026-03-08", "2026-03-08T22:00", "2026-03-08T18:00"),
    ("America/New_York", "02:30", "2026-03-07", "2026-03-07T07:30", "2026-03-07T02:30"),
    ("America/New_York", "02:30", "2026-03-08", "2026-03-08T07:30", "2026-03-08T03:30"),  # gap
    ("America/New_York", "02:30", "2026-03-09", "2026-03-09T06:30", "2026-03-09T02:30"),
    # New York, fall back 2026-11-01 02:00 EDT -> 01:00 EST
    ("America/New_York", "01:30", "2026-10-31", "2026-10-31T05:30", "2026-10-31T01:30"),
    ("America/New_York", "01:30", "2026-11-01", "2026-11-01T05:30", "2026-11-01T01:30"),  # 1st
    ("America/New_York", "01:30", "2026-11-02", "2026-11-02T06:30", "2026-11-02T01:30"),
    ("America/New_York", "18:00", "2026-11-01", "2026-11-01T23:00", "2026-11-01T18:00"),
    ("America/New_York", "02:30", "2027-03-14", "2027-03-14T07:30", "2027-03-14T03:30"),
    ("America/New_York", "01:30", "2027-11-07", "2027-11-07T05:30", "2027-11-07T01:30"),
    # Berlin, 2026-03-29 02:00 CET -> 03:00 CEST; 2026-10-25 03:00 CEST -> 02:00 CET
    ("Europe/Berlin", "18:00", "2026-03-28", "2026-03-28T17:00", "2026-03-28T18:00"),
    ("Europe/Berlin", "18:00", "2026-03-29", "2026-03-29T16:00", "2026-03-29T18:00"),
    ("Europe/Berlin", "02:30", "2026-03-29", "2026-03-29T01:30", "2026-03-29T03:30"),  # gap
    ("Europe/Berlin", "02:30", "2026-10-25", "2026-10-25T00:30", "2026-10-25T02:30"),  # first
    ("Europe/Berlin", "02:30", "2026-10-26", "2026-10-26T01:30", "2026-10-26T02:30"),
    ("Europe/Berlin", "18:00", "2026-10-25", "2026-10-25T17:00", "2026-10-25T18:00"),
    ("Europe/Berlin", "02:30", "2027-03-28", "2027-03-28T01:30", "2027-03-28T03:30"),
    ("Europe/Berlin", "02:30", "2027-10-31", "2027-10-31T00:30", "2027-10-31T02:30"),
    # Sydney, 2026-04-05 03:00 AEDT -> 02:00 AEST; 2026-10-04 02:00 AEST -> 03:00 AEDT
    ("Australia/Sydney", "18:00", "2026-04-04", "2026-04-04T07:00", "2026-04-04T18:00"),
    ("Australia/Sydney", "18:00", "2026-04-05", "2026-04-05T08:00", "2026-04-05T18:00"),
    ("Australia/Sydney", "02:30", "2026-04-05", "2026-04-04T15:30", "2026-04-05T02:30"),  # 1st
    ("Australia/Sydney", "02:30", "2026-10-04", "2026-10-03T16:30", "2026-10-04T03:30"),  # gap
    ("Australia/Sydney", "18:00", "2026-10-03", "2026-10-03T08:00", "2026-10-03T18:00"),
    ("Australia/Sydney", "18:00", "2026-10-04", "2026-10-04T07:00", "2026-10-04T18:00"),
    ("Australia/Sydney", "02:30", "2027-04-04", "2027-04-03T15:30", "2027-04-04T02:30"),
    ("Australia/Sydney", "02:30", "2027-10-03", "2027-10-02T16:30", "2027-10-03T03:30"),
    # Adelaide: same dates, half-hour offsets
    ("Australia/Adelaide", "18:00", "2026-04-04", "2026-04-04T07:30", "2026-04-04T18:00"),
    ("Australia/Adelaide", "18:00", "2026-04-05", "2026-04-05T08:30", "2026-04-05T18:00"),
    ("Australia/Adelaide", "02:30", "2026-04-05", "2026-04-04T16:00", "2026-04-05T02:30"),
    ("Australia/Adelaide", "02:30", "2026-10-04", "2026-10-03T17:00", "2026-10-04T03:30"),
    ("Australia/Adelaide", "18:00", "2026-10-03", "2026-10-03T08:30", "2026-10-03T18:00"),
    ("Australia/Adelaide", "18:00", "2026-10-04", "2026-10-04T07:30", "2026-10-04T18:00"),
    # No daylight saving: the offset never moves
    ("Asia/Shanghai", "18:00", "2026-03-08", "2026-03-08T10:00", "2026-03-08T18:00"),
    ("Asia/Shanghai", "02:30", "2026-10-25", "2026-10-24T18:30", "2026-10-25T02:30"),
    ("Asia/Kolkata", "18:00", "2026-03-29", "2026-03-29T12:30", "2026-03-29T18:00"),
    ("Asia/Kolkata", "02:30", "2026-11-01", "2026-10-31T21:00", "2026-11-01T02:30"),
    # Lord Howe moves by 30 minutes: 02:00 -> 02:30 on 2026-10-04, 02:00 -> 01:30 on 2026-04-05
    ("Australia/Lord_Howe", "02:15", "2026-10-04", "2026-10-03T15:45", "2026-10-04T02:45"),
    ("Australia/Lord_Howe", "01:45", "2026-04-05", "2026-04-04T14:45", "2026-04-05T01:45"),
]


@pytest.mark.parametrize(("zone", "local_time", "day", "expected_utc", "expected_wall"),
                         HAND_COMPUTED, ids=[f"{z}-{t}-{d}" for z, t, d, *_ in HAND_COMPUTED])
def test_hand_computed_utc(zone: str, local_time: str, day: str, expected_utc: str,
                           expected_wall: str) -> None:
    occurrences = [o for o in plan(every(1, local_time), zone)
                   if o.nominal_local.date() == date.fromisoformat(day)]
    assert len(occurrences) == 1  # never skipped, never doubled
    occurrence = occurrences[0]
    assert occurrence.scheduled_at == utc(expected_utc)
    assert occurrence.local_time == expected_wall
    assert occurrence.timezone == zone


def _gap(zone: ZoneInfo, wall: datetime) -> timedelta:
    # Positive inside a spring-forward gap: the offset after the change minus the one before.
    after = wall.replace(tzinfo=zone, fold=1).utcoffset()
    before = wall.replace(tzinfo=zone, fold=0).utcoffset()
    assert after is not None and before is not None
    return max(after - before, timedelta(0))


def check_series(occurrences: list[Occurrence], zone_name: str, days: int) -> int:
    """Assert the invariants of an every-N-days series; returns how many were shifted."""
    zone = ZoneInfo(zone_name)
    for a, b in pairwise(occurrences):
        assert (b.local_date - a.local_date).days == days  # no date skipped or doubled
        assert (b.nominal_local - a.nominal_local) == timedelta(days=days)
        assert b.wave == a.wave + 1 and b.day == a.day + days
        assert b.scheduled_at > a.scheduled_at
    shifted = 0
    for o in occurrences:
        # The stored UTC instant really is the stored wall time in the zone.
        assert o.scheduled_at.astimezone(zone).replace(tzinfo=None) == o.local
        assert o.scheduled_at.tzinfo is UTC
        gap = _gap(zone, o.nominal_local)
        assert o.local == o.nominal_local + gap  # the intended time, or moved by the gap
        shifted += gap > timedelta(0)
    return shifted


# Spring-forward days in 2026 and 2027 on which 02:30 does not exist.
GAP_DAYS = {
    "America/New_York": 2, "Europe/Berlin": 2, "Australia/Sydney": 2, "Australia/Adelaide": 2,
    "Asia/Shanghai": 0, "Asia/Kolkata": 0,
}


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("local_time", TIMES)
def test_daily_across_two_years(zone: str, local_time: str) -> None:
    occurrences = plan(every(1, local_time), zone)
    assert len(occurrences) == LENGTH  # days 1..LENGTH, every one of them
    assert occurrences[0].local_date == date(2026, 1, 2)
    assert occurrences[-1].local_date == date(2026, 1, 1) + timedelta(days=LENGTH)
    shifted = check_series(occurrences, zone, 1)
    assert shifted == (GAP_DAYS[zone] if local_time == "02:30" else 0)


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("local_time", TIMES)
def test_biweekly_across_two_years(zone: str, local_time: str) -> None:
    occurrences = plan(every(14, local_time), zone)
    assert len(occurrences) == LENGTH // 14
    assert [o.day for o in occurrences[:3]] == [14, 28, 42]
    check_series(occurrences, zone, 14)


TRANSITIONS = {
    "America/New_York": ["2026-03-08", "2026-11-01", "2027-03-14", "2027-11-07"],
    "Europe/Berlin": ["2026-03-29", "2026-10-25", "2027-03-28", "2027-10-31"],
    "Australia/Sydney": ["2026-04-05", "2026-10-04", "2027-04-04", "2027-10-03"],
    "Australia/Adelaide": ["2026-04-05", "2026-10-04", "2027-04-04", "2027-10-03"],
}


@pytest.mark.parametrize(("zone", "day"), [(z, d) for z, ds in TRANSITIONS.items() for d in ds])
@pytest.mark.parametrize("local_time", ["02:30", "01:30", "18:00"])
def test_biweekly_landing_on_a_transition_day(zone: str, day: str, local_time: str) -> None:
    # Enrolled four weeks before the change: the second follow-up falls on the transition day.
    change = date.fromisoformat(day)
    enrolled = datetime.combine(change - timedelta(days=28), datetime.min.time()).replace(hour=12)
    occurrences = plan(every(14, local_time, length=84), zone, enrolled)
    assert [o.local_date for o in occurrences] == [
        change + timedelta(days=14 * k) for k in range(-1, 5)]
    check_series(occurrences, zone, 14)
    if local_time == "18:00":
        # The same wall time before and after the change: UTC moved by the hour of the change.
        elapsed = occurrences[1].scheduled_at - occurrences[0].scheduled_at
        assert abs(elapsed - timedelta(days=14)) == timedelta(hours=1)


def test_elapsed_hours_between_daily_occurrences_are_23_or_25_on_change_days() -> None:
    occurrences = plan(every(1, "18:00"), "America/New_York")
    by_date = {o.local_date: o for o in occurrences}
    spring = by_date[date(2026, 3, 8)].scheduled_at - by_date[date(2026, 3, 7)].scheduled_at
    autumn = by_date[date(2026, 11, 1)].scheduled_at - by_date[date(2026, 10, 31)].scheduled_at
    assert spring == timedelta(hours=23)
    assert autumn == timedelta(hours=25)


def test_gap_starting_at_23_00_keeps_the_wave_and_moves_past_midnight() -> None:
    # America/Nuuk springs forward at 23:00 local (-02 -> -01) on 2026-03-28: 23:30 does not
    # exist that day and becomes 00:30 on 2026-03-29, the documented exception; still one
    # occurrence per study day, in order.
    occurrences = plan(every(1, "23:30", length=120), "America/Nuuk")
    by_nominal = {o.nominal_local.date(): o for o in occurrences}
    moved = by_nominal[date(2026, 3, 28)]
    assert moved.local == datetime(2026, 3, 29, 0, 30)
    assert moved.scheduled_at == utc("2026-03-29T01:30")
    assert by_nominal[date(2026, 3, 29)].local == datetime(2026, 3, 29, 23, 30)
    assert len(occurrences) == 120
    assert all(b.scheduled_at > a.scheduled_at for a, b in pairwise(occurrences))

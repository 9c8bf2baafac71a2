"""plan_occurrences: entries, waves, windows, reminders, limits and bad arguments."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from app.scheduling.planner import Occurrence, plan_occurrences, resolve_local, window_time
from app.scheduling.schedule import Schedule, ScheduleError, parse_schedule

RECALL = {"baseline": 0, "phq9": 14, "who5": 14, "mood": 0, "swls": 28}
NY = "America/New_York"


def schedule(*entries: dict[str, Any], length: int = 84) -> Schedule:
    return parse_schedule({"study_length_days": length, "entries": list(entries)}, RECALL)


BASELINE = {"name": "baseline", "instruments": ["baseline", "phq9"],
            "cadence": {"at_enrollment": True}, "open_for_hours": 336}
BIWEEKLY = {"name": "biweekly", "instruments": ["phq9", "who5"], "cadence": {"every_days": 14},
            "local_time": "18:00", "open_for_hours": 72, "reminders_hours": [24, 48]}
ESM = {"name": "esm", "instruments": ["mood"], "cadence": {"weekdays": ["mon", "thu"]},
       "local_window": {"start": "09:00", "end": "21:00"}, "open_for_hours": 2}


def local_instant(wall: str, zone: str = NY) -> datetime:
    return datetime.fromisoformat(wall).replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)


def plan(sched: Schedule, *, enrolled: str = "2026-02-02T10:00", zone: str = NY,
         until: datetime | None = None, key: str = "participant-1") -> list[Occurrence]:
    return plan_occurrences(sched, enrolled_at=local_instant(enrolled, zone), timezone=zone,
                            until=until or datetime(2027, 1, 1, tzinfo=UTC),
                            participant_key=key)


def test_at_enrollment_opens_at_consent_as_wave_0() -> None:
    occurrences = plan(schedule(BASELINE))
    assert [(o.entry, o.instrument, o.position, o.wave, o.day) for o in occurrences] == [
        ("baseline", "baseline", 0, 0, 0), ("baseline", "phq9", 1, 0, 0)]
    first = occurrences[0]
    assert first.scheduled_at == datetime(2026, 2, 2, 15, 0, tzinfo=UTC)
    assert first.local_time == "2026-02-02T10:00"
    assert first.closes_at == first.scheduled_at + timedelta(hours=336)
    assert first.reminders == ()


def test_biweekly_instances_per_instrument_with_reminders_and_closing() -> None:
    occurrences = [o for o in plan(schedule(BASELINE, BIWEEKLY)) if o.entry == "biweekly"]
    assert [o.day for o in occurrences[::2]] == [14, 28, 42, 56, 70, 84]  # day 84 included
    assert [o.wave for o in occurrences[::2]] == [0, 1, 2, 3, 4, 5]
    assert [o.instrument for o in occurrences[:2]] == ["phq9", "who5"]
    first = occurrences[0]
    assert first.local_time == "2026-02-16T18:00"
    assert first.scheduled_at == datetime(2026, 2, 16, 23, 0, tzinfo=UTC)
    assert first.reminders == (first.scheduled_at + timedelta(hours=24),
                               first.scheduled_at + timedelta(hours=48))
    assert first.closes_at == first.scheduled_at + timedelta(hours=72)


def test_answer_window_is_elapsed_hours_even_across_a_change() -> None:
    daily = {"name": "daily", "instruments": ["mood"], "cadence": {"every_days": 1},
             "local_time": "18:00", "open_for_hours": 24, "reminders_hours": [12]}
    occurrences = plan(schedule(daily, length=60), enrolled="2026-03-01T09:00")
    saturday = next(o for o in occurrences if o.local_date == date(2026, 3, 7))
    closes_local = saturday.closes_at.astimezone(ZoneInfo(NY))
    assert closes_local.replace(tzinfo=None) == datetime(2026, 3, 8, 19, 0)  # 24 real hours


def test_output_is_ordered_by_time_then_entry_then_position() -> None:
    occurrences = plan(schedule(BASELINE, BIWEEKLY, ESM))
    keys = [(o.scheduled_at, o.entry, o.position) for o in occurrences]
    assert [k[0] for k in keys] == sorted(k[0] for k in keys)
    assert occurrences[0].entry == "baseline" and occurrences[1].position == 1


def test_keys_are_unique() -> None:
    occurrences = plan(schedule(BASELINE, BIWEEKLY, ESM))
    assert len({o.key for o in occurrences}) == len(occurrences)


def test_until_is_exclusive_and_waves_do_not_depend_on_it() -> None:
    sched = schedule(BASELINE, BIWEEKLY)
    full = plan(sched)
    cut = full[5].scheduled_at
    partial = plan(sched, until=cut)
    assert partial == [o for o in full if o.scheduled_at < cut]
    assert all(o.scheduled_at < cut for o in partial)
    assert plan(sched, until=local_instant("2026-02-02T10:00")) == []  # at enrollment: nothing


def test_horizon_end_feeds_until() -> None:
    sched = parse_schedule({"study_length_days": 84, "horizon_days": 15,
                            "entries": [BASELINE, BIWEEKLY]}, RECALL)
    now = local_instant("2026-02-02T10:00")
    until = sched.horizon_end(now)
    assert until == now + timedelta(days=15)
    assert {(o.entry, o.wave) for o in plan(sched, until=until)} == {
        ("baseline", 0), ("biweekly", 0)}


def test_replanning_in_another_zone_keeps_the_waves() -> None:
    # Same enrollment instant, participant moves Berlin: same study days and waves, new times.
    sched = schedule(BASELINE, BIWEEKLY)
    enrolled_at = local_instant("2026-02-02T10:00")
    until = datetime(2027, 1, 1, tzinfo=UTC)
    here = plan_occurrences(sched, enrolled_at=enrolled_at, timezone=NY, until=until,
                            participant_key="p")
    there = plan_occurrences(sched, enrolled_at=enrolled_at, timezone="Europe/Berlin",
                             until=until, participant_key="p")
    assert [o.key for o in here] == [o.key for o in there]
    moved = [o for o in there if o.entry == "biweekly"]
    assert moved[0].local_time == "2026-02-16T18:00" and moved[0].timezone == "Europe/Berlin"
    assert moved[0].scheduled_at == datetime(2026, 2, 16, 17, 0, tzinfo=UTC)


def test_planning_is_deterministic() -> None:
    sched = schedule(BASELINE, BIWEEKLY, ESM)
    assert plan(sched) == plan(sched)


def test_day_0_time_already_passed_opens_at_enrollment() -> None:
    offsets = {"name": "diary", "instruments": ["mood"], "cadence": {"offsets_days": [0, 7]},
               "local_time": "08:00"}
    late, later = plan(schedule(offsets), enrolled="2026-02-02T10:00")
    assert late.wave == 0 and late.day == 0
    assert late.scheduled_at == local_instant("2026-02-02T10:00")  # late, not skipped
    assert late.local_time == "2026-02-02T10:00"
    assert late.nominal_local == datetime(2026, 2, 2, 8, 0)
    assert later.local_time == "2026-02-09T08:00"
    early = plan(schedule(offsets), enrolled="2026-02-02T07:00")[0]
    assert early.local_time == "2026-02-02T08:00"  # not yet passed: at the planned time


def test_offsets_are_planned_in_day_order() -> None:
    offsets = {"name": "follow", "instruments": ["swls"], "cadence": {"offsets_days": [60, 30]},
               "local_time": "12:00"}
    occurrences = plan(schedule(offsets))
    assert [(o.wave, o.day) for o in occurrences] == [(0, 30), (1, 60)]


def test_study_length_stops_occurrences() -> None:
    daily = {"name": "d", "instruments": ["mood"], "cadence": {"every_days": 1},
             "local_time": "12:00"}
    occurrences = plan(schedule(daily, length=10))
    assert [o.day for o in occurrences] == list(range(1, 11))


@pytest.mark.parametrize(("enrolled", "expected_days"), [
    ("2026-02-02T10:00", [3, 7, 10, 14]),  # a Monday: Thursday is day 3, Monday day 7
    ("2026-02-05T10:00", [4, 7, 11, 14]),  # a Thursday: day 0 itself is not used
    ("2026-02-08T10:00", [1, 4, 8, 11]),  # a Sunday
])
def test_weekdays_follow_the_local_calendar(enrolled: str, expected_days: list[int]) -> None:
    occurrences = plan(schedule(ESM, length=14), enrolled=enrolled)
    assert [o.day for o in occurrences] == expected_days
    assert {o.local_date.weekday() for o in occurrences} == {0, 3}


def test_weekdays_use_the_participant_date_not_the_utc_date() -> None:
    # 2026-02-02 03:00 UTC is still Sunday evening in New York: day 1 is Monday.
    sched = schedule(ESM, length=7)
    occurrences = plan_occurrences(sched, enrolled_at=datetime(2026, 2, 2, 3, 0, tzinfo=UTC),
                                   timezone=NY, until=datetime(2027, 1, 1, tzinfo=UTC),
                                   participant_key="p")
    assert [(o.day, o.local_date) for o in occurrences] == [
        (1, date(2026, 2, 2)), (4, date(2026, 2, 5))]


# --- random local windows --------------------------------------------------------------------


def esm_times(key: str, zone: str = NY) -> list[datetime]:
    return [o.local for o in plan(schedule(ESM, length=84), key=key, zone=zone)]


def test_window_times_fall_inside_the_window() -> None:
    for key in (f"participant-{i}" for i in range(40)):
        for local in esm_times(key):
            assert time(9, 0) <= local.time() < time(21, 0)


def test_window_times_are_deterministic_per_participant() -> None:
    assert esm_times("participant-7") == esm_times("participant-7")


def test_window_times_differ_across_participants_and_waves() -> None:
    firsts = {esm_times(f"participant-{i}")[0].time() for i in range(50)}
    assert len(firsts) > 40  # 720 possible minutes
    assert len({t.time() for t in esm_times("participant-1")}) > 15  # 24 waves
    assert esm_times("participant-1") != esm_times("participant-2")


def test_window_time_is_shared_by_the_instruments_of_an_entry() -> None:
    both = dict(ESM, instruments=["mood", "baseline"])
    occurrences = plan(schedule(both))
    for first, second in zip(occurrences[::2], occurrences[1::2], strict=True):
        assert first.wave == second.wave and first.scheduled_at == second.scheduled_at


def test_window_time_is_the_same_in_any_zone() -> None:
    # The minute is drawn from participant, entry and wave only: a move keeps the wall time.
    tokyo = esm_times("p", "Asia/Tokyo")
    assert [t.time() for t in esm_times("p", NY)] == [t.time() for t in tokyo]


def test_window_time_in_a_gap_is_moved_by_the_rule() -> None:
    entry = schedule({"name": "night", "instruments": ["mood"], "cadence": {"every_days": 1},
                      "local_window": {"start": "02:00", "end": "03:00"}}).entries[0]
    wave = 0
    nominal = datetime.combine(date(2026, 3, 8), window_time(entry, "p", wave))
    instant, local = resolve_local(nominal, ZoneInfo(NY))
    assert local == nominal + timedelta(hours=1)
    assert time(3, 0) <= local.time() < time(4, 0)
    assert instant.astimezone(ZoneInfo(NY)).replace(tzinfo=None) == local


# --- bad arguments ---------------------------------------------------------------------------


@pytest.mark.parametrize("zone", ["Mars/Olympus", "", "../../etc/passwd", "America/New York"])
def test_unknown_time_zone_is_a_schedule_error(zone: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        plan_occurrences(schedule(BASELINE), enrolled_at=datetime(2026, 1, 1, tzinfo=UTC),
                         timezone=zone, until=datetime(2026, 2, 1, tzinfo=UTC),
                         participant_key="p")
    assert str(caught.value) == f"timezone: unknown IANA time zone {zone!r}"


@pytest.mark.parametrize("which", ["enrolled_at", "until"])
def test_naive_datetimes_are_refused(which: str) -> None:
    args = {"enrolled_at": datetime(2026, 1, 1, tzinfo=UTC),
            "until": datetime(2026, 2, 1, tzinfo=UTC)}
    args[which] = args[which].replace(tzinfo=None)
    with pytest.raises(ValueError, match=f"{which} must be timezone-aware"):
        plan_occurrences(schedule(BASELINE), timezone=NY, participant_key="p", **args)


def test_aware_non_utc_arguments_are_converted_to_utc() -> None:
    enrolled = datetime(2026, 2, 2, 10, 0, tzinfo=ZoneInfo(NY))
    occurrence = plan_occurrences(schedule(BASELINE), enrolled_at=enrolled, timezone=NY,
                                  until=datetime(2027, 1, 1, tzinfo=ZoneInfo("Asia/Tokyo")),
                                  participant_key="p")[0]
    assert occurrence.scheduled_at == datetime(2026, 2, 2, 15, 0, tzinfo=UTC)
    assert occurrence.scheduled_at.tzinfo is UTC

"""Property: an every-N-days cadence is exactly N local calendar days apart, in any zone.

The one documented exception is a spring-forward gap that starts at 23:00 local (the Greenland
zones): a time in that last hour moves past midnight, so its wall date is one day later; its
study day and wave are unchanged and the property holds for the planned (nominal) dates.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo, available_timezones

from hypothesis import given, settings
from hypothesis import strategies as st

from app.scheduling.planner import plan_occurrences
from app.scheduling.schedule import parse_schedule

ZONES = sorted(z for z in available_timezones() if "/" in z and not z.startswith("Etc/"))
WAVES = 8


def _gap(zone: ZoneInfo, wall: datetime) -> timedelta:
    after = wall.replace(tzinfo=zone, fold=1).utcoffset()
    before = wall.replace(tzinfo=zone, fold=0).utcoffset()
    assert after is not None and before is not None
    return max(after - before, timedelta(0))


@settings(max_examples=300, deadline=None)
@given(
    zone_name=st.sampled_from(ZONES),
    enrolled_day=st.dates(min_value=date(2020, 1, 1), max_value=date(2039, 12, 31)),
    enrolled_minute=st.integers(0, 24 * 60 - 1),
    every=st.integers(1, 45),
    minute=st.integers(0, 24 * 60 - 1),
)
def test_every_n_days_is_n_local_days_apart(zone_name: str, enrolled_day: date,
                                             enrolled_minute: int, every: int,
                                             minute: int) -> None:
    zone = ZoneInfo(zone_name)
    local_time = f"{minute // 60:02d}:{minute % 60:02d}"
    schedule = parse_schedule({"study_length_days": every * WAVES, "entries": [
        {"name": "s", "instruments": ["x"], "cadence": {"every_days": every},
         "local_time": local_time}]}, {"x": 0})
    enrolled_wall = datetime.combine(enrolled_day, time(enrolled_minute // 60,
                                                        enrolled_minute % 60))
    enrolled_at = enrolled_wall.replace(tzinfo=zone).astimezone(UTC)
    occurrences = plan_occurrences(schedule, enrolled_at=enrolled_at, timezone=zone_name,
                                   until=enrolled_at + timedelta(days=every * WAVES + 3),
                                   participant_key="p")

    assert len(occurrences) == WAVES  # nothing skipped, nothing doubled
    day0 = enrolled_at.astimezone(zone).date()
    for wave, occurrence in enumerate(occurrences):
        assert occurrence.wave == wave and occurrence.day == every * (wave + 1)
        assert occurrence.nominal_local.date() == day0 + timedelta(days=occurrence.day)
        # At the intended wall time, or moved forward by exactly the gap it falls in.
        assert occurrence.local == occurrence.nominal_local + _gap(zone, occurrence.nominal_local)
        assert occurrence.scheduled_at.astimezone(zone).replace(tzinfo=None) == occurrence.local
    for a, b in pairwise(occurrences):
        assert b.scheduled_at > a.scheduled_at
        crossed = any(o.local_date != o.nominal_local.date() for o in (a, b))
        if not crossed:
            assert (b.local_date - a.local_date).days == every

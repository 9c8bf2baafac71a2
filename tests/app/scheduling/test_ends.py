"""shortest_schedule: a lower bound of (last survey closes - enrollment) for everyone, which the
retention sweep relies on to skip people without planning them; if it were too large, someone's
contact details would never be erased."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.scheduling.ends import shortest_schedule
from app.scheduling.planner import plan_occurrences
from app.scheduling.schedule import parse_schedule

RECALL = {"baseline": 0, "phq9": 14, "who5": 14, "mood": 0}
BASELINE = {"name": "baseline", "instruments": ["baseline"], "cadence": {"at_enrollment": True},
            "open_for_hours": 336}
BIWEEKLY = {"name": "biweekly", "instruments": ["phq9", "who5"], "cadence": {"every_days": 14},
            "local_time": "00:05", "open_for_hours": 1}
ESM = {"name": "esm", "instruments": ["mood"], "cadence": {"weekdays": ["mon", "thu"]},
       "local_window": {"start": "00:00", "end": "01:00"}, "open_for_hours": 1}
ZONES = ["Pacific/Kiritimati", "Pacific/Pago_Pago", "America/New_York", "Europe/Berlin",
         "Australia/Lord_Howe", "UTC"]


@pytest.mark.parametrize(("entries", "length"), [
    ([BASELINE], None), ([BASELINE, BIWEEKLY], 84), ([ESM], 30), ([BIWEEKLY, ESM], 91)])
def test_no_one_ends_sooner_than_the_bound(entries: list[dict[str, Any]], length: int | None):
    data: dict[str, Any] = {"entries": entries}
    if length is not None:
        data["study_length_days"] = length
    schedule = parse_schedule(data, RECALL)
    bound = shortest_schedule(schedule)
    start = datetime(2026, 3, 1, 23, 59, tzinfo=UTC)  # across both DST changes of the year
    for hours in range(0, 24 * 240, 37):  # every hour of the day, every weekday
        enrolled = start + timedelta(hours=hours)
        for zone in ZONES:
            planned = plan_occurrences(schedule, enrolled_at=enrolled, timezone=zone,
                                       until=enrolled + timedelta(days=(length or 0) + 2),
                                       participant_key=f"p{hours}")
            end = max(o.closes_at for o in planned)
            assert end - enrolled >= bound, (zone, enrolled)
    if length:
        assert bound >= timedelta(days=length - 8)  # and not uselessly small

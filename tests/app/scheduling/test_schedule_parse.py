"""parse_schedule: good schedules load; every bad input is refused naming its place and reason.

Structural refusals are checked against surveys/schema/schedule.schema.json too, so the schema
and the pydantic model do not drift apart.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from app.config import PROJECT_ROOT
from app.scheduling.schedule import ScheduleError, parse_schedule
from app.surveys.instruments import load_instruments

SCHEMA = json.loads((Path(PROJECT_ROOT) / "surveys/schema/schedule.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
RECALL = {"baseline": 0, "phq9": 14, "who5": 14, "swls": 28, "mood": 0, "daily": 1}

GOOD: dict[str, Any] = {
    "study_length_days": 182,
    "horizon_days": 21,
    "entries": [
        {"name": "baseline", "instruments": ["baseline", "phq9", "who5", "swls"],
         "cadence": {"at_enrollment": True}, "open_for_hours": 336},
        {"name": "biweekly", "instruments": ["phq9", "who5"], "cadence": {"every_days": 14},
         "local_time": "18:00", "open_for_hours": 72, "reminders_hours": [24, 48]},
        {"name": "monthly", "instruments": ["swls"], "cadence": {"offsets_days": [28, 56, 84]},
         "local_time": "09:30"},
        {"name": "esm", "instruments": ["mood"], "cadence": {"weekdays": ["mon", "thu"]},
         "local_window": {"start": "09:00", "end": "21:00"}, "open_for_hours": 1.5,
         "reminders_hours": [0.5]},
    ],
}


def with_change(path: str, value: Any) -> dict[str, Any]:
    """A copy of GOOD with one value replaced (or removed, for value DELETE)."""
    data = copy.deepcopy(GOOD)
    *parents, last = path.split("/")
    target: Any = data
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    if value is DELETE:
        del target[last]
    elif isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return data


DELETE = object()


def refusal(data: Any, recall: Any = None) -> str:
    with pytest.raises(ScheduleError) as caught:
        parse_schedule(data, RECALL if recall is None else recall)
    return str(caught.value)


def test_good_schedule_parses_and_matches_the_schema() -> None:
    VALIDATOR.validate(GOOD)
    schedule = parse_schedule(GOOD, RECALL)
    assert [e.name for e in schedule.entries] == ["baseline", "biweekly", "monthly", "esm"]
    assert schedule.study_length_days == 182 and schedule.horizon_days == 21
    assert schedule.entry("biweekly").cadence.first_day == 14
    assert schedule.entry("esm").cadence.first_day == 1
    assert schedule.entry("esm").local_window is not None
    assert schedule.entry("esm").local_window.minutes == 12 * 60


def test_defaults() -> None:
    data = {"study_length_days": 30, "entries": [
        {"name": "weekly", "instruments": ["daily"], "cadence": {"every_days": 7},
         "local_time": "08:00"}]}
    schedule = parse_schedule(data, RECALL)
    entry = schedule.entries[0]
    assert schedule.horizon_days == 28
    assert entry.open_for_hours == 168 and entry.reminders_hours == []
    assert entry.cadence.days(enrolled_weekday=0, study_length_days=30) == [7, 14, 21, 28]


def test_the_shipped_study_schedule_parses_with_the_shipped_instruments() -> None:
    study = yaml.safe_load((Path(PROJECT_ROOT) / "surveys/studies/keep4o-panel.yaml").read_text())
    VALIDATOR.validate(study["schedule"])
    schedule = parse_schedule(study["schedule"], load_instruments())
    assert schedule.entries[0].cadence.at_enrollment is True


def test_instrument_objects_are_accepted_and_their_recall_used() -> None:
    instruments = load_instruments()
    data = {"study_length_days": 84, "entries": [
        {"name": "weekly", "instruments": ["who5"], "cadence": {"every_days": 7},
         "local_time": "08:00"}]}
    message = refusal(data, instruments)
    assert "recall period is 14 days" in message


# (change to GOOD, the place named, a fragment of the reason, whether the schema refuses too)
BAD: list[tuple[str, Any, str, str, bool]] = [
    # cadences
    ("entries/1/cadence", {"every_days": 0}, "schedule/entries/1/cadence/every_days",
     "greater than 0", True),
    ("entries/1/cadence", {"every_days": -14}, "schedule/entries/1/cadence/every_days",
     "greater than 0", True),
    ("entries/1/cadence", {"every_days": "14"}, "schedule/entries/1/cadence/every_days",
     "valid integer", True),
    ("entries/1/cadence", {"every_days": True}, "schedule/entries/1/cadence/every_days",
     "valid integer", True),
    ("entries/1/cadence", {"every_days": 14, "start_day": -1},
     "schedule/entries/1/cadence/start_day", "greater than or equal to 0", True),
    ("entries/1/cadence", {}, "schedule/entries/1/cadence", "exactly one of", True),
    ("entries/1/cadence", {"every_days": 14, "offsets_days": [0]}, "schedule/entries/1/cadence",
     "got every_days, offsets_days", True),
    ("entries/1/cadence", {"every_day": 14}, "schedule/entries/1/cadence/every_day",
     "unknown field", True),
    ("entries/0/cadence", {"at_enrollment": False}, "schedule/entries/0/cadence/at_enrollment",
     "True", True),
    ("entries/3/cadence", {"weekdays": []}, "schedule/entries/3/cadence/weekdays",
     "must not be empty", True),
    ("entries/3/cadence", {"weekdays": ["mon", "monday"]},
     "schedule/entries/3/cadence/weekdays/1", "unknown weekday 'monday'", True),
    ("entries/3/cadence", {"weekdays": ["mon", "thu", "mon"]},
     "schedule/entries/3/cadence/weekdays/2", "listed twice", True),
    ("entries/2/cadence", {"offsets_days": []}, "schedule/entries/2/cadence/offsets_days",
     "must not be empty", True),
    ("entries/2/cadence", {"offsets_days": [28, 56, 28]},
     "schedule/entries/2/cadence/offsets_days/2", "28 is listed twice", True),
    ("entries/2/cadence", {"offsets_days": [-28, 56]},
     "schedule/entries/2/cadence/offsets_days/0", "greater than or equal to 0", True),
    ("entries/2/cadence", {"offsets_days": [28], "start_day": 3},
     "schedule/entries/2/cadence/start_day", "only every_days and weekdays", True),
    # days beyond the study
    ("entries/2/cadence", {"offsets_days": [28, 200]},
     "schedule/entries/2/cadence/offsets_days/1", "after the end of the study (day 182)", False),
    ("entries/1/cadence", {"every_days": 190}, "schedule/entries/1/cadence/every_days",
     "first occurrence on day 190", False),
    ("entries/1/cadence", {"every_days": 14, "start_day": 183},
     "schedule/entries/1/cadence/start_day", "after the end of the study", False),
    ("study_length_days", DELETE, "schedule/study_length_days", "required when an entry recurs",
     True),
    ("study_length_days", 0, "schedule/study_length_days", "greater than 0", True),
    ("horizon_days", 0, "schedule/horizon_days", "greater than 0", True),
    ("horizon_days", -5, "schedule/horizon_days", "greater than 0", True),
    # times of day and windows
    ("entries/1/local_time", "25:00", "schedule/entries/1/local_time", "HH:MM", True),
    ("entries/1/local_time", "6pm", "schedule/entries/1/local_time", "HH:MM", True),
    ("entries/1/local_time", "8:00", "schedule/entries/1/local_time", "HH:MM", True),
    ("entries/1/local_time", "18:00:00", "schedule/entries/1/local_time", "HH:MM", True),
    ("entries/1/local_time", 1080, "schedule/entries/1/local_time", "HH:MM", True),
    ("entries/1/local_time", DELETE, "schedule/entries/1/local_time",
     "required (or local_window)", True),
    ("entries/3/local_window", {"start": "21:00", "end": "09:00"},
     "schedule/entries/3/local_window/end", "must be after start (21:00)", False),
    ("entries/3/local_window", {"start": "09:00", "end": "09:00"},
     "schedule/entries/3/local_window/end", "cannot be empty", False),
    ("entries/3/local_window", {"start": "9:00", "end": "21:00"},
     "schedule/entries/3/local_window/start", "HH:MM", True),
    ("entries/3/local_window", {"start": "09:00"}, "schedule/entries/3/local_window/end",
     "required", True),
    ("entries/3/local_time", "12:00", "schedule/entries/3/local_window", "not both", True),
    ("entries/0/local_time", "12:00", "schedule/entries/0/local_time", "opens at consent", True),
    # answer windows and reminders
    ("entries/1/open_for_hours", 0, "schedule/entries/1/open_for_hours", "greater than 0", True),
    ("entries/1/open_for_hours", -24, "schedule/entries/1/open_for_hours", "greater than 0",
     True),
    ("entries/1/reminders_hours", [0], "schedule/entries/1/reminders_hours/0", "greater than 0",
     True),
    ("entries/1/reminders_hours", [24, -1], "schedule/entries/1/reminders_hours/1",
     "greater than 0", True),
    ("entries/1/reminders_hours", [24, 72], "schedule/entries/1/reminders_hours/1",
     "not before the survey closes (open_for_hours 72)", False),
    ("entries/1/reminders_hours", [48, 24], "schedule/entries/1/reminders_hours/1",
     "greater than the reminder before it (48)", False),
    ("entries/1/reminders_hours", [24, 24], "schedule/entries/1/reminders_hours/1",
     "greater than the reminder before it", False),
    # names and instruments
    ("entries/2/name", "biweekly", "schedule/entries/2/name", "already the name of entry 1",
     False),
    ("entries/2/name", "Monthly survey", "schedule/entries/2/name", "lower-case", True),
    ("entries/1/instruments", [], "schedule/entries/1/instruments", "must not be empty", True),
    ("entries/1/instruments", ["phq9", "who5", "phq9"], "schedule/entries/1/instruments/2",
     "listed twice", True),
    ("entries/1/instruments", ["phq9", "phq10"], "schedule/entries/1/instruments/1",
     "unknown instrument 'phq10'", False),
    ("entries", [], "schedule/entries", "must not be empty", True),
    ("entries/1/colour", "blue", "schedule/entries/1/colour", "unknown field", True),
]


@pytest.mark.parametrize(("change", "value", "place", "reason", "schema_refuses"), BAD,
                         ids=[f"{c}={'<deleted>' if v is DELETE else repr(v)}"
                              for c, v, *_ in BAD])  # stable ids: pytest-xdist compares them
def test_bad_input_is_refused_naming_the_place(change: str, value: Any, place: str, reason: str,
                                               schema_refuses: bool) -> None:
    data = with_change(change, value)
    message = refusal(data)
    assert f"{place}: " in message, message
    assert reason in message, message
    assert (not VALIDATOR.is_valid(data)) is schema_refuses


def test_not_a_mapping() -> None:
    assert refusal([GOOD]) == "schedule: must be a mapping with entries"


def test_several_problems_are_reported_together() -> None:
    data = with_change("entries/1/cadence", {"every_days": 0})
    data["entries"][2]["local_time"] = "noon"
    lines = refusal(data).splitlines()
    assert any(line.startswith("schedule/entries/1/cadence/every_days: ") for line in lines)
    assert any(line.startswith("schedule/entries/2/local_time: ") for line in lines)


# --- recall periods --------------------------------------------------------------------------


def two_entries(first: dict[str, Any], second: dict[str, Any], length: int = 182) -> dict:
    return {"study_length_days": length, "entries": [first, second]}


BASELINE = {"name": "baseline", "instruments": ["baseline", "phq9"],
            "cadence": {"at_enrollment": True}}


def recurring(cadence: dict[str, Any], instruments: list[str] | None = None,
              name: str = "followup") -> dict[str, Any]:
    return {"name": name, "instruments": instruments or ["who5", "phq9"], "cadence": cadence,
            "local_time": "18:00"}


def test_recall_baseline_at_day_0_then_biweekly_from_day_7_is_refused() -> None:
    message = refusal(two_entries(BASELINE, recurring({"every_days": 14, "start_day": 7})))
    assert message.startswith("schedule/entries/1/instruments/1: ")
    assert "instrument 'phq9'" in message and "entry 'followup'" in message
    assert "7 day(s) after" in message and "entry 'baseline' on day 0" in message
    assert "recall period is 14 days" in message
    assert "who5" not in message  # who5 is not in the baseline entry: its gap is 14


def test_recall_baseline_then_biweekly_from_day_14_is_accepted() -> None:
    parse_schedule(two_entries(BASELINE, recurring({"every_days": 14})), RECALL)


@pytest.mark.parametrize(("cadence", "gap"), [
    ({"every_days": 7}, 7),
    ({"every_days": 13, "start_day": 13}, 13),
    ({"weekdays": ["mon"], "start_day": 14}, 7),
    ({"weekdays": ["mon", "thu"], "start_day": 14}, 3),
    ({"weekdays": ["sun", "mon"], "start_day": 14}, 1),
    ({"offsets_days": [14, 28, 40]}, 12),
    ({"offsets_days": [60, 14, 30]}, 16),  # any order: 14, 30, 60
    ({"offsets_days": [14, 34, 60]}, 20),
])
def test_recall_is_checked_for_every_cadence_kind(cadence: dict[str, Any], gap: int) -> None:
    data = two_entries(BASELINE, recurring(cadence, ["swls"]))
    recall = {**RECALL, "swls": 20}
    if gap >= 20:
        parse_schedule(data, recall)
        return
    message = refusal(data, recall)
    assert f"instrument 'swls' in entry 'followup' would be given {gap} day(s)" in message
    assert "recall period is 20 days" in message
    assert message.startswith("schedule/entries/1/instruments/0: ")


def test_recall_weekdays_against_baseline_depends_on_enrollment_weekday() -> None:
    # Mondays from day 3: enrolled on a Friday, the first Monday is day 3 (Monday: day 7).
    data = two_entries(BASELINE, recurring({"weekdays": ["mon"], "start_day": 3}, ["phq9"]))
    message = refusal(data, {**RECALL, "phq9": 7})
    assert "would be given 3 day(s)" in message
    assert "for a participant enrolled on a Friday" in message
    assert "entry 'baseline' on day 0, then entry 'followup' on day 3" in message


def test_recall_weekly_with_default_start_day_against_baseline() -> None:
    data = two_entries(BASELINE, recurring({"weekdays": ["wed"]}, ["phq9"]))
    message = refusal(data, {**RECALL, "phq9": 7})
    assert "would be given 1 day(s)" in message  # enrolled on a Tuesday: Wednesday is day 1


def test_recall_across_two_recurring_entries() -> None:
    data = two_entries(recurring({"every_days": 28}, ["swls"], "monthly"),
                       recurring({"offsets_days": [90]}, ["swls"], "closing"))
    message = refusal(data)
    assert "instrument 'swls' in entry 'closing' would be given 6 day(s)" in message
    assert "entry 'monthly' on day 84, then entry 'closing' on day 90" in message
    assert "recall period is 28 days" in message


def test_recall_same_day_in_two_entries_is_a_zero_gap() -> None:
    data = two_entries(recurring({"offsets_days": [14]}, ["phq9"], "a"),
                       recurring({"offsets_days": [14]}, ["phq9"], "b"))
    assert "would be given 0 day(s)" in refusal(data)


def test_recall_zero_means_no_limit() -> None:
    parse_schedule(two_entries({"name": "base", "instruments": ["mood"],
                                "cadence": {"at_enrollment": True}},
                               recurring({"every_days": 1}, ["mood"])), RECALL)


def test_recall_only_counts_occurrences_inside_the_study() -> None:
    # Every 7 days, but the study ends on day 10: only day 7 happens, so no gap at all.
    parse_schedule({"study_length_days": 10, "entries": [recurring({"every_days": 7},
                                                                   ["phq9"])]}, RECALL)

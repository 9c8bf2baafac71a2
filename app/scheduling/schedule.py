"""The schedule of a study file: typed model, parsing and checking (no database, no clock).

The ``schedule`` mapping of a study file looks like this (JSON Schema:
surveys/schema/schedule.schema.json)::

    schedule:
      study_length_days: 182     # last study day on which anything is planned (inclusive)
      horizon_days: 28           # how far ahead occurrences are materialized (default 28)
      entries:
        - name: baseline
          instruments: [baseline, phq9]
          cadence: {at_enrollment: true}   # opens at consent; no time of day
          open_for_hours: 336
        - name: biweekly
          instruments: [phq9, who5]
          cadence: {every_days: 14}        # days 14, 28, ... (start_day defaults to every_days)
          local_time: "18:00"
          open_for_hours: 72
          reminders_hours: [24, 48]
        - name: esm
          instruments: [mood]
          cadence: {weekdays: [mon, thu]}  # start_day defaults to 1 (the day after enrollment)
          local_window: {start: "09:00", end: "21:00"}
          open_for_hours: 2

Day N of the study is the participant's local calendar date of enrollment plus N days; the
planner (app/scheduling/planner.py) turns days and wall times into UTC instants.

Cadences: exactly one of ``at_enrollment: true`` (day 0, at consent), ``every_days: N`` (days
``start_day``, ``start_day + N``, ... with ``start_day`` defaulting to N), ``weekdays: [mon, ...]``
(every listed ISO weekday from ``start_day``, default 1) and ``offsets_days: [0, 7, 30]``.
Occurrences run up to and including day ``study_length_days``.

``parse_schedule`` raises ``ScheduleError`` whose lines read ``place: reason``, the place being
a path such as ``schedule/entries/1/cadence/every_days``. Besides shape and ranges it refuses
unknown instruments and any instrument given more often than its recall period allows.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from itertools import pairwise
from typing import Annotated, Any, Literal, Protocol

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
DEFAULT_OPEN_HOURS = 168  # the same default app/scheduling/service.py uses for at_enrollment
DEFAULT_HORIZON_DAYS = 28
MAX_STUDY_DAYS = 3660  # ten years: bounds the recall check, which walks every study day
ROOT = "schedule"

_HHMM = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")


# --- errors ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a schedule: where (a ``/`` path from ``schedule``) and why."""

    place: str
    reason: str

    def __str__(self) -> str:
        return f"{self.place}: {self.reason}"


class ScheduleError(ValueError):
    """A schedule that cannot be used; ``str()`` gives one ``place: reason`` line per problem."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def _rule(field: str, reason: str) -> PydanticCustomError:
    # A cross-field rule broken inside a model: `field` is appended to pydantic's location so
    # the message names the exact place (e.g. reminders_hours/1), not just the enclosing object.
    return PydanticCustomError("schedule_rule", "{reason}", {"field": field, "reason": reason})


# --- small value types -----------------------------------------------------------------------


def _hhmm(value: Any) -> time:
    # Only "HH:MM" strings: YAML 1.1 would read 18:00 unquoted as the integer 1080.
    if isinstance(value, str) and (match := _HHMM.match(value)):
        return time(int(match[1]), int(match[2]))
    raise ValueError(f"must be a local time of day written HH:MM (00:00 to 23:59), got {value!r}")


def _weekday(value: Any) -> str:
    if isinstance(value, str) and value in WEEKDAYS:
        return value
    raise ValueError(f"unknown weekday {value!r}: use {', '.join(WEEKDAYS)}")


LocalTime = Annotated[time, BeforeValidator(_hhmm)]
Weekday = Annotated[str, BeforeValidator(_weekday)]
PositiveHours = Annotated[float, Field(gt=0, allow_inf_nan=False)]
StudyDay = Annotated[int, Field(ge=0, le=MAX_STUDY_DAYS)]


class _Model(BaseModel):
    # Schedules are shared and compared: frozen, strict types, unknown keys refused.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# --- the model -------------------------------------------------------------------------------


class Window(_Model):
    """A local time window for a random time of day (experience sampling), [start, end)."""

    start: LocalTime
    end: LocalTime

    @model_validator(mode="after")
    def _end_after_start(self) -> Window:
        if self.end <= self.start:
            # Same day only: a window across midnight would make "day N" ambiguous.
            raise _rule("end", f"must be after start ({self.start:%H:%M}); windows cannot "
                               "be empty or cross midnight")
        return self

    @property
    def minutes(self) -> int:
        return (self.end.hour * 60 + self.end.minute) - (self.start.hour * 60 + self.start.minute)


class Cadence(_Model):
    """On which study days an entry happens; exactly one kind is given."""

    at_enrollment: Literal[True] | None = None
    every_days: Annotated[int, Field(gt=0, le=MAX_STUDY_DAYS)] | None = None
    weekdays: Annotated[list[Weekday], Field(min_length=1)] | None = None
    offsets_days: Annotated[list[StudyDay], Field(min_length=1)] | None = None
    start_day: StudyDay | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Cadence:
        kinds = [k for k in _KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise _rule("", f"give exactly one of {', '.join(_KINDS)} (got "
                            f"{', '.join(kinds) or 'none'})")
        if self.start_day is not None and self.kind not in ("every_days", "weekdays"):
            raise _rule("start_day", "only every_days and weekdays cadences take a start_day")
        for name in ("weekdays", "offsets_days"):
            values = getattr(self, name) or []
            for index, value in enumerate(values):
                if value in values[:index]:
                    raise _rule(f"{name}/{index}", f"{value!r} is listed twice")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in _KINDS if getattr(self, k) is not None)

    @property
    def first_day(self) -> int:
        """The earliest study day this cadence can use (before the study length is applied)."""
        if self.every_days is not None:
            return self.every_days if self.start_day is None else self.start_day
        if self.weekdays is not None:
            return 1 if self.start_day is None else self.start_day
        if self.offsets_days is not None:
            return min(self.offsets_days)
        return 0

    def days(self, *, enrolled_weekday: int, study_length_days: int | None) -> list[int]:
        """The study days of this cadence in order; the index of a day is its wave.

        ``enrolled_weekday`` is the ISO weekday of day 0 (Monday = 0); only weekdays use it.
        """
        return list(self._iter_days(enrolled_weekday, study_length_days or 0))

    def _iter_days(self, enrolled_weekday: int, last: int) -> Iterator[int]:
        if self.at_enrollment:
            yield 0
        elif self.every_days is not None:
            yield from range(self.first_day, last + 1, self.every_days)
        elif self.weekdays is not None:
            wanted = {WEEKDAYS.index(w) for w in self.weekdays}
            yield from (d for d in range(self.first_day, last + 1)
                        if (enrolled_weekday + d) % 7 in wanted)
        elif self.offsets_days is not None:
            yield from (d for d in sorted(self.offsets_days) if d <= last)


_KINDS: tuple[str, ...] = ("at_enrollment", "every_days", "weekdays", "offsets_days")


class Entry(_Model):
    """One line of the schedule: which instruments, when, for how long, with which reminders."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
    instruments: Annotated[list[str], Field(min_length=1)]
    cadence: Cadence
    local_time: LocalTime | None = None
    local_window: Window | None = None
    open_for_hours: PositiveHours = DEFAULT_OPEN_HOURS
    reminders_hours: list[PositiveHours] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> Entry:
        self._check_time_of_day()
        self._check_reminders()
        for index, key in enumerate(self.instruments):
            if key in self.instruments[:index]:
                raise _rule(f"instruments/{index}", f"{key!r} is listed twice in this entry")
        return self

    def _check_time_of_day(self) -> None:
        if self.local_time is not None and self.local_window is not None:
            raise _rule("local_window", "give local_time or local_window, not both")
        has_time = self.local_time is not None or self.local_window is not None
        if self.cadence.at_enrollment and has_time:
            field = "local_time" if self.local_time is not None else "local_window"
            raise _rule(field, "an at_enrollment entry opens at consent; it takes no time of day")
        if not self.cadence.at_enrollment and not has_time:
            raise _rule("local_time", "required (or local_window) for a recurring cadence")

    def _check_reminders(self) -> None:
        for index, hours in enumerate(self.reminders_hours):
            if hours >= self.open_for_hours:
                raise _rule(f"reminders_hours/{index}", f"{hours:g} hours is not before the "
                            f"survey closes (open_for_hours {self.open_for_hours:g})")
            if index and hours <= self.reminders_hours[index - 1]:
                raise _rule(f"reminders_hours/{index}", f"{hours:g} must be greater than the "
                            f"reminder before it ({self.reminders_hours[index - 1]:g})")

    @property
    def open_for(self) -> timedelta:
        return timedelta(hours=self.open_for_hours)

    @property
    def reminders(self) -> tuple[timedelta, ...]:
        return tuple(timedelta(hours=h) for h in self.reminders_hours)


class Schedule(_Model):
    """The whole schedule of a study. Build it with ``parse_schedule``."""

    entries: Annotated[list[Entry], Field(min_length=1)]
    study_length_days: Annotated[int, Field(gt=0, le=MAX_STUDY_DAYS)] | None = None
    horizon_days: Annotated[int, Field(gt=0, le=366)] = DEFAULT_HORIZON_DAYS

    @model_validator(mode="after")
    def _consistent(self) -> Schedule:
        names: dict[str, int] = {}
        for index, entry in enumerate(self.entries):
            if entry.name in names:
                raise _rule(f"entries/{index}/name",
                            f"{entry.name!r} is already the name of entry {names[entry.name]}")
            names[entry.name] = index
        self._check_length()
        return self

    def _check_length(self) -> None:
        recurring = [i for i, e in enumerate(self.entries) if not e.cadence.at_enrollment]
        if recurring and self.study_length_days is None:
            raise _rule("study_length_days", "required when an entry recurs (entry "
                        f"{self.entries[recurring[0]].name!r})")
        for index in recurring:
            cadence = self.entries[index].cadence
            first = cadence.first_day
            assert self.study_length_days is not None
            if first > self.study_length_days:
                field = "offsets_days" if cadence.offsets_days else "start_day"
                if cadence.kind == "every_days" and cadence.start_day is None:
                    field = "every_days"  # the default start_day is every_days itself
                raise _rule(f"entries/{index}/cadence/{field}", f"first occurrence on day "
                            f"{first} is after the end of the study (day "
                            f"{self.study_length_days})")
            for position, offset in enumerate(cadence.offsets_days or []):
                if offset > self.study_length_days:
                    raise _rule(f"entries/{index}/cadence/offsets_days/{position}",
                                f"day {offset} is after the end of the study "
                                f"(day {self.study_length_days})")

    def horizon_end(self, now: datetime) -> datetime:
        """The ``until`` for the planner when materializing from ``now``."""
        return now + timedelta(days=self.horizon_days)

    def entry(self, name: str) -> Entry:
        return next(e for e in self.entries if e.name == name)


# --- parsing ---------------------------------------------------------------------------------


class HasRecall(Protocol):
    @property
    def recall_period_days(self) -> int: ...


def parse_schedule(data: Any, instruments: Mapping[str, HasRecall] | Mapping[str, int]) -> Schedule:
    """Check and type the ``schedule`` mapping of a study file.

    ``instruments`` maps each instrument key the study may use to its Instrument (anything with
    ``recall_period_days``) or directly to its recall period in days.
    """
    if not isinstance(data, Mapping):
        raise ScheduleError([Problem(ROOT, "must be a mapping with entries")])
    try:
        schedule = Schedule.model_validate(dict(data))
    except ValidationError as exc:
        raise ScheduleError(_pydantic_problems(exc)) from None
    recall = {key: _recall_days(value) for key, value in instruments.items()}
    problems = _unknown_instruments(schedule, recall) or _recall_problems(schedule, recall)
    if problems:
        raise ScheduleError(problems)
    return schedule


def _recall_days(value: HasRecall | int) -> int:
    return value if isinstance(value, int) else int(value.recall_period_days)


def _place(*parts: object) -> str:
    return "/".join([ROOT, *(str(p) for p in parts if p != "")])


_PYDANTIC_REASONS = {
    "extra_forbidden": "unknown field",
    "missing": "required",
    "too_short": "must not be empty",  # every minimum length in the model is 1
    "string_pattern_mismatch": "must start with a lower-case letter, then lower-case letters, "
                               "digits or _ (at most 64)",
}


def _pydantic_problems(exc: ValidationError) -> list[Problem]:
    problems = []
    for error in exc.errors(include_url=False):
        ctx = error.get("ctx") or {}
        parts = [*error["loc"]]
        if error["type"] == "schedule_rule":
            parts.extend(str(ctx["field"]).split("/"))
            reason = str(ctx["reason"])
        elif error["type"] == "value_error":
            reason = str(ctx.get("error", error["msg"]))
        else:
            reason = _PYDANTIC_REASONS.get(error["type"], error["msg"])
        problems.append(Problem(_place(*parts), reason))
    return problems


def _unknown_instruments(schedule: Schedule, recall: Mapping[str, int]) -> list[Problem]:
    known = ", ".join(sorted(recall)) or "none"
    return [
        Problem(_place("entries", i, "instruments", j),
                f"unknown instrument {key!r} (the study has: {known})")
        for i, entry in enumerate(schedule.entries)
        for j, key in enumerate(entry.instruments)
        if key not in recall
    ]


# --- the recall-period check -----------------------------------------------------------------


@dataclass(frozen=True, order=True)
class _Use:
    """One administration of an instrument on a study day, by a given entry."""

    day: int
    entry_index: int
    position: int


@dataclass(frozen=True)
class _Gap:
    days: int
    before: _Use
    after: _Use
    enrolled_weekday: int | None  # set when the gap depends on the enrollment weekday


def _recall_problems(schedule: Schedule, recall: Mapping[str, int]) -> list[Problem]:
    # The gaps are computed from the actual study days of every entry (all kinds, including
    # weekdays, for each possible enrollment weekday), so mixing entries is covered too.
    problems = []
    for key in _instrument_keys(schedule):
        period = recall[key]
        gap = _smallest_gap(schedule, key) if period > 0 else None
        if gap is not None and gap.days < period:
            problems.append(_recall_problem(schedule, key, period, gap))
    return problems


def _instrument_keys(schedule: Schedule) -> list[str]:
    return list(dict.fromkeys(k for e in schedule.entries for k in e.instruments))


def _smallest_gap(schedule: Schedule, key: str) -> _Gap | None:
    uses = [(i, e, e.instruments.index(key)) for i, e in enumerate(schedule.entries)
            if key in e.instruments]
    by_weekday = any(e.cadence.weekdays for _, e, _ in uses)
    gaps = [g for w in (range(7) if by_weekday else (0,))
            if (g := _smallest_gap_from(schedule, uses, w)) is not None]
    if not gaps:
        return None
    smallest = min(gaps, key=lambda g: g.days)
    if len({g.days for g in gaps}) > 1:  # only then does the enrollment weekday matter
        return smallest
    return _Gap(smallest.days, smallest.before, smallest.after, None)


def _smallest_gap_from(schedule: Schedule, uses: list[tuple[int, Entry, int]],
                       weekday: int) -> _Gap | None:
    timeline = sorted(
        _Use(day, i, pos) for i, e, pos in uses
        for day in e.cadence.days(enrolled_weekday=weekday,
                                  study_length_days=schedule.study_length_days)
    )
    pairs = [(after.day - before.day, before, after) for before, after in pairwise(timeline)]
    if not pairs:
        return None
    days, before, after = min(pairs, key=lambda p: p[0])
    return _Gap(days, before, after, weekday)


def _recall_problem(schedule: Schedule, key: str, period: int, gap: _Gap) -> Problem:
    first = schedule.entries[gap.before.entry_index].name
    then = schedule.entries[gap.after.entry_index].name
    when = (f"for a participant enrolled on a {_WEEKDAY_NAMES[gap.enrolled_weekday]}, "
            if gap.enrolled_weekday is not None else "")
    reason = (
        f"instrument {key!r} in entry {then!r} would be given {gap.days} day(s) after its "
        f"previous administration ({when}entry {first!r} on day {gap.before.day}, then entry "
        f"{then!r} on day {gap.after.day}), but its recall period is {period} days: "
        f"administrations must be at least {period} days apart"
    )
    return Problem(_place("entries", gap.after.entry_index, "instruments", gap.after.position),
                   reason)

"""Planning the occurrences of a schedule for one participant: pure, deterministic, no database.

``plan_occurrences(schedule, enrolled_at=..., timezone=..., until=..., participant_key=...)``
returns one ``Occurrence`` per (entry, instrument, wave), ordered by time.

Calendar rule. Day N of the study is the participant's local calendar date of enrollment plus N
calendar days, so a daily 18:00 survey stays at 18:00 on the wall clock across daylight-saving
changes (the UTC gap between two occurrences is then 23 or 25 hours, not 24).

Daylight-saving rule (zoneinfo ``fold=0``):

* A local time that does not exist (the spring-forward gap) moves forward by the length of the
  gap: 02:30 on 2026-03-08 in America/New_York becomes 03:30 EDT (07:30 UTC); with Lord Howe's
  30-minute change, 02:15 becomes 02:45. It stays on its study day: nothing is skipped. (Where a
  gap begins at 23:00 local, as in America/Nuuk, a time in 23:00-23:59 of that day lands shortly
  after midnight of the next date; its study day and wave are unchanged.)
* A local time that happens twice (the fall-back overlap) uses the first occurrence, the one
  still on daylight time: 01:30 on 2026-11-01 in America/New_York is 01:30 EDT (05:30 UTC).
  Nothing is sent twice.

Other rules:

* ``at_enrollment`` entries are wave 0 and start at ``enrolled_at`` exactly.
* A recurring occurrence whose wall time on its day has already passed when the participant
  enrolls (possible on day 0 only, e.g. ``offsets_days: [0, ...]``) starts at ``enrolled_at``
  instead: late, never skipped.
* ``local_window`` entries get a random minute in [start, end), drawn from a SHA-256 of the
  participant key, entry name and wave, so re-planning gives the same time, every instrument of
  one entry and wave shares it, and different participants get different times.
* ``closes_at`` and reminders are elapsed hours after ``scheduled_at`` (a 24-hour window across
  a daylight-saving change closes at a different wall time).
* Occurrences stop after day ``study_length_days`` (inclusive) and before ``until``
  (``scheduled_at < until``); ``wave`` is the index of the occurrence in the entry's full list
  of study days, so it does not depend on ``until`` or on the time zone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from app.scheduling.schedule import Entry, Problem, Schedule, ScheduleError


@dataclass(frozen=True, slots=True)
class Occurrence:
    """One planned administration of one instrument to one participant."""

    entry: str
    instrument: str
    position: int  # order of the instrument within its entry
    wave: int  # index of the occurrence within its entry, 0-based
    day: int  # study day (local enrollment date + day)
    timezone: str
    nominal_local: datetime  # naive wall time the schedule asks for
    local: datetime  # naive wall time it actually happens (shifted on a gap, late on day 0)
    scheduled_at: datetime  # UTC
    closes_at: datetime  # UTC
    reminders: tuple[datetime, ...]  # UTC, ascending, before closes_at

    @property
    def local_date(self) -> date:
        return self.local.date()

    @property
    def local_time(self) -> str:
        """The wall time as SurveyInstance.local_time stores it (ISO, minutes precision)."""
        return self.local.isoformat(timespec="minutes")

    @property
    def key(self) -> tuple[str, str, int]:
        """Identity within one participant and protocol version: (entry, instrument, wave)."""
        return (self.entry, self.instrument, self.wave)


def plan_occurrences(schedule: Schedule, *, enrolled_at: datetime, timezone: str,
                     until: datetime, participant_key: str) -> list[Occurrence]:
    """Every occurrence of ``schedule`` from enrollment up to (excluding) ``until``."""
    zone = load_zone(timezone)
    enrolled_at = _as_utc(enrolled_at, "enrolled_at")
    until = _as_utc(until, "until")
    start = _Start(enrolled_at, enrolled_at.astimezone(zone).replace(tzinfo=None), zone, timezone)
    planned = [
        occurrence
        for entry in schedule.entries
        for occurrence in _plan_entry(schedule, entry, start, until, participant_key)
        if occurrence.scheduled_at < until
    ]
    orders = {entry.name: i for i, entry in enumerate(schedule.entries)}
    planned.sort(key=lambda o: (o.scheduled_at, orders[o.entry], o.position))
    return planned


def load_zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``, or a ScheduleError naming it (never a crash on bad input)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ScheduleError([Problem("timezone", f"unknown IANA time zone {name!r}")]) from None


def resolve_local(wall: datetime, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """(UTC instant, actual naive wall time) of the naive ``wall`` in ``zone``, by the rule above.

    ``fold=0`` gives both halves of the rule: in a gap it applies the offset from before the
    change (so the wall time comes out later by the gap), in an overlap the first offset.
    """
    instant = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    return instant, instant.astimezone(zone).replace(tzinfo=None)


def window_time(entry: Entry, participant_key: str, wave: int) -> time:
    """The entry's time of day for this wave: fixed, or a seeded random minute in the window."""
    if entry.local_time is not None:
        return entry.local_time
    window = entry.local_window
    assert window is not None, "recurring entries have a time of day (checked on parse)"
    # A hash, not random(): the same participant, entry and wave always get the same minute.
    seed = f"{participant_key}\x1f{entry.name}\x1f{wave}".encode()
    offset = int.from_bytes(hashlib.sha256(seed).digest()[:8], "big") % window.minutes
    minutes = window.start.hour * 60 + window.start.minute + offset
    return time(minutes // 60, minutes % 60)


@dataclass(frozen=True, slots=True)
class _Start:
    """The participant's enrollment: UTC instant, local wall time, zone."""

    at: datetime
    local: datetime
    zone: ZoneInfo
    zone_name: str


def _plan_entry(schedule: Schedule, entry: Entry, start: _Start, until: datetime,
                participant_key: str) -> Iterator[Occurrence]:
    if entry.cadence.at_enrollment:
        yield from _occurrences(entry, 0, 0, start.local, start.at, start.local, start)
        return
    # Local dates past this bound cannot be before `until` in any zone (offsets < 1 day).
    last_date = until.astimezone(start.zone).date() + timedelta(days=2)
    days = entry.cadence.days(enrolled_weekday=start.local.weekday(),
                              study_length_days=schedule.study_length_days)
    for wave, day in enumerate(days):
        nominal = datetime.combine(start.local.date() + timedelta(days=day),
                                   window_time(entry, participant_key, wave))
        if nominal.date() > last_date:
            break
        scheduled_at, local = resolve_local(nominal, start.zone)
        if scheduled_at < start.at:  # day 0, time already passed: open late, not never
            scheduled_at, local = start.at, start.local
        yield from _occurrences(entry, wave, day, nominal, scheduled_at, local, start)


def _occurrences(entry: Entry, wave: int, day: int, nominal: datetime, scheduled_at: datetime,
                 local: datetime, start: _Start) -> Iterator[Occurrence]:
    # One occurrence per instrument of the entry, all at the same time.
    reminders = tuple(scheduled_at + r for r in entry.reminders)
    closes_at = scheduled_at + entry.open_for
    for position, instrument in enumerate(entry.instruments):
        yield Occurrence(entry=entry.name, instrument=instrument, position=position, wave=wave,
                         day=day, timezone=start.zone_name, nominal_local=nominal, local=local,
                         scheduled_at=scheduled_at, closes_at=closes_at, reminders=reminders)


def _as_utc(value: datetime, name: str) -> datetime:
    # Naive datetimes are refused: guessing their zone is how schedules drift by hours.
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got naive {value.isoformat()}")
    return value.astimezone(UTC)


# ---- planning many participants at once ---------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Slot:
    """One occasion of one entry for one participant: what a survey instance row needs."""

    entry: Entry
    wave: int
    scheduled_at: datetime  # UTC
    local_time: str  # wall time, ISO, minutes precision
    closes_at: datetime  # UTC


class BulkPlanner:
    """The planner for many participants of one schedule, with the same results as
    ``plan_occurrences`` (a test compares them) but much faster.

    A fixed-time entry's occasions depend only on the zone and the local date of enrollment,
    so they are resolved through zoneinfo once per (entry, zone, date) and shared by everyone
    enrolled that day in that zone; only the day-0 "already passed" rule and the ``until`` cut
    are applied per participant. Random-window entries are seeded per participant and planned
    one by one, as ``plan_occurrences`` does.
    """

    def __init__(self, schedule: Schedule) -> None:
        self.schedule = schedule
        self._zones: dict[str, ZoneInfo] = {}
        self._slots: dict[tuple[int, str, date], list[Slot]] = {}

    def slots(self, *, enrolled_at: datetime, timezone: str, until: datetime,
              participant_key: str) -> Iterator[Slot]:
        """Every occasion from enrollment up to (excluding) ``until``, entry by entry."""
        zone = self._zones.get(timezone) or self._zones.setdefault(timezone, load_zone(timezone))
        enrolled_at = _as_utc(enrolled_at, "enrolled_at")
        local = enrolled_at.astimezone(zone).replace(tzinfo=None)
        start = _Start(enrolled_at, local, zone, timezone)
        for index, entry in enumerate(self.schedule.entries):
            if entry.cadence.at_enrollment:
                if enrolled_at < until:
                    yield Slot(entry, 0, enrolled_at, local.isoformat(timespec="minutes"),
                               enrolled_at + entry.open_for)
                continue
            if entry.local_time is None:  # a random window: per participant
                for o in _plan_entry(self.schedule, entry, start, until, participant_key):
                    if o.scheduled_at < until and o.position == 0:
                        yield Slot(entry, o.wave, o.scheduled_at, o.local_time, o.closes_at)
                continue
            for slot in self._fixed(index, entry, start):
                if slot.scheduled_at < enrolled_at:  # day 0, time already passed: open late
                    slot = Slot(entry, slot.wave, enrolled_at,
                                local.isoformat(timespec="minutes"), enrolled_at + entry.open_for)
                if slot.scheduled_at >= until:
                    break  # later days only get later (same wall time, ascending dates)
                yield slot

    def _fixed(self, index: int, entry: Entry, start: _Start) -> list[Slot]:
        key = (index, start.zone_name, start.local.date())
        cached = self._slots.get(key)
        if cached is None:
            assert entry.local_time is not None
            days = entry.cadence.days(enrolled_weekday=start.local.weekday(),
                                      study_length_days=self.schedule.study_length_days)
            cached = []
            for wave, day in enumerate(days):
                nominal = datetime.combine(start.local.date() + timedelta(days=day),
                                           entry.local_time)
                scheduled_at, local = resolve_local(nominal, start.zone)
                cached.append(Slot(entry, wave, scheduled_at, local.isoformat(timespec="minutes"),
                                   scheduled_at + entry.open_for))
            self._slots[key] = cached
        return cached

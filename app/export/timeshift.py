"""Time without dates (issue 16 part 3): what an export may say about when things happened.

Exact days since enrollment (``day``) together with the weeks since a dated study event pinned
enrollment dates: each row bounds the date to a week, and rows a few days apart in different
weeks narrow it to the day. Days per wave, exact to the day, also made most people unique. So,
with the study file's ``export.time`` (defaults below):

- ``day`` and ``days_in_study`` are rounded down to multiples of ``day_resolution_days`` in
  every profile: answering one or three days after an invitation no longer shows.
- The research profile moves each participant's enrollment date by an offset drawn uniformly
  from ``[-S, S]`` days, S = ``max_shift_days`` (at least ``date_precision_days`` wide in all),
  keyed by HMAC-SHA256 of the export's pseudonym key: the same for every row of one person
  within an export, the same again under a stable key, unrelated under fresh keys. The weeks
  from each study event to that shifted enrollment are put in bands of ``event_band_weeks``
  (released as the band's middle week), and a row's ``week_since_<event>`` is that plus the
  whole weeks of its released ``day``. A row thus says nothing about the enrollment beyond its
  band, and rows together say no more than one: the enrollment date stays uncertain over
  7 * event_band_weeks + 2S days (never less than 2S + 1), and the event-time pattern of a
  person is their band and their wave pattern, nothing finer (exact answer days and weeks used
  to pin enrollment days through the week boundaries the rows crossed).
- The strict profile releases no calendar information at all.

Pure functions; the export applies them (app/export/service.py, app/export/stream.py).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_DATE_PRECISION_DAYS = 28
DEFAULT_DAY_RESOLUTION_DAYS = 7
DEFAULT_EVENT_BAND_WEEKS = 4
_LIMITS = {  # setting -> (minimum, maximum), as surveys/schema/study.schema.json
    "date_precision_days": (1, 366),
    "day_resolution_days": (1, 28),
    "event_band_weeks": (1, 52),
}
_SHIFT_DOMAIN = b"wellpanel export date shift\0"  # never the pseudonym's message


class TimePolicyError(ValueError):
    """An invalid ``export.time`` setting; the message names it."""


@dataclass(frozen=True)
class TimePolicy:
    date_precision_days: int = DEFAULT_DATE_PRECISION_DAYS
    day_resolution_days: int = DEFAULT_DAY_RESOLUTION_DAYS
    event_band_weeks: int = DEFAULT_EVENT_BAND_WEEKS
    declared: bool = False

    @property
    def max_shift_days(self) -> int:
        """S: offsets in [-S, S] span 2S + 1 >= date_precision_days days."""
        return self.date_precision_days // 2

    @property
    def window_days(self) -> int:
        """The fewest enrollment days a research export leaves possible for anyone: a whole
        band of the shifted enrollment, widened by the shift either way."""
        return 7 * self.event_band_weeks + 2 * self.max_shift_days

    def report(self, research: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "source": "study file (export.time)" if self.declared else "defaults",
            "day_resolution_days": self.day_resolution_days,
            "day": f"days since enrollment, rounded down to a multiple of "
            f"{self.day_resolution_days} (day, days_in_study)",
        }
        if not research:
            out["calendar"] = "none: no dates, no event alignment, no export time (strict)"
            return out
        out.update({
            "date_precision_days": self.date_precision_days,
            "max_shift_days": self.max_shift_days,
            "event_band_weeks": self.event_band_weeks,
            "calendar": f"each participant's enrollment date is moved by a secret offset drawn "
            f"uniformly from -{self.max_shift_days}..{self.max_shift_days} days (HMAC-SHA256 "
            f"of the export key) and only its {self.event_band_weeks}-week band relative to "
            f"each event is released (week_since_<event> = the band's middle week + day // 7): "
            f"an enrollment or answer date reconstructed from the export is uncertain over "
            f"{self.window_days} days at the least",
            "uncertainty_days": self.window_days,
            "residual_risk": "several exports of the same people under fresh keys have "
            "independent offsets; if they are re-linked through the answers themselves, "
            "the offsets average out. Release repeatedly to one recipient under a stable key "
            "(the same offsets), or not at all",
        })
        return out


def parse_policy(study: Mapping[str, Any]) -> TimePolicy:
    """Read ``export.time`` from the study file content; defaults when absent."""
    block = (study.get("export") or {}).get("time")
    if block is None:
        return TimePolicy()
    where = "study file: export.time"
    if not isinstance(block, Mapping):
        raise TimePolicyError(f"{where}: must be a mapping")
    unknown = sorted(set(block) - set(_LIMITS))
    if unknown:
        raise TimePolicyError(f"{where}: unknown setting(s) {', '.join(unknown)}")
    values: dict[str, int] = {}
    for name, (lo, hi) in _LIMITS.items():
        v = block.get(name, getattr(TimePolicy, name))
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise TimePolicyError(f"{where}.{name}: a whole number from {lo} to {hi}, not {v!r}")
        values[name] = v
    return TimePolicy(**values, declared=True)


def date_shift(key: bytes, internal_id: str, max_shift: int) -> int:
    """The participant's offset in days, uniform on [-max_shift, max_shift] (the modulo bias
    of a 64-bit draw is below 1e-17)."""
    if max_shift <= 0:
        return 0
    digest = hmac.new(key, _SHIFT_DOMAIN + internal_id.encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") % (2 * max_shift + 1) - max_shift


def coarse_days(days: Any, resolution: int) -> Any:
    """Days rounded down to a multiple of ``resolution`` (ints or NumPy arrays)."""
    if resolution <= 1:
        return days
    if isinstance(days, np.ndarray):
        return (days // resolution) * resolution
    return None if days is None else (int(days) // resolution) * resolution


def enrollment_week(shifted_enrolled_day: Any, event_day: int, band_weeks: int) -> Any:
    """Weeks from the event to the participant's shifted enrollment day, as the middle week
    of its band of ``band_weeks`` (the first week for one-week bands)."""
    weeks = (shifted_enrolled_day - event_day) // 7
    return (weeks // band_weeks) * band_weeks + band_weeks // 2


def event_weeks(shifted_enrolled_day: Any, released_day: Any, event_day: int,
                band_weeks: int) -> Any:
    """A row's weeks since the event: the enrollment's banded week plus the whole weeks of the
    row's released ``day``. Every row of one person says the same about their enrollment (its
    band), so their rows together tell no more than one does, however many there are."""
    return enrollment_week(shifted_enrolled_day, event_day, band_weeks) + released_day // 7

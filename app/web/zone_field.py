"""What the time-zone field (templates/_timezone_field.html) of join and settings needs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from app.participants.timezones import UTC_ZONE, canonical_zone, zone_choices


def zone_field(lang: str, now: datetime, chosen: str | None, *,
               keep_unlisted: bool = False) -> dict[str, Any]:
    """The list in the page language with offsets at ``now``, and which entry is selected.

    ``chosen`` is the zone posted or stored; an alias selects the zone it means. With nothing
    valid chosen the page says UTC and lets the browser's zone replace it (timezone.js).
    ``keep_unlisted``: a stored zone from before the list (say Etc/GMT+5) stays offered, so
    saving the settings page without touching the field keeps it.
    """
    selected = canonical_zone(chosen) if chosen else None
    extra = chosen if keep_unlisted and chosen and selected is None else None
    return {
        "tz_choices": zone_choices(lang, now),
        "tz_selected": selected or extra or UTC_ZONE,
        "tz_extra": extra,
        "tz_detect": selected is None and extra is None,
    }


def same_zone(sent: str, stored: str) -> bool:
    """Whether a posted zone is the one already stored (by name, or as the zone it means)."""
    if sent == stored:
        return True
    meant = canonical_zone(sent)
    return meant is not None and meant == canonical_zone(stored)

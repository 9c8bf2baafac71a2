"""The time zones a participant may choose: canonical IANA zones with a label and UTC offset.

The list is the IANA database's ``zone.tab`` (read from the ``tzdata`` package, so it does not
depend on the host's /usr/share/zoneinfo) plus ``UTC``. ``zone.tab`` has one row per zone and
country, with the country code, so every zone gets a localized "country - city" label, and a
Norwegian finds Europe/Oslo (``zone1970.tab`` and ``zonenow.tab`` merge countries whose clocks
agree, e.g. Oslo into Europe/Berlin). It holds none of ``available_timezones()``'s noise:
``localtime``, ``Factory``, ``posixrules``, ``posix/``, ``right/``, ``Etc/GMT+5``, and no
backward-compatibility links (``PRC``, ``US/Eastern``, ``GB``). Those links, from ``tzdata.zi``,
are kept only to map what an old client or a browser sends (Chromium reports
``Asia/Calcutta``) to the zone in the list. Babel's CLDR ids were not used as the list: CLDR
keeps old names (``Asia/Calcutta``, ``Europe/Kiev``) as its canonical ids.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib.resources import files
from zoneinfo import ZoneInfo

from babel import Locale
from babel.dates import (
    format_skeleton,
    format_time,
    get_datetime_format,
    get_timezone_location,
    get_timezone_name,
)

UTC_ZONE = "UTC"
_UTC_TARGETS = ("Etc/UTC", "Etc/GMT")  # links to these (Zulu, GMT, Etc/Universal...) mean UTC


@dataclass(frozen=True)
class ZoneChoice:
    """One entry of the list, in one language, at one moment."""

    zone: str
    label: str  # e.g. "Deutschland – Berlin"
    offset: str  # e.g. "UTC+01:00", at the moment the list was made
    search: str  # lower-case words a filter matches: the zone, its aliases, the English label

    @property
    def text(self) -> str:
        return f"{self.label} ({self.offset})"


def _tzdata_file(name: str) -> str:
    return (files("tzdata") / "zoneinfo" / name).read_text("utf-8")


@cache
def zone_countries() -> dict[str, str]:
    """Every zone of zone.tab with its ISO 3166 country code."""
    zones: dict[str, str] = {}
    for line in _tzdata_file("zone.tab").splitlines():
        if line and not line.startswith("#"):
            country, _coordinates, zone, *_ = line.split("\t")
            zones[zone] = country
    return zones


@cache
def canonical_zones() -> frozenset[str]:
    return frozenset(zone_countries()) | {UTC_ZONE}


@cache
def aliases() -> dict[str, str]:
    """Deprecated or merged names (tzdata.zi's links) -> the zone in the list they mean."""
    links: dict[str, str] = {}
    for line in _tzdata_file("tzdata.zi").splitlines():
        if line.startswith("L "):
            _, target, alias = line.split()
            links[alias] = target
    canonical = canonical_zones()
    mapped: dict[str, str] = {}
    for alias, target in links.items():
        if alias in canonical:
            continue
        for _ in range(5):  # links point at zones; follow a chain should one appear
            if target not in links or target in canonical:
                break
            target = links[target]
        if target in canonical:
            mapped[alias] = target
        elif target in _UTC_TARGETS:
            mapped[alias] = UTC_ZONE
    for name in _UTC_TARGETS:
        mapped[name] = UTC_ZONE
    return mapped


def canonical_zone(name: str) -> str | None:
    """The listed zone ``name`` means (itself, or what a deprecated alias links to), else None."""
    if name in canonical_zones():
        return name
    return aliases().get(name)


def utc_offset(zone: str, now: datetime) -> str:
    """The zone's offset at ``now`` as UTC+hh:mm (right on either side of a DST change)."""
    offset = now.astimezone(ZoneInfo(zone)).utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    hours, rest = divmod(abs(minutes), 60)
    return f"UTC{sign}{hours:02d}:{rest:02d}"


def babel_locale(language: str) -> Locale:
    return Locale.parse(language, sep="-")


def _fold(text: str) -> str:
    """A sort and search key: accents and case do not matter (Österreich under O)."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def _label(zone: str, locale: Locale) -> tuple[str, str]:
    """(country, city) in the locale; the city is Babel's exemplar city for the zone."""
    if zone == UTC_ZONE:
        return "UTC", get_timezone_name(ZoneInfo("Etc/UTC"), width="long", locale=locale,
                                        zone_variant="standard")
    country = locale.territories.get(zone_countries()[zone], zone_countries()[zone])
    try:
        city = get_timezone_location(zone, locale=locale, return_city=True)
    except LookupError:  # a zone newer than Babel's CLDR data
        city = zone.rsplit("/", 1)[-1].replace("_", " ")
    return country, city


@cache
def _labelled(language: str) -> tuple[tuple[str, str, str], ...]:
    """(zone, label, search words) in the language, sorted by country then city; UTC first."""
    locale, english = babel_locale(language), babel_locale("en")
    by_target: dict[str, list[str]] = {}
    for alias, target in aliases().items():
        by_target.setdefault(target, []).append(alias)
    rows = []
    for zone in canonical_zones():
        country, city = _label(zone, locale)
        label = f"{country} – {city}" if city and city != country else country
        en_country, en_city = _label(zone, english)
        words = " ".join([zone, zone.replace("_", " "), *sorted(by_target.get(zone, [])),
                          en_country, en_city, label])
        key = (zone != UTC_ZONE, _fold(country), _fold(city))
        rows.append((key, zone, label, _fold(words)))
    return tuple((zone, label, words) for _, zone, label, words in sorted(rows))


def zone_choices(language: str, now: datetime) -> list[ZoneChoice]:
    """The list shown to a participant: labels in their language, offsets at ``now``."""
    return [ZoneChoice(zone, label, utc_offset(zone, now), words)
            for zone, label, words in _labelled(language)]


# ---- showing a moment to a participant -------------------------------------------------------

def _zone_info(zone: str) -> ZoneInfo:
    try:
        return ZoneInfo(zone)
    except (ValueError, LookupError):  # a stored zone the host no longer knows: never a 500
        return ZoneInfo("UTC")


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def local_date(moment: datetime, zone: str, language: str) -> str:
    """The calendar day of ``moment`` in the zone, e.g. "3. Dez. 2026" / "2026年12月3日"."""
    return format_skeleton("yMMMd", _aware(moment), tzinfo=_zone_info(zone),
                           locale=babel_locale(language))


def local_day_month(moment: datetime, zone: str, language: str) -> str:
    """A short day in the zone for chart axes, e.g. "Nov 3" / "3. Nov." / "11月3日"."""
    return format_skeleton("MMMd", _aware(moment), tzinfo=_zone_info(zone),
                           locale=babel_locale(language))


def local_datetime(moment: datetime, zone: str, language: str) -> str:
    """Date and time in the zone and language, with the zone shown.

    "3. Dez. 2026, 18:00 MEZ (Europe/Berlin)", "Nov 2, 2026, 9:00 AM EST (America/New_York)",
    "2026年12月3日 18:00 (Asia/Shanghai)": CLDR's abbreviation where the language has one
    (EST and EDT tell the two sides of a DST change apart), and always the IANA name.
    """
    locale, tz = babel_locale(language), _zone_info(zone)
    moment = _aware(moment)
    day = local_date(moment, zone, language)
    clock = format_time(moment, "short", tzinfo=tz, locale=locale)
    text = get_datetime_format("medium", locale=locale).replace("{1}", day).replace("{0}", clock)
    abbreviation = get_timezone_name(moment.astimezone(tz), "short", locale=locale)
    if abbreviation[:1].isalpha() and not abbreviation.startswith("GMT"):
        text = f"{text} {abbreviation}"  # not Babel's "+0100" / "GMT+8" fallbacks
    name = canonical_zone(zone) or zone
    return text if name == abbreviation else f"{text} ({name})"

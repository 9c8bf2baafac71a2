"""Crisis resources from the study file (block `crisis_resources`), read generically.

The study file names the answer that gives a participant's country (`country_from`); the
countries offered are that question's option values, read from the instrument pinned in the
protocol, so no module names a study's items. Every offered country must have a line: the
study load refuses a file where one is missing (`problem`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from babel import Locale, UnknownLocaleError

from app.core import urls

ALWAYS_OPEN = "24/7"


@dataclass(frozen=True)
class Line:
    """A crisis line or directory in one language."""

    name: str
    phone: str | None = None
    url: str | None = None
    hours: str | None = None  # opening times; None when always open or not applicable
    always_open: bool = False

    @property
    def tel(self) -> str | None:
        """The number for a tel: link (digits and a leading +)."""
        return re.sub(r"[^0-9+]", "", self.phone) if self.phone else None


@dataclass(frozen=True)
class Emergency:
    number: str
    service: str = "any"  # any, ambulance or police

    @property
    def tel(self) -> str:
        return re.sub(r"[^0-9+]", "", self.number)


@dataclass(frozen=True)
class CountryHelp:
    code: str
    name: str  # the country's name in the page language
    lines: list[Line]
    emergency: list[Emergency]


@dataclass(frozen=True)
class CrisisHelp:
    """What a crisis page shows: the participant's country (None when unknown), the
    directories, and (for the full list) every offered country."""

    country: CountryHelp | None
    directory: list[Line]
    countries: list[CountryHelp] = field(default_factory=list)


def _localized(texts: dict[str, str], language: str) -> str:
    return texts.get(language) or texts.get("en") or next(iter(texts.values()))


def _line(entry: dict[str, Any], language: str) -> Line:
    hours = entry.get("hours")
    # study load refuses other addresses; one stored before that check is never a link (nor
    # in the API's list): app/core/urls.py
    return Line(name=_localized(entry["name"], language), phone=entry.get("phone"),
                url=urls.safe_href(entry.get("url")) or None,
                hours=_localized(hours, language) if isinstance(hours, dict) else None,
                always_open=hours == ALWAYS_OPEN)


def country_name(code: str, language: str) -> str:
    """The country's name in the language (Babel's CLDR data), e.g. jp in zh-CN -> 日本."""
    try:
        names = Locale.parse(language.replace("-", "_")).territories
    except (UnknownLocaleError, ValueError):
        names = Locale("en").territories
    return names.get(code.upper(), code.upper())


def offered_countries(config: dict[str, Any], instruments: dict[str, Any]) -> list[str]:
    """The option values of the country question that name a country, in the order offered.

    `instruments` is the protocol's pinned instruments (key -> {"definition": ...})."""
    source = config["country_from"]
    pinned = instruments.get(source["instrument"])
    if pinned is None:
        raise ValueError(f"instrument {source['instrument']!r} is not one of the study's "
                         "instruments")
    items = pinned["definition"].get("items", [])
    item = next((i for i in items if i.get("id") == source["item"]), None)
    if item is None or not item.get("options"):
        raise ValueError(f"instrument {source['instrument']!r} has no question "
                         f"{source['item']!r} with options")
    skip = set(source.get("not_a_country", []))
    return [str(o["value"]) for o in item["options"] if str(o["value"]) not in skip]


def problem(study: dict[str, Any], instruments: dict[str, Any]) -> str | None:
    """Why the study file's crisis resources are not complete (None when they are)."""
    config = study.get("crisis_resources")
    if not config:
        return "crisis_resources: missing"
    try:
        offered = offered_countries(config, instruments)
    except ValueError as exc:
        return f"crisis_resources/country_from: {exc}"
    missing = [code for code in offered if code not in config["countries"]]
    if missing:
        source = config["country_from"]
        return (f"crisis_resources/countries: the question {source['instrument']}/"
                f"{source['item']} offers {', '.join(missing)} but there is no crisis line "
                f"for {'it' if len(missing) == 1 else 'them'}; add a line (name, phone or "
                "url, hours, source, checked) and the emergency numbers, or list the value "
                "under crisis_resources/country_from/not_a_country")
    return None


def for_country(config: dict[str, Any], code: str | None, language: str) -> CountryHelp | None:
    entry = config.get("countries", {}).get(code or "")
    if entry is None:
        return None
    assert code is not None
    return CountryHelp(code=code, name=country_name(code, language),
                       lines=[_line(line, language) for line in entry["lines"]],
                       emergency=[Emergency(e["number"], e.get("service", "any"))
                                  for e in entry["emergency"]])


def directory(config: dict[str, Any], language: str) -> list[Line]:
    return [_line(entry, language) for entry in config.get("directory", [])]


def crisis_help(config: dict[str, Any], country: str | None, language: str,
                offered: list[str] | None = None) -> CrisisHelp:
    """The page content: the given country's help (if it has any), the directories, and, when
    `offered` is given, every offered country with the given one first."""
    own = for_country(config, country, language)
    everyone = [for_country(config, code, language) for code in (offered or [])]
    listed = [c for c in everyone if c is not None]
    if own is not None and offered is not None:
        listed = [own] + [c for c in listed if c.code != own.code]
    return CrisisHelp(country=own, directory=directory(config, language), countries=listed)

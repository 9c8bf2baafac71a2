"""The list of time zones participants choose from, and how a moment is shown to them."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import available_timezones

import pytest
from pydantic import ValidationError

from app.participants.models import EnrollmentCreate, SettingsUpdate
from app.participants.timezones import (
    canonical_zone,
    canonical_zones,
    local_date,
    local_datetime,
    utc_offset,
    zone_choices,
)

LANGUAGES = ("en", "de", "pt-BR", "zh-CN")
JANUARY = datetime(2026, 1, 15, 12, tzinfo=UTC)
JULY = datetime(2026, 7, 15, 12, tzinfo=UTC)
NOT_OFFERED = ("localtime", "Factory", "posixrules", "PRC", "US/Eastern", "GB", "UCT", "Zulu",
               "Etc/GMT+5", "EST5EDT", "posix/Europe/Berlin", "right/Europe/Berlin",
               "Asia/Calcutta", "Europe/Kiev")


def test_the_list_holds_canonical_zones_only():
    offered = {c.zone for c in zone_choices("en", JANUARY)}
    assert offered == canonical_zones()
    assert not offered & set(NOT_OFFERED)
    assert {"UTC", "Europe/Berlin", "Europe/Oslo", "America/New_York", "Asia/Shanghai",
            "Asia/Kolkata", "Europe/Kyiv", "America/Sao_Paulo"} <= offered
    assert offered < available_timezones() | {"UTC"}  # every entry is a zone this host knows
    assert 350 < len(offered) < 500


@pytest.mark.parametrize(("moment", "offset"), [(JANUARY, "UTC+01:00"), (JULY, "UTC+02:00")])
def test_offsets_are_taken_at_the_moment_asked(moment, offset):
    berlin = next(c for c in zone_choices("de", moment) if c.zone == "Europe/Berlin")
    assert berlin.offset == offset
    assert berlin.text == f"Deutschland – Berlin ({offset})"


def test_offsets_follow_new_york_out_of_daylight_saving():
    # 2026-11-01 02:00 EDT becomes 01:00 EST (06:00 UTC)
    assert utc_offset("America/New_York", datetime(2026, 11, 1, 5, 59, tzinfo=UTC)) == "UTC-04:00"
    assert utc_offset("America/New_York", datetime(2026, 11, 1, 6, 0, tzinfo=UTC)) == "UTC-05:00"
    assert utc_offset("Asia/Kolkata", JANUARY) == "UTC+05:30"


def test_labels_are_in_the_page_language_and_sorted_by_country():
    texts = {lang: {c.zone: c.text for c in zone_choices(lang, JANUARY)} for lang in LANGUAGES}
    assert texts["en"]["Asia/Shanghai"] == "China – Shanghai (UTC+08:00)"
    assert texts["pt-BR"]["Asia/Shanghai"] == "China – Xangai (UTC+08:00)"
    assert texts["zh-CN"]["Asia/Shanghai"] == "中国 – 上海 (UTC+08:00)"
    assert texts["de"]["America/New_York"] == "Vereinigte Staaten – New York (UTC-05:00)"
    german = [c.zone for c in zone_choices("de", JANUARY)]
    assert german[0] == "UTC"
    assert german.index("Europe/Vienna") < german.index("Europe/Warsaw")  # Österreich, Polen
    berlin = next(c for c in zone_choices("zh-CN", JANUARY) if c.zone == "Europe/Berlin")
    assert "germany" in berlin.search and "europe/berlin" in berlin.search  # filter words


def test_old_names_map_to_the_zone_they_mean_and_others_are_refused():
    assert canonical_zone("PRC") == "Asia/Shanghai"
    assert canonical_zone("US/Eastern") == "America/New_York"
    assert canonical_zone("Asia/Calcutta") == "Asia/Kolkata"  # what Chromium reports
    assert canonical_zone("Zulu") == "UTC" and canonical_zone("Etc/UTC") == "UTC"
    for name in ("localtime", "Factory", "posixrules", "Etc/GMT+5", "Moon/Base", ""):
        assert canonical_zone(name) is None
    assert EnrollmentCreate(email="a@example.org", timezone="US/Eastern",
                            screening={}).timezone == "America/New_York"
    with pytest.raises(ValidationError, match="timezone"):
        EnrollmentCreate(email="a@example.org", timezone="localtime", screening={})
    with pytest.raises(ValidationError, match="timezone"):
        SettingsUpdate(timezone="Factory")


def test_a_moment_is_shown_in_the_zone_and_language_with_the_zone_named():
    moment = datetime(2026, 12, 3, 17, 0, tzinfo=UTC)
    assert local_datetime(moment, "Europe/Berlin", "de") == (
        "3. Dez. 2026, 18:00 MEZ (Europe/Berlin)")
    assert local_datetime(moment, "Asia/Shanghai", "zh-CN") == (
        "2026年12月4日 01:00 (Asia/Shanghai)")
    assert local_datetime(moment, "America/Sao_Paulo", "pt-BR") == (
        "3 de dez. de 2026 14:00 BRT (America/Sao_Paulo)")
    assert local_datetime(moment, "UTC", "en") == "Dec 3, 2026, 5:00\u202fPM UTC"
    assert local_datetime(moment, "US/Eastern", "en").endswith("EST (America/New_York)")
    assert local_date(moment, "Asia/Shanghai", "en") == "Dec 4, 2026"  # the day there


def test_the_same_wall_clock_names_its_side_of_the_dst_change():
    before = local_datetime(datetime(2026, 11, 1, 5, 30, tzinfo=UTC), "America/New_York", "en")
    after = local_datetime(datetime(2026, 11, 1, 6, 30, tzinfo=UTC), "America/New_York", "en")
    assert before == "Nov 1, 2026, 1:30\u202fAM EDT (America/New_York)"
    assert after == "Nov 1, 2026, 1:30\u202fAM EST (America/New_York)"


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_language_formats_every_offered_zone(language):
    moment = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    for zone in canonical_zones():
        text = local_datetime(moment, zone, language)
        assert text and "2026" in text and zone in text

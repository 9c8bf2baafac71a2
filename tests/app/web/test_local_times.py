"""Times on participant pages and in emails: in the participant's zone and language, zone shown.

Two participants, one in America/New_York (English) and one in Asia/Shanghai (Chinese), enrol
on 2026-10-30 on the fixed clock; New York leaves daylight saving on 2026-11-01, between the
invitation and the survey's closing time. Emails go through the real SMTP server.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from app.participants.models import Participant
from app.scheduling.dispatcher import tick
from app.studies import service as studies
from tests.support.factory import consented_participants
from tests.support.flows import fresh_link, joined_and_consented
from tests.support.studyfiles import StudyCopy

# One occasion, the day after enrolment at 10:00 local time, open 96 hours.
CORE = {"name": "core", "instruments": ["who5", "phq9"], "cadence": {"offsets_days": [1]},
        "local_time": "10:00", "open_for_hours": 96, "reminders_hours": [24, 72]}
# 13:00 EDT in New York; already 01:00 on 31 October in Shanghai
ENROLLED = datetime(2026, 10, 30, 17, 0, tzinfo=UTC)
NNBSP = "\u202f"  # CLDR's narrow no-break space before AM/PM


@pytest.fixture
def core_study(tmp_path, session, loaded_study) -> int:  # type: ignore[no-untyped-def]
    copy = StudyCopy(tmp_path)
    data = copy.read()
    data["schedule"]["entries"] = [CORE]
    copy.write(data)
    return studies.load_study(session, copy.file, copy.surveys, actor="test",
                              now=ENROLLED).protocol_version


def _tick(app, clock):  # type: ignore[no-untyped-def]
    return tick(app.state.engine, app.state.settings, app.state.channel, now=clock())


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF field on the page"
    return match.group(1)


def _signed_in(app, link: str) -> TestClient:  # type: ignore[no-untyped-def]
    web = TestClient(app)
    assert web.get(link.replace("http://testserver", "")).status_code == 200
    return web


def test_pages_and_emails_show_local_time_with_the_zone_across_dst(app, smtp, session, clock,
                                                                   core_study):
    smtp.clear()
    clock.now = ENROLLED
    (new_york,) = consented_participants(session, 1, now=clock(), timezone="America/New_York",
                                         prefix="ny")
    (shanghai,) = consented_participants(session, 1, now=clock(), timezone="Asia/Shanghai",
                                         prefix="sh")
    shanghai.language = "zh-CN"
    session.add(shanghai)
    session.commit()
    _tick(app, clock)  # plans: New York opens 31 Oct 10:00 EDT, Shanghai 1 Nov 10:00 CST
    clock.now = datetime(2026, 11, 1, 3, 0, tzinfo=UTC)  # 23:00 EDT on 31 Oct; 11:00 in Shanghai
    assert _tick(app, clock).sent == 2

    # The invitation is sent under EDT; the survey closes after the change, at 09:00 EST.
    ny_mail = smtp.to("ny0@example.org")[-1]
    assert f"open until Nov 4, 2026, 9:00{NNBSP}AM EST (America/New_York)." in ny_mail.body
    sh_mail = smtp.to("sh0@example.org")[-1]
    assert "开放至 2026年11月5日 10:00 (Asia/Shanghai)" in sh_mail.body
    for mail in (ny_mail, sh_mail):
        assert "UTC" not in mail.body

    ny_web = _signed_in(app, ny_mail.link())
    home = ny_web.get("/p")
    assert f"open until Nov 4, 2026, 9:00{NNBSP}AM EST (America/New_York)" in home.text
    assert ", Oct 30, 2026: " in home.text  # the consent record, dated in New York
    settings = ny_web.get("/p/settings")
    assert f"open now, until Nov 4, 2026, 9:00{NNBSP}AM EST (America/New_York)" in settings.text

    sh_web = _signed_in(app, sh_mail.link())
    sh_home = sh_web.get("/p")
    assert '<html lang="zh-CN">' in sh_home.text
    assert "开放至 2026年11月5日 10:00 (Asia/Shanghai)" in sh_home.text
    assert "2026年10月31日" in sh_home.text  # consented 17:00 UTC on 30 Oct = 31 Oct there
    sh_settings = sh_web.get("/p/settings")
    assert "现已开放，至 2026年11月5日 10:00 (Asia/Shanghai)" in sh_settings.text

    # New York moves to Berlin before the first reminder: it is written at send time, in the
    # zone the participant has then (the survey still closes at 14:00 UTC = 15:00 CET).
    moved = ny_web.post("/p/settings/preferences", data={
        "csrf_token": _csrf(settings.text), "timezone": "Europe/Berlin", "language": "en"},
        follow_redirects=False)
    assert moved.status_code == 303
    clock.now = datetime(2026, 11, 1, 14, 30, tzinfo=UTC)
    assert _tick(app, clock).reminders == 1
    reminder = smtp.to("ny0@example.org")[-1]
    assert "Reminder" in reminder.message["Subject"]
    assert f"still open until Nov 4, 2026, 3:00{NNBSP}PM (Europe/Berlin)." in reminder.body


def test_the_consent_copy_shows_when_it_was_signed_in_local_time(app, client, smtp, clock,
                                                                 core_study):
    """Signed through the API like a participant (the copy is the snapshot stored at signing;
    rows written directly have no ledger entry, and their copy is refused)."""
    clock.now = ENROLLED
    joined_and_consented(client, smtp, "copy0@example.org", language="de",
                         timezone="Asia/Shanghai")
    clock.now = datetime(2026, 11, 1, 3, 0, tzinfo=UTC)
    web = _signed_in(app, f"/p/login/{fresh_link(client, smtp, 'copy0@example.org')}")
    record = re.search(r'href="/p/consent/records/(\d+)"', web.get("/p").text)
    assert record
    copy = web.get(f"/p/consent/records/{record.group(1)}")
    assert copy.status_code == 200
    assert "31. Okt. 2026, 01:00 (Asia/Shanghai)" in copy.text
    assert "UTC" not in re.sub(r"<[^>]+>", " ", copy.text.split("<article")[0])


def test_every_language_renders_local_times(app, smtp, session, clock, core_study):
    smtp.clear()
    clock.now = ENROLLED
    people = consented_participants(session, 4, now=clock(), timezone="Europe/Berlin",
                                    prefix="lang")
    for person, lang in zip(people, ("en", "de", "pt-BR", "zh-CN"), strict=True):
        person.language = lang
        session.add(person)
    session.commit()
    clock.now = datetime(2026, 11, 1, 3, 0, tzinfo=UTC)
    _tick(app, clock)
    _tick(app, clock)
    expected = {"en": f"Nov 4, 2026, 10:00{NNBSP}AM (Europe/Berlin)",
                "de": "4. Nov. 2026, 10:00 MEZ (Europe/Berlin)",
                "pt-BR": "4 de nov. de 2026 10:00 (Europe/Berlin)",
                "zh-CN": "2026年11月4日 10:00 (Europe/Berlin)"}
    for i, lang in enumerate(("en", "de", "pt-BR", "zh-CN")):
        mail = smtp.to(f"lang{i}@example.org")[-1]
        assert expected[lang] in mail.body, (lang, mail.body)
        web = _signed_in(app, mail.link())
        for path in ("/p", "/p/settings"):
            page = web.get(path)
            assert page.status_code == 200 and f'<html lang="{lang}">' in page.text
            assert expected[lang] in page.text, (lang, path)


def test_a_stored_alias_zone_keeps_working(app, smtp, session, clock, core_study):
    """Participants saved before the list (US/Eastern) see their times and can save settings."""
    smtp.clear()
    clock.now = ENROLLED
    (person,) = consented_participants(session, 1, now=clock(), timezone="US/Eastern",
                                       prefix="alias")
    (odd,) = consented_participants(session, 1, now=clock(), timezone="Etc/GMT+5",
                                    prefix="odd")
    clock.now = datetime(2026, 11, 1, 3, 0, tzinfo=UTC)
    _tick(app, clock)
    _tick(app, clock)
    mail = smtp.to("alias0@example.org")[-1]
    assert f"Nov 4, 2026, 9:00{NNBSP}AM EST (America/New_York)" in mail.body
    web = _signed_in(app, mail.link())
    page = web.get("/p/settings")
    assert '<option value="America/New_York" data-search' in page.text
    assert re.search(r'<option value="America/New_York"[^>]* selected>', page.text)
    saved = web.post("/p/settings/preferences", data={
        "csrf_token": _csrf(page.text), "timezone": "America/New_York", "language": "de"},
        follow_redirects=False)
    assert saved.status_code == 303

    odd_web = _signed_in(app, smtp.to("odd0@example.org")[-1].link())
    odd_page = odd_web.get("/p/settings")
    assert re.search(r'<option value="Etc/GMT\+5" selected>', odd_page.text)
    kept = odd_web.post("/p/settings/preferences", data={
        "csrf_token": _csrf(odd_page.text), "timezone": "Etc/GMT+5", "language": "pt-BR"},
        follow_redirects=False)
    assert kept.status_code == 303
    with Session(app.state.engine) as s:
        zones = {p.id: (p.timezone, p.language) for p in s.exec(select(Participant)).all()}
    assert zones[person.id] == ("US/Eastern", "de")  # unchanged zone, not re-planned
    assert zones[odd.id] == ("Etc/GMT+5", "pt-BR")

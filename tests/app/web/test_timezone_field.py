"""The time-zone field of the join and settings pages, and unknown zones on pages and the API."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from sqlmodel import select

from app.participants.models import Contact, Participant
from tests.support.flows import ELIGIBLE, STATEMENTS, STUDY, consent_body, joined_and_consented


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF field on the page"
    return match.group(1)


def _options(html: str) -> dict[str, str]:
    select_html = re.search(r'<select id="timezone".*?</select>', html, re.S)
    assert select_html, "no time-zone list on the page"
    return dict(re.findall(r'<option value="([^"]+)"[^>]*>([^<]+)</option>', select_html.group(0)))


def _post_join(web: TestClient, lang: str, zone: str, email: str = "tz@example.org"):  # type: ignore[no-untyped-def]
    page = web.get(f"/join/{STUDY}?lang={lang}")
    return web.post(f"/join/{STUDY}?lang={lang}", data={
        "csrf_token": _csrf(page.text), "lang": lang, "email": email, "timezone": zone,
        "screening_adult": "yes", "screening_uses_ai_chat": "yes"})


def test_join_offers_a_list_with_offsets_and_asks_the_browser(app):
    web = TestClient(app)
    page = web.get(f"/join/{STUDY}?lang=de")  # the clock says 2 November: winter time
    options = _options(page.text)
    assert options["Europe/Berlin"] == "Deutschland – Berlin (UTC+01:00)"
    assert options["America/New_York"] == "Vereinigte Staaten – New York (UTC-05:00)"
    assert not {"localtime", "Factory", "PRC", "US/Eastern", "posixrules"} & set(options)
    assert '<input id="timezone"' not in page.text  # no free text any more
    # Nothing chosen yet: UTC is selected and the script may replace it with the browser's zone
    assert re.search(r'<select id="timezone" name="timezone" data-detect="1"', page.text)
    assert re.search(r'<option value="UTC"[^>]* selected>', page.text)
    assert '<script src="/static/timezone.js"' in page.text
    assert 'id="timezone-filter"' in page.text and 'class="tz-filter" hidden' in page.text
    assert web.get("/static/timezone.js").status_code == 200


def test_unknown_zone_on_the_join_page_is_explained_and_nothing_is_stored(app, session):
    web = TestClient(app)
    for zone in ("localtime", "Factory", "Moon/Base"):
        answer = _post_join(web, "zh-CN", zone)
        assert answer.status_code == 422 and '<html lang="zh-CN">' in answer.text
        assert 'id="timezone-error"' in answer.text and "请从列表中选择一个时区。" in answer.text
        assert re.search(r'<select id="timezone"[^>]*aria-invalid="true"', answer.text)
        assert re.search(r'<select id="timezone"[^>]*aria-describedby="timezone-error', answer.text)
    session.rollback()
    assert session.exec(select(Participant)).all() == []
    assert session.exec(select(Contact)).all() == []


def test_a_deprecated_alias_from_an_old_form_is_stored_as_its_zone(app, smtp, session):
    web = TestClient(app)
    answer = _post_join(web, "en", "US/Eastern", email="alias@example.org")
    assert answer.status_code == 200
    session.rollback()
    assert session.exec(select(Participant)).one().timezone == "America/New_York"


def test_the_api_refuses_an_unknown_zone_naming_the_field(client, smtp, session):
    for zone in ("localtime", "Factory", "posixrules", "right/Europe/Berlin"):
        bad = client.post(f"/api/v1/studies/{STUDY}/enrollments", json={
            "email": "api-tz@example.org", "timezone": zone, "screening": ELIGIBLE})
        assert bad.status_code == 422
        error = bad.json()["error"]
        assert error["code"] == "validation_failed"
        assert [d["field"] for d in error["details"]] == ["timezone"]
    session.rollback()
    assert session.exec(select(Participant)).all() == []
    person = joined_and_consented(client, smtp, "api-tz@example.org", timezone="PRC")
    refused = client.patch("/api/v1/me/settings", json={"timezone": "Factory"},
                           headers=person.headers)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["details"][0]["field"] == "timezone"
    session.rollback()
    assert session.exec(select(Participant)).one().timezone == "Asia/Shanghai"


def test_settings_page_lists_zones_and_refuses_unknown_ones(app, smtp, session):
    web = TestClient(app)
    _post_join(web, "pt-BR", "America/Sao_Paulo", email="settings-tz@example.org")
    consent_page = web.get(smtp.to("settings-tz@example.org")[-1].link()
                           .replace("http://testserver", ""))
    body = consent_body(language="pt-BR")
    signed = web.post("/p/consent", data={
        "csrf_token": _csrf(consent_page.text), "version": body["version"],
        "language": "pt-BR", "decision": "consent", "signature_name": "Ana Teste",
        "statements": STATEMENTS})
    assert signed.status_code == 200, signed.text[:500]
    page = web.get("/p/settings")
    options = _options(page.text)
    assert options["America/Sao_Paulo"] == "Brasil – São Paulo (UTC-03:00)"
    assert re.search(r'<option value="America/Sao_Paulo"[^>]* selected>', page.text)
    assert 'data-detect' not in page.text  # a stored choice is not replaced by the browser's
    bad = web.post("/p/settings/preferences", data={
        "csrf_token": _csrf(page.text), "timezone": "localtime", "language": "pt-BR"})
    assert bad.status_code == 422
    assert 'id="timezone-error"' in bad.text and "escolha um fuso horário da lista" in bad.text
    assert re.search(r'<select id="timezone"[^>]*aria-invalid="true"', bad.text)
    assert re.search(r'<option value="America/Sao_Paulo"[^>]* selected>', bad.text)
    session.rollback()
    assert session.exec(select(Participant)).one().timezone == "America/Sao_Paulo"

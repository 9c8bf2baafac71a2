"""The feedback page in Chromium at phone width, in every language: the chart fits, axe-core
finds nothing serious, and the settings page with the time-zone list passes the same checks."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from app.studies import service as studies
from tests.e2e.a11y import check_page
from tests.support.flows import fresh_link, joined_and_consented
from tests.support.studyfiles import StudyCopy

pytestmark = pytest.mark.browser
LANGUAGES = ("en", "de", "pt-BR", "zh-CN")


@pytest.fixture
def feedback_on(tmp_path, session, loaded_study, clock) -> None:  # type: ignore[no-untyped-def]
    copy = StudyCopy(tmp_path)
    data = copy.read()
    data["participant_feedback"] = {"enabled": True, "scores": [
        {"instrument": "who5", "score": "percentage"}, {"instrument": "phq9", "score": "total"}]}
    copy.write(data)
    studies.load_study(session, copy.file, copy.surveys, actor="test", now=clock())


def _answer(client, person, instrument: str, answers: dict, key: str) -> None:  # type: ignore[no-untyped-def]
    listed = client.get("/api/v1/me/surveys", headers=person.headers).json()
    instance = next(s["id"] for s in listed if s["instrument"] == instrument)
    answered = client.post(f"/api/v1/me/surveys/{instance}/responses", json={"answers": answers},
                           headers=person.headers | {"Idempotency-Key": key})
    assert answered.status_code == 201, answered.text


@pytest.mark.parametrize("lang", LANGUAGES)
def test_feedback_and_settings_pages_in_a_phone_browser(live_server, browser, client, smtp,
                                                        feedback_on, artifacts_dir, lang):
    person = joined_and_consented(client, smtp, f"fb-e2e-{lang.lower()}@example.org",
                                  language=lang, timezone="Asia/Shanghai")
    _answer(client, person, "who5", {f"who5_{i}": 3 for i in range(1, 6)}, f"e2e-who5-{lang}")
    context = browser.new_context(viewport={"width": 390, "height": 844}, locale=lang,
                                  timezone_id="Asia/Shanghai")
    page = context.new_page()
    page.goto(f"{live_server.url}/p/login/{fresh_link(client, smtp, person)}")
    page.click("#feedback-link")
    expect(page.locator("html")).to_have_attribute("lang", lang)
    chart = page.locator("#score-who5-percentage svg[role=img]")
    expect(chart).to_be_visible()
    box = chart.bounding_box()
    assert box and box["width"] <= 390
    expect(page.locator("#score-who5-percentage td.num")).to_have_text(["60"])
    assert check_page(page, lang) == []
    page.screenshot(path=str(artifacts_dir / f"feedback-{lang}.png"), full_page=True)

    page.goto(f"{live_server.url}/p/settings")
    expect(page.locator("#timezone")).to_have_value("Asia/Shanghai")
    page.fill("#timezone-filter", "berlin")
    expect(page.locator("#timezone")).to_have_value("Europe/Berlin")
    assert check_page(page, lang) == []
    page.screenshot(path=str(artifacts_dir / f"settings-timezone-{lang}.png"), full_page=True)
    context.close()

"""Every participant page the journey test does not pass through, in every language, in the
states that matter (forms with errors, declined, saved answers, paused, errors): each must
pass axe-core (no serious or critical violation), fit a 390 px screen and show no English
interface text. The participants are set up through the JSON API; the browser only looks."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.a11y import check_page
from tests.support.flows import consent, fresh_link, join

pytestmark = pytest.mark.browser
LANGUAGES = ["en", "de", "pt-BR", "zh-CN"]
PHONE = {"width": 390, "height": 844}
WHO5 = {f"who5_{i}": 3 for i in range(1, 6)}


def _looked_at(page: Page, lang: str, path: str, problems: list[str], artifacts,  # type: ignore[no-untyped-def]
               name: str, status: int = 200) -> None:
    response = page.goto(path)
    assert response is not None and response.status == status, f"{path}: {response.status}"
    expect(page.locator("html")).to_have_attribute("lang", lang)
    page.screenshot(path=str(artifacts / f"sweep-{lang}-{name}.png"), full_page=True)
    problems += check_page(page, lang)


def _submit_and_check(page: Page, lang: str, problems: list[str], artifacts, name: str,  # type: ignore[no-untyped-def]
                      status: int) -> None:
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.click("main form button[type=submit]")
    assert answer.value.status == status, f"{name}: {answer.value.status}"
    page.screenshot(path=str(artifacts / f"sweep-{lang}-{name}.png"), full_page=True)
    problems += check_page(page, lang)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_forms_with_errors_and_visitor_pages(live_server, browser, artifacts_dir, lang):
    url, problems = live_server.url, []
    context = browser.new_context(locale=lang, viewport=PHONE)
    page = context.new_page()
    _looked_at(page, lang, f"{url}/join?lang={lang}", problems, artifacts_dir, "join")
    _submit_and_check(page, lang, problems, artifacts_dir, "join-errors", 422)
    expect(page.locator("[aria-invalid=true]")).to_have_count(3)  # both questions, the address
    page.check("input[name=screening_adult][value=no]")
    page.check("input[name=screening_uses_ai_chat][value=yes]")
    page.fill("#email", f"young-{lang.lower()}@example.org")
    _submit_and_check(page, lang, problems, artifacts_dir, "ineligible", 200)
    _looked_at(page, lang, f"{url}/p/no-such-page", problems, artifacts_dir, "not-found", 404)
    _looked_at(page, lang, f"{url}/p/login/not-a-real-token", problems, artifacts_dir,
               "invalid-link", 401)
    context.close()
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_consent_errors_and_declining(live_server, browser, client, smtp, artifacts_dir, lang):
    url, problems = live_server.url, []
    person = join(client, smtp, f"sweep-decline-{lang.lower()}@example.org", language=lang)
    context = browser.new_context(locale=lang, viewport=PHONE)
    page = context.new_page()
    page.goto(f"{url}/p/login/{fresh_link(client, smtp, person)}")
    expect(page).to_have_url(f"{url}/p/consent")
    _submit_and_check(page, lang, problems, artifacts_dir, "consent-errors", 422)
    expect(page.locator("#signature-error")).to_be_visible()
    expect(page.locator("#statements-error")).to_be_visible()
    with page.expect_navigation():
        page.click("main button[value=decline]")
    page.screenshot(path=str(artifacts_dir / f"sweep-{lang}-declined.png"), full_page=True)
    problems += check_page(page, lang)
    context.close()
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_pages_of_a_participant_with_answers(live_server, browser, client, smtp, artifacts_dir,
                                             lang):
    url, problems = live_server.url, []
    person = join(client, smtp, f"sweep-{lang.lower()}@example.org", language=lang,
                  timezone="Asia/Tokyo")
    consent(client, person, language=lang)
    listed = client.get("/api/v1/me/surveys", headers=person.headers).json()
    ids = {s["instrument"]: s["id"] for s in listed}
    saved = client.post(f"/api/v1/me/surveys/{ids['who5']}/responses", json={"answers": WHO5},
                        headers=person.headers | {"Idempotency-Key": f"sweep-{lang}-0001"})
    assert saved.status_code == 201, saved.text
    context = browser.new_context(locale=lang, viewport=PHONE)
    page = context.new_page()
    page.goto(f"{url}/p/login/{fresh_link(client, smtp, person)}")
    _looked_at(page, lang, f"{url}/p/surveys/{ids['phq9']}", problems, artifacts_dir, "survey")
    _submit_and_check(page, lang, problems, artifacts_dir, "survey-errors", 422)
    expect(page.locator("fieldset[role=radiogroup][aria-invalid=true]").first).to_be_visible()
    _looked_at(page, lang, f"{url}/p/surveys/{ids['who5']}", problems, artifacts_dir, "saved")
    _looked_at(page, lang, f"{url}/p/data", problems, artifacts_dir, "my-data")
    _looked_at(page, lang, f"{url}/p/settings", problems, artifacts_dir, "settings")
    page.click("main button[value=pause]")
    expect(page.locator("#settings-done")).to_be_visible()
    problems += check_page(page, lang)
    page.fill("#email", f"sweep-new-{lang.lower()}@example.org")
    page.click("#email-h ~ form button[type=submit]")
    message = smtp.wait_for(f"sweep-new-{lang.lower()}@example.org")[-1].body
    link = re.search(r"https?://\S+/p/email/confirm/\S+", message)
    assert link, message
    _looked_at(page, lang, link.group(0), problems, artifacts_dir, "email-confirm")
    _looked_at(page, lang, f"{url}/p/consent/records/1", problems, artifacts_dir,
               "consent-copy")
    _looked_at(page, lang, f"{url}/p/surveys/00000000-0000-0000-0000-000000000000", problems,
               artifacts_dir, "someone-elses-survey", 404)
    context.close()
    assert problems == [], "\n".join(problems)

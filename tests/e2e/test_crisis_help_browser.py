"""Crisis help in Chromium at 390 px, in every language: the crisis page after PHQ-9 item 9 > 0
shows the participant's country's line and emergency number, and the public /help page; both
pass axe-core (serious/critical), do not scroll sideways and show no English interface text."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.e2e.a11y import check_page
from tests.support.flows import fresh_link, joined_and_consented

pytestmark = pytest.mark.browser
BASELINE = {"age_band": "age_25_34", "gender": "woman", "living_situation": "alone",
            "ai_use_since": "year_2024", "ai_personal_use_since": "year_2024",
            "gpt4o_before_retirement": "daily", "gpt4o_after_retirement": "never"}
CASES = [("en", "jp", "0120-279-338", "119"), ("de", "us", "988", "911"),
         ("pt-BR", "pt", "1411", "112"), ("zh-CN", "cn", "12356", "120")]


@pytest.mark.parametrize(("lang", "country", "line", "emergency"), CASES)
def test_crisis_page_and_help_page_in_the_browser(live_server, browser, client, smtp,
                                                  artifacts_dir, lang, country, line,
                                                  emergency):
    person = joined_and_consented(client, smtp, f"crisis-browser-{country}@example.org",
                                  language=lang)
    surveys = {s["instrument"]: s["id"]
               for s in client.get("/api/v1/me/surveys", headers=person.headers).json()}
    answered = client.post(f"/api/v1/me/surveys/{surveys['baseline']}/responses",
                           json={"answers": BASELINE | {"country": country}},
                           headers=person.headers | {"Idempotency-Key": f"base-{country}-01"})
    assert answered.status_code == 201, answered.text
    context = browser.new_context(locale=lang, viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.goto(f"{live_server.url}/p/login/{fresh_link(client, smtp, person)}")
    page.goto(f"{live_server.url}/p/surveys/{surveys['phq9']}")
    for i in range(1, 9):
        page.check(f"input[name=phq9_{i}][value='1']")
    page.check("input[name=phq9_9][value='2']")
    page.click("main button[type=submit]")  # not the header's sign-out button
    expect(page.locator(".crisis")).to_be_visible()
    expect(page.locator("html")).to_have_attribute("lang", lang)
    expect(page.locator(f".crisis a[href='tel:{line.replace('-', '').replace(' ', '')}']")
           ).to_be_visible()
    expect(page.locator(f".crisis a[href='tel:{emergency}']")).to_be_visible()
    page.screenshot(path=str(artifacts_dir / f"crisis-{lang}-{country}.png"), full_page=True)
    problems = check_page(page, lang)

    page.click("a.helpnow")  # the header link, on the crisis page as on every page
    expect(page).to_have_url(f"{live_server.url}/help?lang={lang}")
    expect(page.locator("h2").first).to_contain_text(page.locator(".crisis h2").first
                                                     .inner_text())
    page.screenshot(path=str(artifacts_dir / f"help-{lang}-{country}.png"), full_page=True)
    problems += check_page(page, lang)
    anonymous = browser.new_context(locale=lang, viewport={"width": 390, "height": 844})
    visitor = anonymous.new_page()
    visitor.goto(f"{live_server.url}/join?lang={lang}")
    problems += check_page(visitor, lang)  # the header with the link still fits at 390 px
    visitor.click("a.helpnow")
    expect(visitor.locator("#all-countries")).to_be_visible()
    problems += check_page(visitor, lang)
    anonymous.close()
    context.close()
    assert problems == []

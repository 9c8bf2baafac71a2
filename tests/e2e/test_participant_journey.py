"""A new participant in a real browser: join -> consent -> the whole baseline.

Runs in English and German, with a validation error and a page reload in the middle of a
survey. Screenshots go to test-artifacts/ (or $WELLPANEL_TEST_ARTIFACTS).
"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect
from sqlmodel import select

from app.surveys.models import SurveyInstance, SurveyResponse
from tests.e2e.steps import answer_join_form, fill_visible

pytestmark = pytest.mark.browser
STATEMENTS = ["read_information", "voluntary", "data_use", "adult_confirmed"]




@pytest.mark.parametrize("lang", ["en", "de"])
def test_new_participant_completes_the_baseline(live_server, browser, smtp, session,
                                                artifacts_dir, lang):
    email = f"browser-{lang}@example.org"
    context = browser.new_context(locale=lang, viewport={"width": 390, "height": 844})
    page = context.new_page()
    shot = lambda name: page.screenshot(  # noqa: E731
        path=str(artifacts_dir / f"journey-{lang}-{name}.png"), full_page=True)

    answer_join_form(page, live_server.url, lang, email)
    expect(page.locator("html")).to_have_attribute("lang", lang)
    expect(page.locator("#timezone")).not_to_have_value("")  # filled from the browser
    shot("1-join")
    page.click("main button[type=submit]")
    expect(page.locator("#check-email")).to_be_visible()

    page.goto(smtp.wait_for(email)[-1].link())
    expect(page).to_have_url(f"{live_server.url}/p/consent")
    shot("2-consent")
    page.fill("#signature_name", "Browser Person")
    page.check(f"input[name=statements][value={STATEMENTS[0]}]")
    page.click("button[value=consent]")  # not every statement ticked: refused, explained
    expect(page.locator("[role=alert]").first).to_be_visible()
    for statement in STATEMENTS:
        page.check(f"input[name=statements][value={statement}]")
    page.fill("#signature_name", "Browser Person")
    page.click("button[value=consent]")
    expect(page.get_by_text("Browser Person")).to_be_visible()
    shot("3-copy")
    page.goto(f"{live_server.url}/p")
    survey_links = page.locator("ul.cards a")
    expect(survey_links).to_have_count(9)
    survey_links.first.click()

    # First survey: submit half-empty (errors next to items), reload (draft kept), finish.
    first_item = page.locator(".item").first
    first_item.locator("input").first.check()
    page.click("main button[type=submit]")
    expect(page.locator("#error-summary")).to_be_visible()
    expect(page.locator(".item .error").first).to_be_visible()
    shot("4-errors")
    page.reload()
    expect(page.locator(".item").first.locator("input").first).to_be_checked()
    pages_done = 0
    while page.locator("#survey-form").count() and pages_done < 12:
        fill_visible(page)
        if pages_done == 1:
            shot("5-survey")
        page.click("main button[type=submit]")
        if page.locator(".crisis").count():
            page.click("a.button")
        pages_done += 1
    expect(page.locator("#thanks")).to_be_visible()  # the thank-you page ends the set
    shot("6-done")
    context.close()

    session.rollback()
    statuses = [i.status for i in session.exec(select(SurveyInstance).where(
        SurveyInstance.schedule_entry == "baseline")).all()]
    assert statuses == ["completed"] * 9
    responses = session.exec(select(SurveyResponse)).all()
    assert len(responses) == 9
    assert {r.language for r in responses} == {lang}

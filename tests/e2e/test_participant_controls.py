"""Participant controls in a real browser at phone width: the back button after a submission
shows the saved answers (not the form, not an error), and signing out ends the session."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect
from sqlmodel import func, select

from app.surveys.models import SurveyResponse
from tests.e2e.steps import fill_visible, join_in_browser

pytestmark = pytest.mark.browser




def _no_sideways_scroll(page: Page) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= 390


def test_back_after_submitting_then_sign_out(live_server, browser, smtp, session,
                                             artifacts_dir):
    email = "controls@example.org"
    context = browser.new_context(locale="en", viewport={"width": 390, "height": 844})
    page = context.new_page()
    join_in_browser(page, live_server.url, "en", email)
    page.goto(smtp.wait_for(email)[-1].link())
    for box in page.locator("input[name=statements]").all():
        box.check()
    page.fill("#signature_name", "Controls Person")
    page.click("button[value=consent]")

    page.goto(f"{live_server.url}/p")
    expect(page.locator("#sign-out")).to_be_visible()
    _no_sideways_scroll(page)
    page.locator("ul.cards a").first.click()
    survey_url = page.url
    fill_visible(page)
    page.click("#survey-form button[type=submit]")
    expect(page.locator("#survey-form")).to_be_visible()  # the next questionnaire
    assert page.url != survey_url

    page.go_back()  # the submitted questionnaire again: what was saved, not the form
    expect(page).to_have_url(survey_url)
    expect(page.locator("#answers-saved")).to_be_visible()
    expect(page.locator("#survey-form")).to_have_count(0)
    expect(page.locator("#saved-answers dt").first).to_be_visible()
    expect(page.locator("body")).not_to_contain_text("Idempotency")
    _no_sideways_scroll(page)
    page.screenshot(path=str(artifacts_dir / "controls-saved-answers.png"), full_page=True)
    page.reload()
    expect(page.locator("#answers-saved")).to_be_visible()
    session.rollback()
    assert session.exec(select(func.count()).select_from(SurveyResponse)).one() == 1

    page.click("#sign-out")
    expect(page.locator("#signed-out")).to_be_visible()
    page.screenshot(path=str(artifacts_dir / "controls-signed-out.png"), full_page=True)
    assert not [c for c in context.cookies() if c["name"] == "wp_session"]
    page.go_back()  # the saved page again, now without a session
    expect(page.locator("#answers-saved")).to_have_count(0)
    answer = page.goto(f"{live_server.url}/p")
    assert answer is not None and answer.status == 401
    expect(page.locator("#sign-out")).to_have_count(0)
    context.close()

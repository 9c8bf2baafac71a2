"""The header's language switch in Chromium with JavaScript off, on a phone-sized screen: a
visitor's choice carries over to the next pages and into the sign-up; a signed-in participant's
choice is stored, so every later page (and email) follows it."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect
from sqlmodel import select

from app.participants.models import Contact, Participant

pytestmark = pytest.mark.browser
STATEMENTS = ["read_information", "voluntary", "data_use", "adult_confirmed"]
PHONE = {"width": 390, "height": 844}


def _overflow(page: Page) -> int:
    """CSS pixels the page is wider than the viewport (0: no sideways scrolling)."""
    return page.evaluate("Math.max(document.documentElement.scrollWidth,"
                         " document.body.scrollWidth) - window.innerWidth")


def _switch_to(page: Page, lang: str) -> None:
    page.click(f"header form button[name=language][value='{lang}']")
    expect(page.locator("html")).to_have_attribute("lang", lang)
    assert _overflow(page) <= 0, f"the {lang} page scrolls sideways at 390 px"


def test_the_switch_carries_a_visitors_choice_and_stores_a_participants(
        live_server, browser, smtp, session, artifacts_dir):
    email = "switcher@example.org"
    context = browser.new_context(locale="en", java_script_enabled=False, viewport=PHONE)
    page = context.new_page()
    page.goto(f"{live_server.url}/join")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    _switch_to(page, "de")  # a visitor: remembered in a cookie
    page.screenshot(path=str(artifacts_dir / "language-switch-join-de.png"), full_page=True)
    page.goto(f"{live_server.url}/join")  # a later page, nothing in the address
    expect(page.locator("html")).to_have_attribute("lang", "de")
    page.check("input[name=screening_adult][value=yes]")
    page.check("input[name=screening_uses_ai_chat][value=yes]")
    page.fill("#email", email)
    page.click("main button[type=submit]")
    expect(page.locator("#check-email")).to_be_visible()
    expect(page.locator("html")).to_have_attribute("lang", "de")

    page.goto(smtp.wait_for(email)[-1].link())
    expect(page).to_have_url(f"{live_server.url}/p/consent")
    expect(page.locator("html")).to_have_attribute("lang", "de")  # stored at sign-up
    for statement in STATEMENTS:
        page.check(f"input[name=statements][value={statement}]")
    page.fill("#signature_name", "Sprach Wechsler")
    page.click("button[value=consent]")
    page.goto(f"{live_server.url}/p/settings")
    _switch_to(page, "zh-CN")  # signed in: stored, back on the same page
    expect(page).to_have_url(f"{live_server.url}/p/settings")
    page.screenshot(path=str(artifacts_dir / "language-switch-settings-zh-CN.png"),
                    full_page=True)
    page.goto(f"{live_server.url}/p")
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    context.close()

    session.rollback()
    contact = session.exec(select(Contact).where(Contact.email == email)).one()
    assert session.get(Participant, contact.participant_id).language == "zh-CN"

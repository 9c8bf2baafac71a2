"""The join page's time-zone list in Chromium: the browser's zone is preselected (also when
Chromium reports an old name) and the filter box narrows the list; without JavaScript the plain
list still works and says UTC."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect
from sqlmodel import select

from app.participants.models import Participant

pytestmark = pytest.mark.browser


def _join_page(browser, live_server, **context_args):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 390, "height": 844}, **context_args)
    page = context.new_page()
    page.goto(f"{live_server.url}/join?lang=de")
    return context, page


def test_browser_zone_is_preselected_and_the_filter_narrows(live_server, browser, smtp, session,
                                                            artifacts_dir):
    # Chromium's ICU reports Asia/Kolkata as the old name Asia/Calcutta
    context, page = _join_page(browser, live_server, locale="de-DE", timezone_id="Asia/Kolkata")
    field = page.locator("#timezone")
    expect(field).to_have_value("Asia/Kolkata")
    expect(page.locator("#timezone-filter")).to_be_visible()

    page.fill("#timezone-filter", "berl")
    expect(field.locator("option")).to_have_count(1)
    expect(field).to_have_value("Europe/Berlin")
    expect(page.locator("#timezone-filter-status")).to_have_text("1 passende Zeitzonen")
    page.fill("#timezone-filter", "vereinigte york")  # every word, in any order
    expect(field).to_have_value("America/New_York")
    page.fill("#timezone-filter", "xyzzy")
    expect(page.locator("#timezone-filter-status")).to_contain_text("Keine Zeitzone passt")
    assert field.locator("option").count() > 300  # nothing matched: the whole list stays
    page.fill("#timezone-filter", "")
    page.select_option("#timezone", "America/New_York")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways ({width} px)"
    page.screenshot(path=str(artifacts_dir / "join-timezone-filter-de.png"), full_page=True)

    page.check("input[name=screening_adult][value=yes]")
    page.check("input[name=screening_uses_ai_chat][value=yes]")
    page.fill("#email", "tz-browser@example.org")
    page.click("main button[type=submit]")
    expect(page.locator("#check-email")).to_be_visible()
    context.close()
    session.rollback()
    assert session.exec(select(Participant)).one().timezone == "America/New_York"


def test_without_javascript_the_list_works_and_says_utc(live_server, browser):
    context, page = _join_page(browser, live_server, locale="de-DE", timezone_id="Asia/Tokyo",
                               java_script_enabled=False)
    expect(page.locator("#timezone")).to_have_value("UTC")
    expect(page.locator("#timezone-filter")).to_be_hidden()
    page.select_option("#timezone", "Asia/Tokyo")
    expect(page.locator("#timezone")).to_have_value("Asia/Tokyo")
    context.close()

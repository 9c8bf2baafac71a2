"""The pages under their Content-Security-Policy in a real browser (#13 part 5): Chromium
refuses nothing on the main participant and staff pages (no `securitypolicyviolation` event,
no "Content Security Policy" console error), and the comfort scripts still run: the time-zone
filter, the survey's display conditions (now a data- attribute, not an inline script)."""

from __future__ import annotations

import pytest
from playwright.sync_api import BrowserContext, Page, expect
from sqlmodel import Session

from app.auth import service as auth
from tests.e2e.a11y import csp_violations
from tests.support.flows import consent, fresh_link, join

pytestmark = pytest.mark.browser
PHONE = {"width": 390, "height": 844}
# Runs before the page's own scripts in every document (the driver's, so the CSP allows it).
WATCH = """window.__cspRefusals = [];
document.addEventListener('securitypolicyviolation', (e) => window.__cspRefusals.push(
    e.effectiveDirective + ' refused ' + (e.blockedURI || 'inline') + ' at ' + e.sourceFile +
    ':' + e.lineNumber));"""


def _watched(context: BrowserContext) -> Page:
    context.add_init_script(WATCH)
    return context.new_page()


def _refusals(page: Page) -> list[str]:
    """This document's refusals (events) and every refusal the browser logged on the page."""
    events = page.evaluate("window.__cspRefusals || []")
    return [f"{page.url}: {r}" for r in [*events, *csp_violations(page)]]


def _visit(page: Page, url: str, found: list[str], status: int = 200) -> None:
    answer = page.goto(url)
    assert answer is not None and answer.status == status, (url, answer and answer.status)
    page.wait_for_load_state("load")
    found += _refusals(page)


def test_the_watch_sees_a_refused_inline_script(live_server, browser):
    """The check below can fail: an inline script added to a page is refused and reported."""
    context = browser.new_context()
    page = _watched(context)
    page.goto(f"{live_server.url}/help")
    with pytest.raises(Exception, match="Content Security Policy"):
        page.add_script_tag(content="window.injected = 1")
    assert page.evaluate("typeof window.injected") == "undefined"
    assert any("script-src" in r for r in _refusals(page))
    context.close()


def test_participant_pages_run_under_the_csp(live_server, browser, client, smtp):
    url, found = live_server.url, []
    context = browser.new_context(locale="en", viewport=PHONE)
    page = _watched(context)
    # before sign-in: the join form (time-zone filter shown by timezone.js), its errors
    _visit(page, f"{url}/join?lang=en", found)
    expect(page.locator(".tz-filter")).to_be_visible()
    page.fill("#timezone-filter", "Tokyo")
    expect(page.locator("#timezone-filter-status")).not_to_be_empty()
    with page.expect_navigation():
        page.click("main form button[type=submit]")
    found += _refusals(page)
    _visit(page, f"{url}/help", found)
    _visit(page, f"{url}/p/no-such-page", found, status=404)
    # signed in: home, a questionnaire with display conditions, settings, data, withdrawal
    person = join(client, smtp, "csp-browser@example.org", language="en")
    consent(client, person)
    listed = client.get("/api/v1/me/surveys", headers=person.headers).json()
    usage = next(s["id"] for s in listed if s["instrument"] == "ai_usage")
    page.goto(f"{url}/p/login/{fresh_link(client, smtp, person)}")
    expect(page).to_have_url(f"{url}/p")
    found += _refusals(page)
    _visit(page, f"{url}/p/surveys/{usage}", found)
    follow_up = page.locator("#item-hours_claude")
    expect(follow_up).to_be_hidden()  # survey.js read the conditions and hid it
    page.check("input[name=used_models][value=claude]")
    expect(follow_up).to_be_visible()
    found += _refusals(page)
    for path in ("/p/settings", "/p/data", "/p/consent/records/1", "/p/withdraw"):
        _visit(page, f"{url}{path}", found)
    expect(page.locator(".tz-filter")).to_have_count(0)  # (the withdrawal page has none)
    _visit(page, f"{url}/p/settings", found)
    expect(page.locator(".tz-filter")).to_be_visible()
    # the header's language switch (a form post and a redirect) under form-action 'self'
    with page.expect_navigation():
        page.click("header button[value=de]")
    expect(page.locator("html")).to_have_attribute("lang", "de")
    found += _refusals(page)
    context.close()
    assert found == [], "\n".join(found)


def test_staff_pages_run_under_the_csp(live_server, browser, engine):
    url, found = live_server.url, []
    with Session(engine) as s:
        token = auth.add_staff(s, "csp-admin", "admin")
    context = browser.new_context(locale="en", viewport=PHONE)
    page = _watched(context)
    _visit(page, f"{url}/staff/login", found)
    page.fill("#token", token)
    with page.expect_navigation():
        page.click("main button[type=submit]")
    expect(page).to_have_url(f"{url}/staff")
    found += _refusals(page)
    links = page.eval_on_selector_all("nav.staffnav a", "els => els.map(a => a.href)")
    assert len(links) >= 8, links  # the console and the IRB pages
    for link in links:
        _visit(page, link, found)
    # staff switch language with ?lang= on the same page (a GET form: no CSRF, no /p/language)
    _visit(page, f"{url}/staff/irb/consent-log", found)
    with page.expect_navigation():
        page.click("header button[value=de]")
    expect(page).to_have_url(f"{url}/staff/irb/consent-log?lang=de")
    expect(page.locator("html")).to_have_attribute("lang", "de")
    found += _refusals(page)
    with page.expect_navigation():
        page.click("nav.staffnav button[type=submit]")  # log out (the form once had a style)
    expect(page).to_have_url(f"{url}/staff/login")
    found += _refusals(page)
    context.close()
    assert found == [], "\n".join(found)

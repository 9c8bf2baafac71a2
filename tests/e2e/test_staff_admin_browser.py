"""Staff lifecycle in a real browser at phone width (390 px): an admin adds a member and reads
the token once, enrolls their second factor, revokes them (their open session ends), and cannot
revoke themselves as the last admin; an IRB reviewer logs in with token and TOTP code. Every
page passes axe (serious/critical) and does not scroll sideways. Screenshots in
test-artifacts/."""

from __future__ import annotations

import pyotp
import pytest
from playwright.sync_api import Page, expect

from tests.e2e.a11y import axe_violations, sideways_overflow, widest_elements
from tests.support.staff import add_member

pytestmark = pytest.mark.browser
PHONE = {"width": 390, "height": 844}
CONTEXT = {"viewport": PHONE, "bypass_csp": True}  # axe-core is injected into the page


@pytest.fixture
def settings(settings):  # type: ignore[no-untyped-def]
    """The IRB role must give a TOTP code after its token (admins and researchers need not)."""
    return settings.model_copy(update={"staff_totp_roles": "irb"})


def _checked(page: Page, artifacts_dir, name: str) -> None:  # type: ignore[no-untyped-def]
    page.screenshot(path=str(artifacts_dir / f"staff-admin-{name}.png"), full_page=True)
    assert axe_violations(page) == [], name
    assert sideways_overflow(page) <= 0, (name, widest_elements(page))


def _log_in(page: Page, url: str, token: str) -> None:
    page.goto(f"{url}/staff/login")
    page.fill("#token", token)
    page.click("main button[type=submit]")


def test_admin_adds_enrolls_and_revokes_a_member_and_the_member_logs_in_with_totp(
        live_server, browser, engine, clock, artifacts_dir):
    url = live_server.url
    admin = browser.new_context(**CONTEXT)
    page = admin.new_page()
    _log_in(page, url, add_member(engine, "browser-admin", "admin", now=clock.now))
    expect(page).to_have_url(f"{url}/staff")
    page.click("nav.staffnav a[href='/staff/admin/staff']")
    _checked(page, artifacts_dir, "1-page")

    page.fill("#new-name", "browser-reviewer")
    page.select_option("#new-role", "irb")
    page.click("#add-member")
    token = page.locator("#new-token").inner_text().strip()
    assert len(token) > 30
    _checked(page, artifacts_dir, "2-token-once")
    card = page.locator("section.staff-member", has_text="browser-reviewer")
    expect(card.locator(".second-factor")).to_contain_text("this role needs one")
    card.get_by_role("button", name="Enroll a second factor for browser-reviewer").click()
    uri = page.locator("#totp-uri").inner_text().strip()
    _checked(page, artifacts_dir, "3-totp-once")
    secret = pyotp.parse_uri(uri).secret

    reviewer = browser.new_context(**CONTEXT)
    their = reviewer.new_page()
    _log_in(their, url, token)
    expect(their.locator("#code")).to_be_visible()
    _checked(their, artifacts_dir, "4-code-step")
    their.fill("#code", "000000" if pyotp.TOTP(secret).at(clock.now) != "000000" else "111111")
    their.click("main button[type=submit]")
    expect(their.locator("#code-error")).to_be_visible()
    expect(their.locator("#code")).to_have_attribute("aria-invalid", "true")
    _checked(their, artifacts_dir, "5-code-wrong")
    their.fill("#code", pyotp.TOTP(secret).at(clock.now))
    their.click("main button[type=submit]")
    expect(their).to_have_url(f"{url}/staff")
    their.click("nav.staffnav a[href='/staff/irb/audit']")
    expect(their.locator("#chain-status")).to_contain_text("intact")

    page.goto(f"{url}/staff/admin/staff")
    card = page.locator("section.staff-member", has_text="browser-reviewer")
    card.get_by_role("button", name="Revoke browser-reviewer").click()
    expect(page.locator("#done")).to_contain_text("Revoked browser-reviewer")
    expect(page.locator("section.staff-member", has_text="browser-reviewer")
           ).to_have_attribute("data-status", "revoked")
    their.goto(f"{url}/staff/irb/audit")  # the open session ended with the revocation
    expect(their).to_have_url(f"{url}/staff/login")
    _log_in(their, url, token)
    expect(their.locator("#login-error")).to_be_visible()

    me = page.locator("section.staff-member", has_text="browser-admin (you)")
    me.get_by_role("button", name="Revoke browser-admin").click()
    expect(page.locator("#change-error")).to_contain_text("last active admin")
    _checked(page, artifacts_dir, "6-last-admin")
    admin.close()
    reviewer.close()

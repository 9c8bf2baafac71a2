"""The settings page in a real browser with JavaScript switched off: pause, resume, time zone,
language and a confirmed email change, all with plain forms."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect
from sqlmodel import select

from app.participants.models import Contact, Participant
from tests.e2e.steps import join_in_browser

pytestmark = pytest.mark.browser
STATEMENTS = ["read_information", "voluntary", "data_use", "adult_confirmed"]


def test_settings_without_javascript(live_server, browser, smtp, session, artifacts_dir):
    email, new_email = "settings-old@example.org", "settings-new@example.org"
    context = browser.new_context(locale="en", java_script_enabled=False,
                                  viewport={"width": 390, "height": 844})
    page = context.new_page()
    join_in_browser(page, live_server.url, "en", email)
    page.goto(smtp.wait_for(email)[-1].link())
    for statement in STATEMENTS:
        page.check(f"input[name=statements][value={statement}]")
    page.fill("#signature_name", "Settings Person")
    page.click("button[value=consent]")

    page.goto(f"{live_server.url}/p")
    page.click("#settings-link")
    expect(page.locator("#upcoming li").first).to_be_visible()
    page.click("button[value=pause]")
    expect(page.locator("#settings-done")).to_have_text("Your participation is paused.")
    page.click("button[value=resume]")
    expect(page.locator("button[value=pause]")).to_be_visible()

    page.select_option("#timezone", "America/Sao_Paulo")
    page.select_option("#language", "pt-BR")
    page.click("#prefs-h + form button[type=submit]")
    expect(page.locator("html")).to_have_attribute("lang", "pt-BR")
    expect(page.locator("#upcoming")).to_contain_text("America/Sao_Paulo")
    page.screenshot(path=str(artifacts_dir / "settings-page-pt-BR.png"), full_page=True)

    page.fill("#email", new_email)
    page.click("#email-h ~ form button[type=submit]")
    expect(page.locator("#settings-done")).to_be_visible()
    link = re.search(r"https?://\S+/p/email/confirm/\S+", smtp.wait_for(new_email)[-1].body)
    assert link
    page.goto(link.group(0))
    page.click("main button[type=submit]")
    expect(page.locator("#email-changed")).to_be_visible()
    page.screenshot(path=str(artifacts_dir / "settings-email-changed.png"), full_page=True)
    context.close()

    session.rollback()
    participant = session.exec(select(Participant)).one()
    assert (participant.status, participant.timezone, participant.language) == (
        "active", "America/Sao_Paulo", "pt-BR")
    assert [c.email for c in session.exec(select(Contact)).all()] == [new_email]

"""Staff in a real browser: a researcher handles a safety event and exports the panel, an IRB
reviewer verifies the audit chain and downloads the consent log, and a participant's session
never opens a staff page. Screenshots go to test-artifacts/ (or $WELLPANEL_TEST_ARTIFACTS)."""

from __future__ import annotations

import zipfile

import pytest
from playwright.sync_api import Page, expect
from sqlmodel import Session, select

from app.auth import service as auth
from app.surveys.models import SafetyEvent
from tests.app.export.seed import Seeder
from tests.support.flows import fresh_link, joined_and_consented

pytestmark = pytest.mark.browser
PHQ9 = {f"phq9_{i}": 1 for i in range(1, 10)}
EXPORT_TIMEOUT_MS = 180_000


def _staff_token(engine, name: str, role: str) -> str:  # type: ignore[no-untyped-def]
    with Session(engine) as s:
        return auth.add_staff(s, name, role)


def _log_in(page: Page, url: str, token: str) -> None:
    page.goto(f"{url}/staff/login")
    page.fill("#token", token)
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{url}/staff")


def _risky_participant(client, smtp):  # type: ignore[no-untyped-def]
    """A participant who answers PHQ-9 item 9 above 0, through the participant API."""
    person = joined_and_consented(client, smtp, "browser-risk@example.org")
    listed = client.get("/api/v1/me/surveys", headers=person.headers).json()
    phq9 = next(s["id"] for s in listed if s["instrument"] == "phq9")
    answered = client.post(f"/api/v1/me/surveys/{phq9}/responses",
                           json={"answers": PHQ9 | {"phq9_9": 2}},
                           headers=person.headers | {"Idempotency-Key": "key-00000001"})
    assert answered.status_code in (200, 201)
    return person


def test_researcher_acknowledges_a_safety_event_and_exports(live_server, browser, client, smtp,
                                                            engine, artifacts_dir, tmp_path):
    _risky_participant(client, smtp)
    seeder = Seeder(engine)
    seeder.populate(14, 3, seed=11)
    seeder.flush()
    token = _staff_token(engine, "browser-researcher", "researcher")
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    _log_in(page, live_server.url, token)
    expect(page.locator("nav.staffnav a[href='/staff/irb/audit']")).to_have_count(0)

    page.click("nav.staffnav a[href='/staff/researcher/safety']")
    event = page.locator("section.safety-event").first
    expect(event).to_contain_text("suicidal_ideation")
    event.locator("textarea").fill("Called the participant; resources given.")
    page.screenshot(path=str(artifacts_dir / "staff-1-safety.png"), full_page=True)
    event.locator("button[type=submit]").click()
    expect(page.locator("#ack-done")).to_be_visible()
    expect(page.locator("#queue-empty")).to_be_visible()
    with Session(engine) as s:
        stored = s.exec(select(SafetyEvent)).one()
    assert stored.note == "Called the participant; resources given."

    page.click("nav.staffnav a[href='/staff/researcher/exports']")
    page.check("input[name=profile][value=strict]")
    page.select_option("#format", "csv")
    page.click("#start-export")
    job = page.locator("section.export-job").first
    # The page reloads itself (Refresh header) until the export is done.
    expect(job).to_have_attribute("data-status", "done", timeout=EXPORT_TIMEOUT_MS)
    expect(job.locator(".audit-entry")).to_contain_text("export.panel")
    page.screenshot(path=str(artifacts_dir / "staff-2-export.png"), full_page=True)
    with page.expect_download() as download_info:
        job.locator("a.download").click()
    target = tmp_path / "export.zip"
    download_info.value.save_as(target)
    assert "datapackage.json" in zipfile.ZipFile(target).namelist()
    context.close()


def test_irb_reviewer_verifies_the_chain_and_downloads_the_consent_log(
        live_server, browser, client, smtp, engine, artifacts_dir, tmp_path):
    joined_and_consented(client, smtp, "browser-consented@example.org")
    token = _staff_token(engine, "browser-irb", "irb")
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    _log_in(page, live_server.url, token)
    expect(page.locator("nav.staffnav a[href='/staff/researcher/safety']")).to_have_count(0)
    page.click("nav.staffnav a[href='/staff/irb/audit']")
    expect(page.locator("#chain-status")).to_contain_text("intact")
    page.screenshot(path=str(artifacts_dir / "staff-3-audit.png"), full_page=True)
    page.click("nav.staffnav a[href='/staff/irb/consent-log']")
    with page.expect_download() as download_info:
        page.click("a[href^='/staff/irb/consent-log.csv']")
    target = tmp_path / "consent-log.csv"
    download_info.value.save_as(target)
    text = target.read_text("utf-8")
    assert "consent" in text and "browser-consented@example.org" not in text
    # The researcher's pages are closed to this role, with a clear page.
    response = page.goto(f"{live_server.url}/staff/researcher/safety")
    assert response is not None and response.status == 403
    expect(page.locator("[role=alert]")).to_contain_text("irb role may not open this page")
    page.goto(f"{live_server.url}/staff")
    page.click("nav.staffnav button[type=submit]")  # log out
    expect(page).to_have_url(f"{live_server.url}/staff/login")
    page.goto(f"{live_server.url}/staff/irb/audit")
    expect(page).to_have_url(f"{live_server.url}/staff/login")
    context.close()


def test_a_participant_session_never_opens_a_staff_page(live_server, browser, client, smtp):
    person = joined_and_consented(client, smtp, "browser-nosy@example.org")
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{live_server.url}/p/login/{fresh_link(client, smtp, person)}")
    expect(page).to_have_url(f"{live_server.url}/p")
    for path in ("/staff", "/staff/researcher/safety", "/staff/researcher/exports",
                 "/staff/irb/audit", "/staff/irb/consent-log.csv"):
        page.goto(f"{live_server.url}{path}")
        expect(page).to_have_url(f"{live_server.url}/staff/login")
    context.close()

"""The safety queue in a real browser at phone width (390 px): a member of the safety role reads
an event's details, reveals the participant's address with a reason, and acknowledges it; every
page passes axe (serious/critical) and does not scroll sideways. Screenshots in
test-artifacts/."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect
from sqlmodel import Session

from app.auth import service as auth
from tests.e2e.a11y import axe_violations, csp_violations, sideways_overflow, widest_elements
from tests.support.flows import joined_and_consented

pytestmark = pytest.mark.browser
PHONE = {"width": 390, "height": 844}
CONTEXT = {"viewport": PHONE}  # under the pages' real CSP (axe is run by the driver)
RISKY = {f"phq9_{i}": 1 for i in range(1, 9)} | {"phq9_9": 2}


def _checked(page: Page, artifacts_dir, name: str) -> None:  # type: ignore[no-untyped-def]
    page.screenshot(path=str(artifacts_dir / f"safety-queue-{name}.png"), full_page=True)
    assert axe_violations(page) == [], name
    assert sideways_overflow(page) <= 0, (name, widest_elements(page))
    assert csp_violations(page) == [], name


def test_the_safety_role_reveals_and_acknowledges_at_phone_width(
        live_server, browser, client, smtp, engine, clock, artifacts_dir):
    email = "browser-safety@example.org"
    person = joined_and_consented(client, smtp, email)
    listed = client.get("/api/v1/me/surveys", headers=person.headers).json()
    phq9 = next(s["id"] for s in listed if s["instrument"] == "phq9")
    assert client.post(f"/api/v1/me/surveys/{phq9}/responses", json={"answers": RISKY},
                       headers=person.headers | {"Idempotency-Key": "browser-0001"}
                       ).status_code == 201
    clock.advance(minutes=42)
    with Session(engine) as s:
        token = auth.add_staff(s, "browser-clinician", "safety", now=clock())
    page = browser.new_context(**CONTEXT).new_page()
    page.goto(f"{live_server.url}/staff/login")
    page.fill("#token", token)
    page.click("main button[type=submit]")
    expect(page).to_have_url(f"{live_server.url}/staff")
    page.click("nav.staffnav a[href='/staff/researcher/safety']")
    event = page.locator("section.safety-event").first
    expect(event.locator("[data-field=trigger]")).to_contain_text("phq9_9 = 2")
    expect(event.locator("[data-field=score]")).to_contain_text("Moderate (10-14)")
    expect(event.locator("[data-field=waiting]")).to_contain_text("42 minutes")
    expect(page.locator("#placeholder-warning")).to_be_visible()
    _checked(page, artifacts_dir, "1-queue")

    event.get_by_label("Reason to see the participant's email address").fill(
        "Follow-up call per the safety protocol")
    event.get_by_role("button", name="Reveal contact").click()
    expect(page.locator("section.safety-event").first.locator(".shown-once")).to_contain_text(
        email)
    _checked(page, artifacts_dir, "2-contact")

    event = page.locator("section.safety-event").first
    event.get_by_label("What was done").fill("Phoned; safety plan agreed.")
    event.get_by_role("button", name="Acknowledge").click()
    expect(page.locator("#ack-done")).to_be_visible()
    expect(page.locator("#acknowledged")).to_contain_text("browser-clinician")
    assert email not in page.content()
    _checked(page, artifacts_dir, "3-acknowledged")

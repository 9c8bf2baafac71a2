"""The IRB reads the ledger in a real browser at phone width (390 px): the entries, a filter by
participant pseudonym and action, the next page, the CSV download, and the audit page with the
checkpoints and the public key. Every page passes axe (serious/critical) and does not scroll
sideways. Screenshots in test-artifacts/."""

from __future__ import annotations

import csv
import io
import re

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.a11y import axe_violations, sideways_overflow, widest_elements
from tests.support.flows import joined_and_consented
from tests.support.staff import add_member

pytestmark = pytest.mark.browser
PHONE = {"width": 390, "height": 844}
CONTEXT = {"viewport": PHONE, "bypass_csp": True}  # axe-core is injected into the page


def _checked(page: Page, artifacts_dir, name: str) -> None:  # type: ignore[no-untyped-def]
    page.screenshot(path=str(artifacts_dir / f"ledger-{name}.png"), full_page=True)
    assert axe_violations(page) == [], name
    assert sideways_overflow(page) <= 0, (name, widest_elements(page))


def test_the_irb_reads_filters_pages_and_downloads_the_ledger(live_server, browser, engine,
                                                              client, smtp, clock,
                                                              artifacts_dir):
    for i in range(3):
        joined_and_consented(client, smtp, f"ledger-browser-{i}@example.org")
        clock.advance(minutes=5)
    url = live_server.url
    context = browser.new_context(**CONTEXT, accept_downloads=True)
    page = context.new_page()
    page.goto(f"{url}/staff/login")
    page.fill("#token", add_member(engine, "ledger-irb", "irb", now=clock.now))
    page.click("main button[type=submit]")
    expect(page).to_have_url(f"{url}/staff")
    page.click("nav.staffnav a[href='/staff/irb/ledger']")
    expect(page.locator("table")).to_contain_text("consent.sign")
    assert "@example.org" not in page.content()
    _checked(page, artifacts_dir, "1-entries")

    pseudonym = re.search(r"participant:([0-9a-f]{16})", page.content()).group(1)  # type: ignore[union-attr]
    page.fill("#pseudonym", pseudonym)
    page.fill("#action", "consent.")
    page.click("form.filters button[type=submit]")
    rows = page.locator("tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(f"participant:{pseudonym}")
    _checked(page, artifacts_dir, "2-filtered")

    with page.expect_download() as download:
        page.click("a[href^='/staff/irb/ledger.csv']")
    text = open(download.value.path(), encoding="utf-8").read()  # noqa: SIM115
    found = list(csv.DictReader(io.StringIO(text)))
    assert [r["action"] for r in found] == ["consent.sign"]
    assert found[0]["actor"] == f"participant:{pseudonym}"

    page.fill("#pseudonym", "not-a-pseudonym")
    page.click("form.filters button[type=submit]")
    expect(page.locator("#pseudonym")).to_have_attribute("aria-invalid", "true")
    _checked(page, artifacts_dir, "3-unknown-pseudonym")

    page.goto(f"{url}/staff/irb/audit")
    expect(page.locator("#chain-status")).to_contain_text("intact")
    expect(page.locator(".public-key")).to_contain_text("BEGIN PUBLIC KEY")
    _checked(page, artifacts_dir, "4-audit")
    context.close()

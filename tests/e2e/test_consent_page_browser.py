"""The consent page and the signed copy in Chromium at 390 px, in all four languages: axe-core
finds no serious or critical violation, nothing scrolls sideways, the scrolling document can be
reached with the keyboard, and the PDF copy downloads."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect

from tests.e2e.a11y import check_page
from tests.e2e.steps import join_in_browser
from tests.support.flows import STATEMENTS

pytestmark = pytest.mark.browser
SIGNATURES = {"en": "Alex Example", "de": "Jürgen Groß", "pt-BR": "João", "zh-CN": "张伟"}


@pytest.mark.parametrize("lang", list(SIGNATURES))
def test_consent_page_and_copy_in_a_phone_browser(live_server, browser, smtp, artifacts_dir,
                                                  lang):
    email = f"consent-page-{lang.lower()}@example.org"
    context = browser.new_context(locale=lang, viewport={"width": 390, "height": 844},
                                  accept_downloads=True)
    page = context.new_page()
    join_in_browser(page, live_server.url, lang, email)
    page.goto(smtp.wait_for(email)[-1].link())
    expect(page).to_have_url(f"{live_server.url}/p/consent")

    document = page.locator("article.document")
    expect(document).to_have_attribute("lang", lang)
    document.focus()  # the scrolling box takes keyboard focus, so arrow keys scroll it
    assert page.evaluate("document.activeElement.classList.contains('document')")
    page.keyboard.press("PageDown")
    # Scrolling may be animated: wait for the box to have moved (fails after 5 s if it never).
    # Polled from here: wait_for_function evaluates a string in the page, which the CSP refuses.
    deadline = time.monotonic() + 5
    while page.evaluate("document.querySelector('article.document').scrollTop") <= 0:
        assert time.monotonic() < deadline, "the document box did not scroll"
        page.wait_for_timeout(50)
    page.screenshot(path=str(artifacts_dir / f"consent-page-{lang}.png"), full_page=True)
    assert check_page(page, lang) == []

    page.goto(f"{live_server.url}/p/consent?doc=xx")
    expect(page.locator("#doc-language-note")).to_be_visible()
    assert check_page(page, lang) == []

    page.fill("#signature_name", SIGNATURES[lang])
    for statement in STATEMENTS:
        page.check(f"input[name=statements][value={statement}]")
    page.click("button[value=consent]")
    expect(page.locator("#language-version")).to_be_visible()
    assert check_page(page, lang) == []
    with page.expect_download() as download:
        page.click("a[href$='copy.pdf']")
    assert download.value.suggested_filename.endswith(".pdf")
    context.close()

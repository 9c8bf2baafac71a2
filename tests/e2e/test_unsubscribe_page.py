"""The unsubscribe page (#15 part 4) in Chromium at phone width, without JavaScript, in every
language: axe-core finds nothing serious, nothing scrolls sideways, no English on other
languages' pages, and choosing works with the page's own form."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect
from sqlmodel import Session

from app.notify import unsubscribe
from app.notify.models import MailContact
from app.participants.models import Participant
from tests.e2e.a11y import check_page
from tests.support.factory import consented_participants

pytestmark = pytest.mark.browser
LANGUAGES = ("en", "de", "pt-BR", "zh-CN")


@pytest.mark.parametrize("lang", LANGUAGES)
def test_unsubscribe_page_in_a_phone_browser_without_javascript(
        live_server, browser, session, engine, clock, artifacts_dir, lang):  # type: ignore[no-untyped-def]
    [person] = consented_participants(session, 1, now=clock(), prefix=f"unsub-e2e-{lang}-")
    person.language = lang
    session.add(person)
    link = unsubscribe.link_for(session, live_server.app.state.settings.secret_key,
                                live_server.url, person.id, clock())
    session.commit()
    context = browser.new_context(viewport={"width": 390, "height": 844}, locale=lang,
                                  java_script_enabled=False)
    page = context.new_page()
    page.goto(f"{live_server.url}{urlsplit(link).path}")
    expect(page.locator("html")).to_have_attribute("lang", lang)
    expect(page.locator("input[value=stop]")).to_be_checked()
    expect(page.locator("#withdraw-link")).to_be_visible()
    context_js = browser.new_context(viewport={"width": 390, "height": 844}, locale=lang)
    checked = context_js.new_page()  # axe-core runs as a script: a second, scripted view
    checked.goto(page.url)
    assert check_page(checked, lang) == []
    checked.screenshot(path=str(artifacts_dir / f"unsubscribe-{lang}.png"), full_page=True)
    context_js.close()
    page.check("input[value=pause]")
    page.click("button[type=submit]")
    expect(page.locator("#unsubscribe-done")).to_be_visible()
    context.close()
    with Session(engine) as s:
        assert s.get(Participant, person.id).status == "paused"  # type: ignore[union-attr]
        assert s.get(MailContact, person.id).one_click == "pause"  # type: ignore[union-attr]

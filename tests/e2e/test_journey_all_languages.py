"""A new participant in each offered language, on a phone-sized screen in Chromium, from join
to withdrawal: join -> consent (and its PDF) -> the whole baseline -> thank-you -> settings ->
sign out -> a new link -> withdraw. Each person lives in their own time zone (the browser's,
which the join page picks up) and country; the Chinese-speaking one in mainland China answers
PHQ-9 item 9 above 0 and must see China's line and emergency number. Every page is checked on
the way: no server error, no serious or critical axe-core violation, no sideways scrolling at
390 px, no English interface text on a page in another language. Screenshots go to
test-artifacts/ (or $WELLPANEL_TEST_ARTIFACTS).
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field

import pytest
from playwright.sync_api import Page, Response, expect
from pypdf import PdfReader
from sqlmodel import select

from app.surveys.models import SurveyInstance, SurveyResponse
from tests.e2e.a11y import check_page
from tests.e2e.steps import answer_join_form, fill_visible

pytestmark = pytest.mark.browser
LANGUAGES = ["en", "de", "pt-BR", "zh-CN"]
STATEMENTS = ["read_information", "voluntary", "data_use", "adult_confirmed"]
SIGNATURES = {"en": "Alex Example", "de": "Jürgen Groß", "pt-BR": "João Conceição",
              "zh-CN": "张伟"}
# language -> (browser time zone, baseline country, (crisis line, emergency number) or None)
PERSONAS = {"en": ("America/New_York", "us", None),
            "de": ("Europe/Berlin", "de", None),
            "pt-BR": ("America/Sao_Paulo", "br", None),
            "zh-CN": ("Asia/Shanghai", "cn", ("12356", "120"))}
PHONE = {"width": 390, "height": 844}


@dataclass
class Walk:
    """One participant's browser walk: checks each page and keeps screenshots."""

    page: Page
    lang: str
    artifacts: object
    problems: list[str] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)

    def check(self, name: str) -> None:
        self.seen.append(name)
        self.page.screenshot(
            path=str(self.artifacts / f"journey-{self.lang}-{len(self.seen):02d}-{name}.png"),  # type: ignore[operator]
            full_page=True)
        self.problems += check_page(self.page, self.lang)


def _no_server_errors(page: Page, seen: list[str]) -> None:
    def record(response: Response) -> None:
        if response.status >= 500:
            seen.append(f"{response.status} {response.url}")
    page.on("response", record)




def _join(walk: Walk, url: str, email: str, again: bool = False) -> None:
    page = walk.page
    answer_join_form(page, url, walk.lang, email)
    expect(page.locator("html")).to_have_attribute("lang", walk.lang)
    if not again:
        walk.check("join")
    page.click("main form button[type=submit]")
    expect(page.locator("#check-email")).to_be_visible()
    if not again:
        walk.check("check-email")


def _consent(walk: Walk, url: str, link: str) -> None:
    page = walk.page
    page.goto(link)
    expect(page).to_have_url(f"{url}/p/consent")
    expect(page.locator("article.document")).to_have_attribute("lang", walk.lang)
    walk.check("consent")
    for statement in STATEMENTS:
        page.check(f"input[name=statements][value={statement}]")
    page.fill("#signature_name", SIGNATURES[walk.lang])
    page.click("button[value=consent]")
    expect(page.get_by_text(SIGNATURES[walk.lang]).first).to_be_visible()
    walk.check("consent-copy")
    href = page.locator("a[href$='copy.pdf']").first.get_attribute("href") or ""
    pdf = page.request.get(url + href)
    assert pdf.ok and pdf.body().startswith(b"%PDF")
    text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.body())).pages)
    assert SIGNATURES[walk.lang] in text, f"signature missing from the {walk.lang} PDF"


def _answer_one(walk: Walk, country: str, crisis: tuple[str, str] | None) -> None:
    page = walk.page
    fill_visible(page)
    if page.locator("input[name=country]").count():
        page.check(f"input[name=country][value={country}]")
    if crisis and page.locator("input[name=phq9_9]").count():
        page.check("input[name=phq9_9][value='1']")
    page.click("#survey-form button[type=submit]")
    if crisis and page.locator(".crisis").count():
        line, emergency = crisis
        expect(page.locator(f".crisis a[href='tel:{line}']")).to_be_visible()
        expect(page.locator(f".crisis a[href='tel:{emergency}']")).to_be_visible()
        walk.check("crisis")
        page.click("main a.button")


def _errors_then_draft_kept(walk: Walk) -> None:
    """Half an answer sent: errors beside the items; a reload keeps the draft (survey.js)."""
    page = walk.page
    page.locator(".item").first.locator("input").first.check()
    page.click("#survey-form button[type=submit]")
    expect(page.locator("#error-summary")).to_be_visible()
    expect(page.locator(".item .error").first).to_be_visible()
    walk.check("survey-errors")
    page.reload()
    expect(page.locator(".item").first.locator("input").first).to_be_checked()


def _baseline(walk: Walk, url: str, zone: str, country: str,
              crisis: tuple[str, str] | None) -> None:
    page = walk.page
    page.goto(f"{url}/p")
    expect(page.locator("ul.cards").first).to_contain_text(zone)  # times in their own zone
    walk.check("home")
    links = page.locator("ul.cards a")
    expect(links.first).to_be_visible()
    links.first.click()
    walk.check("survey-first")
    _errors_then_draft_kept(walk)
    done = 0
    while page.locator("#survey-form").count() and done < 12:
        _answer_one(walk, country, crisis)
        done += 1
    assert done == 9, f"expected 9 baseline questionnaires, answered {done}"
    assert ("crisis" in walk.seen) == (crisis is not None)
    expect(page.locator("#thanks")).to_be_visible()
    expect(page.locator("#next-date")).to_contain_text(zone)
    walk.check("thank-you")


def _sign_out_and_back_in(walk: Walk, url: str, smtp, email: str) -> None:  # type: ignore[no-untyped-def]
    page = walk.page
    page.click("#sign-out")
    expect(page.locator("#signed-out")).to_be_visible()
    walk.check("signed-out")
    response = page.goto(f"{url}/p")
    assert response is not None and response.status == 401
    walk.check("no-session")
    old_links = _login_links(smtp, email)
    _join(walk, url, email, again=True)  # the same address: a new link, no second person
    page.goto(_new_login_link(smtp, email, old_links))
    expect(page).to_have_url(f"{url}/p")


def _login_links(smtp, email: str) -> set[str]:  # type: ignore[no-untyped-def]
    return {m.link() for m in smtp.to(email) if "/p/login/" in m.body}


def _new_login_link(smtp, email: str, old: set[str], timeout: float = 10.0) -> str:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (new := _login_links(smtp, email) - old):
        assert time.monotonic() < deadline, f"no new link to {email}"
        time.sleep(0.05)
    return new.pop()


def _stored_once_in_their_language(session, lang: str) -> None:  # type: ignore[no-untyped-def]
    """The nine baseline answers, each stored once, in the language they were given in."""
    session.rollback()
    statuses = [i.status for i in session.exec(select(SurveyInstance).where(
        SurveyInstance.schedule_entry == "baseline")).all()]
    assert statuses == ["completed"] * 9
    responses = session.exec(select(SurveyResponse)).all()
    assert len(responses) == 9 and {r.language for r in responses} == {lang}


@pytest.mark.parametrize("lang", LANGUAGES)
def test_whole_journey_in_each_language(live_server, browser, smtp, session, artifacts_dir,
                                        lang):
    url, email = live_server.url, f"journey-{lang.lower()}@example.org"
    zone, country, crisis = PERSONAS[lang]
    context = browser.new_context(locale=lang, timezone_id=zone, viewport=PHONE,
                                  accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    _no_server_errors(page, errors)
    walk = Walk(page, lang, artifacts_dir)
    for old in artifacts_dir.glob(f"journey-{lang}-*.png"):
        old.unlink()  # only this run's screenshots

    _join(walk, url, email)
    _consent(walk, url, _new_login_link(smtp, email, set()))
    _baseline(walk, url, zone, country, crisis)

    page.goto(f"{url}/p/settings")
    expect(page.locator("#timezone")).to_have_value(zone)  # picked up from the browser
    walk.check("settings")
    _sign_out_and_back_in(walk, url, smtp, email)
    page.goto(f"{url}/p/withdraw")
    walk.check("withdraw")
    page.check("input[name=scope][value=stop_contact]")
    page.click("main form button[type=submit]")
    walk.check("withdraw-confirm")
    page.click("main form button[type=submit]")
    walk.check("withdrawn")
    context.close()
    assert errors == [], "server errors:\n" + "\n".join(errors)
    _stored_once_in_their_language(session, lang)
    assert walk.problems == [], "\n".join(walk.problems)

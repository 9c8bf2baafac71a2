"""The header's language switch stores the language (signed in) or remembers it (a visitor's
cookie); bad language input is refused or ignored, never stored, never a 500; the withdrawal
sentence is in the participant's language."""

from __future__ import annotations

import html

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from app.audit.models import AuditEvent
from app.i18n import translator
from app.participants.models import Contact, Participant
from tests.support.flows import STUDY
from tests.support.pages import csrf_of, fresh_address, join_form, signed_in_browser

FORGED = ["xx", "../../etc/passwd", "<script>alert(1)</script>", "d" * 3000, "EN", ""]


def _participant(session, email: str) -> Participant:  # type: ignore[no-untyped-def]
    session.rollback()
    contact = session.exec(select(Contact).where(Contact.email == email)).one()
    return session.get(Participant, contact.participant_id)


def _switch(web: TestClient, language: str, next_page: str = "/p"):  # type: ignore[no-untyped-def]
    return web.post("/p/language", data={"csrf_token": csrf_of(web.get("/help")),
                                         "language": language, "next": next_page},
                    follow_redirects=False)


def _lang_of(response) -> str:  # type: ignore[no-untyped-def]
    return response.text.split('<html lang="', 1)[1].split('"', 1)[0]


def test_the_switch_stores_a_participants_language(app, smtp, session):
    email = fresh_address("switch")
    web = signed_in_browser(app, smtp, "en", email=email)
    settings_page = web.get("/p/settings")
    assert 'action="/p/language"' in settings_page.text
    assert 'name="next" value="/p/settings"' in settings_page.text
    assert '<button name="language" value="zh-CN" lang="zh-CN">' in settings_page.text

    moved = _switch(web, "zh-CN", "/p/settings")
    assert moved.status_code == 303 and moved.headers["location"] == "/p/settings"
    assert _participant(session, email).language == "zh-CN"
    events = session.exec(select(AuditEvent).where(AuditEvent.action == "participant.settings")
                          ).all()
    assert [(e.old_value["language"], e.new_value["language"]) for e in events] == [
        ("en", "zh-CN")]
    # every later page follows, whatever the browser says
    web.headers["Accept-Language"] = "de"
    for path in ("/p/settings", "/p", "/p/withdraw"):
        page = web.get(path)
        assert page.status_code == 200 and _lang_of(page) == "zh-CN", path
    # an explicit ?lang= does not restyle the page either: the stored language is the one
    assert _lang_of(web.get("/p/settings?lang=de")) == "zh-CN"
    assert _participant(session, email).language == "zh-CN"


def test_the_switch_needs_its_csrf_token_and_an_offered_language(app, smtp, session):
    email = fresh_address("switch-bad")
    web = signed_in_browser(app, smtp, "de", email=email)
    refused = web.post("/p/language", data={"language": "en", "next": "/p"})
    assert refused.status_code == 403 and _lang_of(refused) == "de"
    for bad in [*FORGED, "ja", "de ", "de\r\nSet-Cookie: a=b"]:  # ja: named, not offered
        answer = _switch(web, bad)
        assert answer.status_code == 422, bad
        assert _lang_of(answer) == "de"
        assert translator("de")("error.codes.unsupported_language") in html.unescape(answer.text)
        assert "<script>alert" not in answer.text and "etc/passwd" not in answer.text
    assert _participant(session, email).language == "de"
    audit = session.exec(select(AuditEvent).where(AuditEvent.action == "participant.settings")
                         ).all()
    assert audit == []


@pytest.mark.parametrize(("wanted", "lands"), [
    ("/p/settings?lang=en&x=1", "/p/settings?x=1"),  # its ?lang= would override the choice
    ("/p/withdraw", "/p/withdraw"),
    ("https://evil.example/p", "/p"),
    ("//evil.example/p", "/p"),
    ("/\\evil.example/p", "/p"),
    ("javascript:alert(1)", "/p"),
    ("http:/p", "/p"),
    ("/p/settings\r\nLocation: https://evil.example", "/p"),
    ("/p/withdraw/confirm", "/p"),  # answers POST only: the overview instead of a 405
    ("/" + "a" * 3000, "/p"),
    ("", "/p"),
])
def test_the_switch_returns_to_a_page_of_this_site_only(app, smtp, wanted, lands):
    web = signed_in_browser(app, smtp, "en", consented=False)
    answer = _switch(web, "pt-BR", wanted)
    assert answer.status_code == 303 and answer.headers["location"] == lands


def test_a_visitors_choice_is_remembered_and_used_by_the_join_form(app, smtp, session):
    web = TestClient(app, headers={"Accept-Language": "en"})
    assert _lang_of(web.get(f"/join/{STUDY}")) == "en"
    chosen = _switch(web, "zh-CN", f"/join/{STUDY}?lang=en")
    assert chosen.status_code == 303 and chosen.headers["location"] == f"/join/{STUDY}"
    cookie = chosen.headers["set-cookie"]
    assert cookie.startswith("wp_lang=zh-CN;") and "samesite=lax" in cookie.lower()
    assert "httponly" in cookie.lower()
    for path in (f"/join/{STUDY}", "/p/no-such-page"):  # later pages, even an error page
        assert _lang_of(web.get(path)) == "zh-CN", path
    email = fresh_address("visitor")
    sent = join_form(web, email)  # no ?lang=, no lang field: the cookie decides
    assert sent.status_code == 200 and _lang_of(sent) == "zh-CN"
    assert _participant(session, email).language == "zh-CN"
    message = smtp.wait_for(email)[-1]
    assert message.message["Content-Language"] == "zh-CN"


def test_a_shared_join_link_with_lang_keeps_it(app):
    web = TestClient(app, headers={"Accept-Language": "en"})
    page = web.get("/join?lang=pt-BR")
    assert page.status_code == 200 and _lang_of(page) == "pt-BR"
    assert web.cookies.get("wp_lang") == "pt-BR"
    assert _lang_of(web.get(f"/join/{STUDY}")) == "pt-BR"


@pytest.mark.parametrize("forged", FORGED)
def test_a_forged_language_cookie_is_ignored_and_dropped(app, smtp, session, forged):
    web = TestClient(app, headers={"Accept-Language": "de-AT,de;q=0.9"})
    web.cookies.set("wp_lang", forged)
    page = web.get(f"/join/{STUDY}")
    assert page.status_code == 200 and _lang_of(page) == "de"
    if forged:
        assert 'wp_lang=""' in page.headers["set-cookie"]  # deleted, not kept
    assert "<script>alert" not in page.text and "etc/passwd" not in page.text
    email = fresh_address("forged")
    web.cookies.set("wp_lang", forged)
    sent = join_form(web, email)
    assert sent.status_code == 200
    assert _participant(session, email).language == "de"


@pytest.mark.parametrize("asked", ["xx", "../en", "<b>de</b>", "ja"])
def test_a_language_not_offered_in_the_address_falls_back(app, smtp, session, asked):
    visitor = TestClient(app, headers={"Accept-Language": "pt-BR"})
    page = visitor.get(f"/join/{STUDY}", params={"lang": asked})
    assert page.status_code == 200 and _lang_of(page) == "pt-BR"
    assert "wp_lang" not in visitor.cookies
    email = fresh_address("asked")
    web = signed_in_browser(app, smtp, "zh-CN", email=email)
    for path in ("/p", "/p/settings", "/p/no-such-page"):
        answer = web.get(path, params={"lang": asked})
        assert answer.status_code in (200, 404) and _lang_of(answer) == "zh-CN"
        assert "<b>de</b>" not in answer.text
    assert _participant(session, email).language == "zh-CN"


@pytest.mark.parametrize(("lang", "scope"), [("zh-CN", "stop_contact"), ("de", "delete_data"),
                                             ("pt-BR", "stop_contact")])
def test_the_withdrawal_sentence_is_in_the_participants_language(app, smtp, session, lang,
                                                                 scope):
    web = signed_in_browser(app, smtp, lang)
    csrf = csrf_of(web.get("/p/withdraw"))
    step = web.post("/p/withdraw", data={"csrf_token": csrf, "scope": scope})
    ids = {name: step.text.split(f'name="{name}" value="', 1)[1].split('"', 1)[0]
           for name in ("withdrawal_id", "confirm_token")}
    done = web.post("/p/withdraw/confirm", data={"csrf_token": csrf, **ids})
    assert done.status_code == 200 and _lang_of(done) == lang
    from app.consent.models import Withdrawal

    session.rollback()
    withdrawal = session.get(Withdrawal, int(ids["withdrawal_id"]))
    outcome = ("kept" if scope == "stop_contact" else
               "erased" if withdrawal.data_deleted else "not_erased")
    text = html.unescape(done.text)
    assert translator(lang)(f"withdrawn.note_{outcome}") in text
    assert withdrawal.outcome_note and withdrawal.outcome_note not in text  # the API's English

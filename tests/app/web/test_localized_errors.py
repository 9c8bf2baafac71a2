"""Error pages as a participant sees them: in their stored language, with a text chosen by the
error's code, never the server's English message; the JSON API keeps its English body."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from app.config import PROJECT_ROOT, SUPPORTED_LANGUAGES, Settings
from app.core.errors import _HTTP_CODES
from app.i18n import catalog, translator
from app.main import create_app
from app.surveys.models import SurveyInstance
from tests.support.flows import STATEMENTS
from tests.support.pages import csrf_of, signed_in_browser

GENEROUS = "1000/minute"


def _other(lang: str) -> str:
    """A language that is not `lang`, for the browser's own settings."""
    return "de" if lang != "de" else "pt-BR"


def _signed_in(app, smtp, lang: str, *, consented: bool = True) -> TestClient:  # type: ignore[no-untyped-def]
    """A browser that joined in `lang` and opened its link; then its own settings (Accept-Language
    and the language cookie) are set to another language, so only the stored one can win."""
    web = signed_in_browser(app, smtp, lang, consented=consented)
    web.headers["Accept-Language"] = _other(lang)
    web.cookies.set("wp_lang", _other(lang))
    return web


def _assert_error_page(response, lang: str, code: str, status: int, english: str) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text[:500]
    assert "text/html" in response.headers["content-type"]
    text = html.unescape(response.text)
    assert f'<html lang="{lang}">' in text
    assert f'data-code="{code}"' in text
    expected = translator(lang)(f"error.codes.{code}", minutes=1)
    assert expected in text, f"{code}: localized text missing on the {lang} page"
    if english not in expected:  # (the English text may say the same, in English)
        assert english not in text, f"{code}: the server's English message leaked"


@pytest.mark.parametrize("lang", SUPPORTED_LANGUAGES)
def test_each_error_a_participant_can_meet_is_in_their_language(app, smtp, session, lang):
    _signed_in(app, smtp, "en")
    session.rollback()
    stranger_instances = set(session.exec(select(SurveyInstance.id)).all())
    web = _signed_in(app, smtp, lang)
    session.rollback()
    mine = set(session.exec(select(SurveyInstance.id)).all()) - stranger_instances
    theirs = next(iter(stranger_instances - mine))
    csrf = csrf_of(web.get("/p"))

    # an old or mistyped link, while signed in on this device
    _assert_error_page(web.get("/p/login/not-a-real-token"), lang, "invalid_link", 401,
                       "This link is not valid any more")
    # another person's questionnaire looks exactly like a missing one
    _assert_error_page(web.get(f"/p/surveys/{theirs}"), lang, "not_found", 404,
                       "There is no such survey.")
    _assert_error_page(web.get("/p/no-such-page"), lang, "not_found", 404, "Not Found")
    # a form posted without (or with a stale) CSRF token
    _assert_error_page(web.post("/p/settings/pause", data={"action": "pause"}), lang,
                       "csrf_failed", 403, "did not come from this site")
    # a path parameter that is not a number, a page opened with the wrong method
    _assert_error_page(web.get("/p/consent/records/abc"), lang, "validation_failed", 422,
                       "record_id")
    _assert_error_page(web.get("/p/withdraw/confirm"), lang, "method_not_allowed", 405,
                       "Method Not Allowed")
    # a body over the size limit (a very long free-text answer)
    _assert_error_page(web.post("/p/settings/email", data={"csrf_token": csrf,
                                                           "email": "x" * 70_000}),
                       lang, "payload_too_large", 413, "The request body is larger than")
    # a language the pages do not offer, posted to the header's switch
    _assert_error_page(web.post("/p/language", data={"csrf_token": csrf, "language": "xx"}),
                       lang, "unsupported_language", 422, "not one of the offered languages")

    # the same questionnaire sent twice (back button, double click, another tab)
    answers = {f"who5_{i}": "3" for i in range(1, 6)}
    listed = web.get("/api/v1/me/surveys").json()  # the open ones (the cookie works here too)
    who5 = next(s["id"] for s in listed if s["instrument"] == "who5")
    assert who5 in mine
    first = web.post(f"/p/surveys/{who5}", data={
        "csrf_token": csrf, "idempotency_key": "key-00000001", **answers},
        follow_redirects=False)
    assert first.status_code in (200, 303), first.text[:500]
    for key, value in (("key-00000001", "4"), ("key-00000002", "3")):  # changed, then new key
        again = web.post(f"/p/surveys/{who5}", data={
            "csrf_token": csrf, "idempotency_key": key, **answers, "who5_1": value})
        text = html.unescape(again.text)
        assert again.status_code < 500 and f'<html lang="{lang}">' in text
        for english in ("Idempotency-Key", "This survey has already been answered."):
            assert english not in text
        if again.status_code >= 400:  # still an error page: then a localized one
            code = re.search(r'data-code="([a-z_]+)"', text).group(1)  # type: ignore[union-attr]
            assert translator(lang)(f"error.codes.{code}") in text

    # withdrawal: a confirmation that does not match, an id that is not one
    choose = web.post("/p/withdraw", data={"csrf_token": csrf, "scope": "stop_contact"})
    withdrawal_id = re.search(r'name="withdrawal_id" value="(\d+)"', choose.text).group(1)  # type: ignore[union-attr]
    _assert_error_page(web.post("/p/withdraw/confirm", data={
        "csrf_token": csrf, "withdrawal_id": withdrawal_id, "confirm_token": "wrong"}),
        lang, "bad_confirmation", 403, "The confirmation does not match")
    _assert_error_page(web.post("/p/withdraw/confirm", data={
        "csrf_token": csrf, "withdrawal_id": "abc", "confirm_token": "x"}),
        lang, "not_found", 404, "There is no such withdrawal request.")
    token = re.search(r'name="confirm_token" value="([^"]+)"', choose.text).group(1)  # type: ignore[union-attr]
    done = web.post("/p/withdraw/confirm", data={
        "csrf_token": csrf, "withdrawal_id": withdrawal_id, "confirm_token": token})
    assert done.status_code == 200
    # after withdrawing, the session has ended: signing the consent form again is refused
    # (with the token of the page now open: the old page's token was bound to the session)
    _assert_error_page(web.post("/p/consent", data={
        "csrf_token": csrf_of(done), "version": "1.0", "language": "en", "decision": "consent",
        "signature_name": "Again", "statements": STATEMENTS}),
        _other(lang), "unauthorized", 401, "This link or session is not valid")  # (signed out:
    # the browser's own language now)


@pytest.mark.parametrize("lang", SUPPORTED_LANGUAGES)
def test_without_a_session_the_visitors_choice_decides(app, lang):
    web = TestClient(app, headers={"Accept-Language": _other(lang)})
    web.cookies.set("wp_lang", lang)  # the header switch's cookie
    _assert_error_page(web.get("/p"), lang, "unauthorized", 401,
                       "Please open the personal link we emailed you.")
    web.cookies.set("wp_session", "expired-or-forged")
    _assert_error_page(web.get("/p/settings"), lang, "unauthorized", 401,
                       "This link or session is not valid")
    _assert_error_page(web.get("/p/login/nope"), lang, "invalid_link", 401,
                       "This link is not valid any more")
    page = web.get("/p")
    assert 'href="/join"' in page.text  # a way to a new link, no JavaScript needed
    # and with nothing chosen, the browser's Accept-Language
    bare = TestClient(app, headers={"Accept-Language": lang})
    _assert_error_page(bare.get("/join/no-such-study"), lang, "not_found", 404,
                       "There is no study called")


@pytest.mark.parametrize("lang", SUPPORTED_LANGUAGES)
def test_rate_limit_page_in_the_stored_language(settings, clock, loaded_study, smtp, lang):
    limits = {"rate_limit_enroll_per_ip": GENEROUS, "rate_limit_enroll_per_email": GENEROUS,
              "rate_limit_magic_link_per_ip": "2/minute", "rate_limit_staff_login_per_ip":
              GENEROUS, "rate_limit_auth_failures_per_ip": GENEROUS}
    app = create_app(Settings(**settings.model_dump() | limits), clock=clock)
    try:
        web = _signed_in(app, smtp, lang, consented=False)  # opening its link spent one
        web.get("/p/login/guess-1")
        limited = web.get("/p/login/guess-2")
        _assert_error_page(limited, lang, "rate_limited", 429, "seconds and try again")
        assert int(limited.headers["retry-after"]) >= 1
    finally:
        app.state.engine.dispose()


def test_the_json_api_keeps_its_english_error_body(client):
    response = client.get("/api/v1/me", headers={"Accept-Language": "zh-CN",
                                                  "Cookie": "wp_lang=zh-CN"})
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "unauthorized" and error["message"].startswith("Please open")


def test_an_error_without_its_own_text_gets_the_generic_one():
    from app.core.errors import AppError
    from app.web.common import error_text

    t = translator("zh-CN")
    assert error_text(t, AppError("Something English.", code="no_such_code")) == t(
        "error.codes.generic")
    assert "分钟" in error_text(t, AppError("x", code="rate_limited",
                                             details={"retry_after": 3600}))
    assert "60" in error_text(t, AppError("x", code="rate_limited",
                                           details={"retry_after": 3600}))


# ---- every code a participant page can produce has its text -----------------------------------

# Modules whose errors reach participant pages: the pages themselves, the request guards, and the
# services the pages call. (Staff and IRB modules are not scanned: their pages show the message.)
PARTICIPANT_MODULES = [
    "app/web/routes.py", "app/web/survey_routes.py", "app/web/common.py",
    "app/web/language_routes.py", "app/core/errors.py", "app/core/middleware.py",
    "app/core/ratelimit.py", "app/auth/deps.py", "app/consent/service.py",
    "app/surveys/service.py", "app/participants/service.py",
]
# Codes in those modules raised only on staff or command-line paths.
NOT_ON_PARTICIPANT_PAGES = {
    "consent_version_immutable",  # loading a study file
    "already_acknowledged",  # a staff member acknowledging a safety event
}
CODE = re.compile(r"""\bcode\s*=\s*["']([a-z][a-z0-9_]*)["']""")


def _codes_in(path: Path) -> set[str]:
    return set(CODE.findall(path.read_text("utf-8")))


def test_every_error_code_of_participant_pages_has_a_text():
    codes: set[str] = set(_HTTP_CODES.values()) | {"http_error", "invalid_body"}
    for module in PARTICIPANT_MODULES:
        codes |= _codes_in(PROJECT_ROOT / module)
    assert {"invalid_link", "csrf_failed", "rate_limited", "not_found", "unauthorized",
            "already_completed", "idempotency_key_reused", "withdrawn"} <= codes, \
        "the scan no longer finds codes it should"
    english = catalog("en")
    missing = sorted(c for c in codes - NOT_ON_PARTICIPANT_PAGES
                     if f"error.codes.{c}" not in english)
    assert missing == []
    assert "error.codes.generic" in english


@pytest.mark.parametrize("lang", ["zh-CN", "de"])
def test_an_unexpected_failure_is_a_page_in_their_language_and_json_for_the_api(app, smtp, lang):
    """A bug must not show a participant raw JSON in English: the page says, in their language,
    that their earlier answers are safe; the JSON API keeps the error body."""

    def broken() -> None:
        raise RuntimeError("a bug, with internals nobody should see")

    app.add_api_route("/p/broken", broken)
    app.add_api_route("/api/v1/broken", broken)
    web = _signed_in(app, smtp, lang)
    web = TestClient(app, raise_server_exceptions=False, cookies=web.cookies,
                     headers=dict(web.headers))
    page = web.get("/p/broken")
    _assert_error_page(page, lang, "internal_error", 500, "Something went wrong on our side.")
    assert "internals" not in page.text
    api = web.get("/api/v1/broken")
    assert api.status_code == 500
    assert api.json()["error"]["code"] == "internal_error" and "internals" not in api.text

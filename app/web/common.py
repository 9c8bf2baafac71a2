"""Template rendering, CSRF tokens bound to the session and HTML error pages."""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import pass_context
from jinja2.runtime import Context
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from app.auth.deps import PARTICIPANT_COOKIE, STAFF_COOKIE
from app.config import SUPPORTED_LANGUAGES
from app.core import urls
from app.core.errors import AppError, Forbidden
from app.core.middleware import csp_nonce
from app.core.security import new_token
from app.i18n import LANGUAGE_NAMES, Translator, catalog, negotiate, translator
from app.participants.timezones import local_date, local_datetime

TEMPLATES = Jinja2Templates(directory=Path(__file__).parent / "templates")


@pass_context
def _localtime(context: Context, moment: datetime | None, zone: str) -> str:
    """{{ moment | localtime(zone) }}: date and time in the zone and the page language."""
    return "" if moment is None else local_datetime(moment, zone, context.get("lang") or "en")


@pass_context
def _localdate(context: Context, moment: datetime | None, zone: str) -> str:
    """{{ moment | localdate(zone) }}: the calendar day in the zone, in the page language."""
    return "" if moment is None else local_date(moment, zone, context.get("lang") or "en")


TEMPLATES.env.filters["localtime"] = _localtime
TEMPLATES.env.filters["localdate"] = _localdate
# {{ url | safe_href }}: an address from study material only becomes a link if it is https:,
# http: or tel: (app/core/urls.py); anything else gives '' (tests/app/web/test_safe_links.py)
TEMPLATES.env.filters["safe_href"] = urls.safe_href
CSRF_FIELD = "csrf_token"
# A random id for a browser without a session (the join form, the staff login), so its forms'
# CSRF tokens are bound to something; signed-in pages bind them to the session itself.
PRESESSION_COOKIE = "wp_presession"
MAX_PRESESSION_ID = 128  # characters; ours are 43
LANG_COOKIE = "wp_lang"  # an anonymous visitor's language (the header switch, or ?lang=)
LANG_COOKIE_MAX_AGE = 365 * 24 * 3600
WEB_PREFIXES = ("/join", "/p/", "/staff", "/demo/")


def offered(language: object) -> str | None:
    """`language` if it is one the pages are offered in, else None (never echo anything else)."""
    return language if isinstance(language, str) and language in SUPPORTED_LANGUAGES else None


def chosen_language(request: Request) -> str | None:
    """A visitor's own choice: ?lang= on this address, else the language-switch cookie."""
    return offered(request.query_params.get("lang")) or offered(request.cookies.get(LANG_COOKIE))


def page_language(request: Request, preferred: str | None = None) -> str:
    """`preferred` (a signed-in participant's stored language) wins, then the visitor's choice,
    then Accept-Language; anything not offered is ignored."""
    return offered(preferred) or chosen_language(request) or negotiate(
        None, request.headers.get("accept-language"))


def render(
    request: Request, template: str, lang: str, status_code: int = 200, *,
    ending_session: bool = False, **context: Any
) -> HTMLResponse:
    """The page; `ending_session`: this answer signs the browser out (forgets wp_session), so
    its forms are bound to a new pre-session id instead."""
    settings = request.app.state.settings
    staff_area = is_staff_path(request)
    cookies = dict(request.cookies)
    if ending_session:
        cookies.pop(PARTICIPANT_COOKIE, None)
    new_presession = None
    if _csrf_binding(cookies, staff=staff_area) is None:
        new_presession = cookies[PRESESSION_COOKIE] = new_token()
    context.update(
        t=translator(lang), lang=lang, csrf_field=CSRF_FIELD,
        csrf_token=csrf_token(settings.secret_key, cookies, staff=staff_area),
        staff_area=staff_area,
        csp_nonce=csp_nonce(request.scope),
        ui_languages=[(code, LANGUAGE_NAMES[code]) for code in SUPPORTED_LANGUAGES],
        language_names=LANGUAGE_NAMES, demo=settings.environment == "demo",
        # where the header's language switch returns to (checked again when it is posted)
        here=request.url.path + (f"?{request.url.query}" if request.url.query else ""),
    )
    response = TEMPLATES.TemplateResponse(request, template, context, status_code=status_code)
    if new_presession is not None:
        response.set_cookie(PRESESSION_COOKIE, new_presession, httponly=True, samesite="lax",
                            secure=settings.secure_cookies, path="/")
    if ending_session:
        response.delete_cookie(PARTICIPANT_COOKIE, path="/")
    remember_language(request, response, lang)
    return response


def remember_language(request: Request, response: Response, lang: str) -> None:
    """Keep a visitor's ?lang= choice for the next pages; drop a language cookie that is not
    one of ours (forged or stale) instead of sending it back forever."""
    cookie = request.cookies.get(LANG_COOKIE)
    if offered(request.query_params.get("lang")) == lang and cookie != lang:
        set_language_cookie(request, response, lang)
    elif cookie is not None and offered(cookie) is None:
        response.delete_cookie(LANG_COOKIE, path="/")


def set_language_cookie(request: Request, response: Response, lang: str) -> None:
    response.set_cookie(LANG_COOKIE, lang, max_age=LANG_COOKIE_MAX_AGE, httponly=True,
                        samesite="lax", secure=request.app.state.settings.secure_cookies,
                        path="/")


def is_staff_path(request: Request) -> bool:
    return request.url.path == "/staff" or request.url.path.startswith("/staff/")


def _usable_presession(cookies: Mapping[str, str]) -> bool:
    return 0 < len(cookies.get(PRESESSION_COOKIE, "")) <= MAX_PRESESSION_ID


def _csrf_binding(cookies: Mapping[str, str], *, staff: bool) -> str | None:
    """What a form's token is bound to: the staff session (staff pages, whose cookie only
    /staff paths receive), else the participant's session, else the pre-session id."""
    if staff and cookies.get(STAFF_COOKIE):
        return "staff\0" + cookies[STAFF_COOKIE]
    if cookies.get(PARTICIPANT_COOKIE):
        return "participant\0" + cookies[PARTICIPANT_COOKIE]
    if _usable_presession(cookies):
        return "presession\0" + cookies[PRESESSION_COOKIE]
    return None


def csrf_token(secret_key: str, cookies: Mapping[str, str], *, staff: bool) -> str:
    """HMAC of the session (or pre-session id) under the app's secret key: a site that can
    set a cookie in the browser still cannot make up a token that matches it."""
    binding = _csrf_binding(cookies, staff=staff)
    if binding is None:
        return ""
    return hmac.new(secret_key.encode("utf-8"), b"wellpanel-csrf\0" + binding.encode(
        "utf-8", "surrogateescape"), hashlib.sha256).hexdigest()


async def form_with_csrf(request: Request) -> dict[str, Any]:
    """Read a posted form and check its CSRF token against this browser's session."""
    form = await request.form()
    sent = str(form.get(CSRF_FIELD, ""))
    expected = csrf_token(request.app.state.settings.secret_key, request.cookies,
                          staff=is_staff_path(request))
    if not sent or not expected or not hmac.compare_digest(sent.encode("utf-8", "replace"),
                                                           expected.encode("ascii")):
        raise Forbidden("This form has expired or did not come from this site; "
                        "please go back, reload the page and try again.", code="csrf_failed")
    values: dict[str, Any] = {}
    for key in form:
        items = form.getlist(key)
        values[key] = [str(v) for v in items] if len(items) > 1 else str(items[0])
    return values


def is_web_request(request: Request) -> bool:
    path = request.url.path
    return path in ("/", "/p", "/staff", "/help") or path.startswith(WEB_PREFIXES)


def html_error(request: Request, exc: AppError) -> Response:
    staff = request.url.path.startswith("/staff")
    if exc.status_code == 401 and staff:
        return RedirectResponse("/staff/login", status_code=303)
    stored = None if staff else signed_in_language(request)
    lang = page_language(request, stored)
    # Participants read a localized text chosen by the error's code, never the server's
    # English; staff pages keep the message, which names the field or role at fault.
    message = exc.message if staff else error_text(translator(lang), exc)
    # a real link (not history.back()) so the way out works without JavaScript
    home = "/staff" if staff else "/p" if stored else "/join"
    return render(request, "error.html", lang, status_code=exc.status_code, error=exc,
                  message=message, home=home)


ERROR_KEYS = "error.codes."


def error_text(t: Translator, exc: AppError) -> str:
    """The participant's text for an error: error.codes.<code>, else error.codes.generic."""
    key = ERROR_KEYS + exc.code
    if key not in catalog("en"):
        key = ERROR_KEYS + "generic"
    retry = exc.details.get("retry_after") if isinstance(exc.details, dict) else None
    minutes = math.ceil(retry / 60) if isinstance(retry, int | float) and retry > 0 else 1
    return t(key, minutes=minutes)


def signed_in_language(request: Request) -> str | None:
    """The stored language of the participant whose browser session this is, if any: set by
    the page's own sign-in check, else looked up here (a 404, 429 or CSRF error is raised
    before or without it)."""
    known = getattr(request.state, "participant_language", None)
    if known:
        return str(known)
    token = request.cookies.get(PARTICIPANT_COOKIE)
    if not token:
        return None
    from app.auth import service as auth

    try:
        with Session(request.app.state.engine) as session:
            found = auth.participant_for_token(session, token, now=request.app.state.clock())
    except SQLAlchemyError:
        return None  # the error page must still render when the database cannot answer
    return found[0].language if found else None

"""Template rendering, CSRF (double-submit cookie) and HTML error pages."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from app.config import SUPPORTED_LANGUAGES
from app.core.errors import AppError, Forbidden
from app.core.security import constant_time_equal, new_token
from app.i18n import LANGUAGE_NAMES, negotiate, translator

TEMPLATES = Jinja2Templates(directory=Path(__file__).parent / "templates")
TEMPLATES.env.filters["localtime"] = lambda moment, zone: moment.astimezone(
    ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M")
CSRF_COOKIE = "wp_csrf"
CSRF_FIELD = "csrf_token"
WEB_PREFIXES = ("/join", "/p/", "/staff", "/demo/")


def page_language(request: Request, preferred: str | None = None) -> str:
    return negotiate(request.query_params.get("lang") or preferred,
                     request.headers.get("accept-language"))


def render(
    request: Request, template: str, lang: str, status_code: int = 200, **context: Any
) -> HTMLResponse:
    settings = request.app.state.settings
    csrf = request.cookies.get(CSRF_COOKIE) or new_token()
    context.update(
        t=translator(lang), lang=lang, csrf_field=CSRF_FIELD, csrf_token=csrf,
        ui_languages=[(code, LANGUAGE_NAMES[code]) for code in SUPPORTED_LANGUAGES],
        language_names=LANGUAGE_NAMES, demo=settings.environment == "demo",
    )
    response = TEMPLATES.TemplateResponse(request, template, context, status_code=status_code)
    if request.cookies.get(CSRF_COOKIE) != csrf:
        response.set_cookie(CSRF_COOKIE, csrf, httponly=True, samesite="strict",
                            secure=settings.secure_cookies, path="/")
    return response


async def form_with_csrf(request: Request) -> dict[str, Any]:
    """Read a posted form and check its CSRF token against the cookie."""
    form = await request.form()
    sent = str(form.get(CSRF_FIELD, ""))
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not sent or not cookie or not constant_time_equal(sent, cookie):
        raise Forbidden("This form has expired or did not come from this site; "
                        "please go back, reload the page and try again.", code="csrf_failed")
    values: dict[str, Any] = {}
    for key in form:
        items = form.getlist(key)
        values[key] = [str(v) for v in items] if len(items) > 1 else str(items[0])
    return values


def is_web_request(request: Request) -> bool:
    path = request.url.path
    return path in ("/", "/p", "/staff") or path.startswith(WEB_PREFIXES)


def html_error(request: Request, exc: AppError) -> Response:
    if exc.status_code == 401 and request.url.path.startswith("/staff"):
        return RedirectResponse("/staff/login", status_code=303)
    lang = page_language(request)
    # a real link (not history.back()) so the way out works without JavaScript
    home = "/staff" if request.url.path.startswith("/staff") else "/p"
    return render(request, "error.html", lang, status_code=exc.status_code, error=exc,
                  home=home)

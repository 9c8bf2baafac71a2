"""The header's language switch, a POST form on every participant page.

A signed-in participant's choice is stored as their language through the same service as the
settings page (audited; their emails follow it); an anonymous visitor's (join, check-email, help
pages) goes into a cookie that later pages and the join form read. Both then return to the page
the switch was on, which must be a page of this site.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse
from starlette.routing import Match

from app.auth import service as auth
from app.auth.deps import PARTICIPANT_COOKIE, NowDep, SessionDep
from app.config import SUPPORTED_LANGUAGES
from app.core.errors import ValidationFailed
from app.participants import service as participants
from app.web.common import form_with_csrf, offered, set_language_cookie

router = APIRouter(include_in_schema=False)
MAX_RETURN_PATH = 2000  # characters


@router.post("/p/language")
async def switch_language(request: Request, session: SessionDep, now: NowDep
                          ) -> RedirectResponse:
    form = await form_with_csrf(request)
    language = offered(form.get("language"))
    if language is None:
        raise ValidationFailed(
            f"language: not one of the offered languages ({', '.join(SUPPORTED_LANGUAGES)}).",
            code="unsupported_language", details={"field": "language"})
    participant = _signed_in(request, session, now)
    if participant is not None:
        participants.change_settings(session, participant, timezone=None, language=language,
                                     now=now)
    response = RedirectResponse(return_path(request, form.get("next"), participant is not None),
                                status_code=303)
    # Kept for anonymous pages too (after signing out, the join page), never instead of the
    # stored language: pages put a signed-in participant's own language first.
    set_language_cookie(request, response, language)
    return response


def _signed_in(request: Request, session: SessionDep, now: Any) -> Any:
    token = request.cookies.get(PARTICIPANT_COOKIE)
    found = auth.participant_for_token(session, token, now=now) if token else None
    return found[0] if found else None


def return_path(request: Request, wanted: object, signed_in: bool) -> str:
    """`wanted` if it is a page of this site that answers GET, without its ?lang= (which would
    override the new choice); else the start page. Never another site (no open redirect)."""
    fallback = "/p" if signed_in else "/join"
    if not isinstance(wanted, str) or not is_local_path(wanted):
        return fallback
    parts = urlsplit(wanted)
    if not _has_page(request, parts.path):
        return fallback
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                       if k != "lang"])
    return parts.path + (f"?{query}" if query else "")


def is_local_path(value: str) -> bool:
    """A path on this site: starts with one slash, no scheme or host, nothing a browser would
    read as another host (`//x`, `/\\x`), no control characters."""
    if not value.startswith("/") or value.startswith("//") or len(value) > MAX_RETURN_PATH:
        return False
    if "\\" in value or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        return False
    parts = urlsplit(value)
    return not parts.scheme and not parts.netloc


def _has_page(request: Request, path: str) -> bool:
    scope = {"type": "http", "method": "GET", "path": path, "root_path": ""}
    return any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes)

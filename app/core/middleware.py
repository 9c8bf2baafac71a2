"""Request guards that run before any handler (body size, Content-Length, Content-Type, Host,
the Origin of cookie-authenticated API calls) and the security headers on every answer."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import AppError, Forbidden, PayloadTooLarge, error_response

HtmlErrors = tuple[Callable[[Request], bool], Callable[[Request, AppError], Any]]

JSON_API_PREFIX = "/api/"
BODY_METHODS = {"POST", "PUT", "PATCH"}


class BodySizeLimit:
    """Reject bodies over `max_bytes` (by Content-Length, or while streaming) with 413 (a page
    for browser routes when `html` is given, as the error handlers do)."""

    def __init__(self, app: ASGIApp, max_bytes: int, html: HtmlErrors | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.html = html

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, err: AppError) -> None:
        await refuse(scope, receive, send, err, self.html)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = PayloadTooLarge(f"The request body is larger than {self.max_bytes} bytes.")
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and not length.strip().isdigit():
            bad = AppError("The Content-Length header is not a whole number of bytes.",
                           code="invalid_header", details={"header": "Content-Length"})
            await self._refuse(scope, receive, send, bad)
            return
        if length is not None and int(length) > self.max_bytes:
            await self._refuse(scope, receive, send, too_large)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _TooLarge:
            await self._refuse(scope, receive, send, too_large)


class _TooLarge(Exception):
    pass


async def refuse(scope: Scope, receive: Receive, send: Send, err: AppError,
                 html: HtmlErrors | None) -> None:
    """Answer `err` as the error handlers would: a page for browser routes, else JSON."""
    request = Request(scope, receive)  # (the page reads headers and cookies, not the body)
    if html is not None and html[0](request):
        response = await run_in_threadpool(html[1], request, err)
    else:
        response = error_response(err)
    await response(scope, receive, send)


class JsonContentType:
    """The JSON API reads JSON only: a body sent as anything else gets 415, not a confusing 422."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and scope["method"] in BODY_METHODS
                and scope["path"].startswith(JSON_API_PREFIX) and not _json_or_empty(scope)):
            err = AppError("Send the request body as JSON (Content-Type: application/json).",
                           code="unsupported_media_type", status_code=415,
                           details={"header": "Content-Type"})
            await error_response(err)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _json_or_empty(scope: Scope) -> bool:
    headers = dict(scope.get("headers", []))
    length = headers.get(b"content-length", b"").strip()
    if b"transfer-encoding" not in headers and length in (b"", b"0"):
        return True  # no body: nothing to misread
    media = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/")
                                             and media.endswith(b"+json"))


# ---- security headers ------------------------------------------------------------------------
STATIC_PREFIX = "/static/"
API_PREFIX = "/api/"
API_DOCS_PATHS = ("/docs", "/redoc")
# Scripts only from this site, or inline when they carry this answer's nonce; no inline styles
# or event handlers; nothing may frame the pages or change where forms and relative links go.
CSP = ("default-src 'self'; script-src 'self' 'nonce-{nonce}'; style-src 'self'; "
       "img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")
# The API documentation pages (FastAPI's Swagger UI and ReDoc) load their code from a CDN and
# inject styles; they show no participant data and are off in production unless configured.
DOCS_CSP = ("default-src 'self'; script-src 'self' 'nonce-{nonce}' https://cdn.jsdelivr.net; "
            "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net "
            "https://fonts.googleapis.com; font-src https://fonts.gstatic.com; "
            "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly; "
            "worker-src blob:; object-src 'none'; base-uri 'none'; form-action 'self'; "
            "frame-ancestors 'none'")
HSTS = "max-age=31536000"
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def csp_nonce(scope: Scope) -> str:
    """This request's CSP nonce (set by SecurityHeaders); templates put it on inline scripts."""
    return str(scope.get("state", {}).get("csp_nonce", ""))


class SecurityHeaders:
    """The security headers on every answer: CSP with a fresh nonce per request, nosniff,
    no referrer, no framing, HSTS when `hsts`, and `Cache-Control: no-store` on everything but
    static files (pages, API answers and PDFs hold personal data). A route's own CSP (a stricter
    one, e.g. the sandboxed analysis report) is kept, with frame-ancestors added if missing.
    An absolute redirect back to the Host the request named becomes relative, so a forged Host
    header is never echoed. Runs outermost (see app.main), so error answers get them too."""

    def __init__(self, app: ASGIApp, *, hsts: bool) -> None:
        self.app = app
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        nonce = secrets.token_urlsafe(16)
        scope.setdefault("state", {})["csp_nonce"] = nonce
        path = scope["path"]
        policy = DOCS_CSP if path in API_DOCS_PATHS else CSP
        host = Headers(scope=scope).get("host", "")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                own = headers.get("content-security-policy")
                if own is None:
                    headers["Content-Security-Policy"] = policy.format(nonce=nonce)
                elif "frame-ancestors" not in own:
                    headers["Content-Security-Policy"] = f"{own}; frame-ancestors 'none'"
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
                if self.hsts:
                    headers["Strict-Transport-Security"] = HSTS
                if not path.startswith(STATIC_PREFIX):
                    headers["Cache-Control"] = "no-store"
                _name_json(headers, api=path.startswith(API_PREFIX))
                if "location" in headers:
                    headers["Location"] = _not_to_host(headers["location"], host)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _name_json(headers: MutableHeaders, *, api: bool) -> None:
    """JSON answers name their character set, and an API answer is a download if a browser
    is tricked into opening it as a page (ASVS 14.4.1, 14.4.2); real downloads keep theirs."""
    if headers.get("content-type") == "application/json":
        headers["Content-Type"] = "application/json; charset=utf-8"
    if (api and headers.get("content-type", "").startswith("application/json")
            and "content-disposition" not in headers):
        headers["Content-Disposition"] = 'attachment; filename="api.json"'


def _not_to_host(location: str, host: str) -> str:
    """`location` without scheme and host when it points at `host` (the request's Host header,
    which the client chose): Starlette builds its slash redirects from it."""
    parts = urlsplit(location)
    if not parts.netloc or parts.netloc.lower() != host.lower():
        return location
    relative = parts.path or "/"
    return relative + (f"?{parts.query}" if parts.query else "") + (
        f"#{parts.fragment}" if parts.fragment else "")


# ---- Host and Origin -------------------------------------------------------------------------
class AllowedHosts:
    """Answer only requests whose Host header names one of `hosts` (`*.example.org` matches
    subdomains, `*` anything); others get 400 before any handler runs (as Starlette's
    TrustedHostMiddleware, but with the app's error body or page). The probes are answered
    whatever the Host: orchestrators and scrapers call them by the container's address, and
    they hold no personal data, build no links and /metrics has its own guard."""

    PROBES = frozenset({"/healthz", "/readyz", "/metrics"})

    def __init__(self, app: ASGIApp, hosts: list[str], html: HtmlErrors | None = None) -> None:
        self.app = app
        self.any = "*" in hosts
        self.exact = {h for h in hosts if not h.startswith("*")}
        self.suffixes = tuple(h[1:] for h in hosts if h.startswith("*."))
        self.html = html

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or self.any or scope["path"] in self.PROBES
                or self._allowed(scope)):
            await self.app(scope, receive, send)
            return
        err = AppError("The Host header names a site this server does not serve.",
                       code="invalid_host", details={"header": "Host"})
        await refuse(scope, receive, send, err, self.html)

    def _allowed(self, scope: Scope) -> bool:
        parts = urlsplit("//" + Headers(scope=scope).get("host", ""))
        try:
            name, _port = parts.hostname, parts.port
        except ValueError:  # a port that is not a number
            return False
        return bool(name) and (name in self.exact or name.endswith(self.suffixes))


SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def require_same_origin(request: Request, origin: str) -> None:
    """For a JSON API call authenticated by the browser's session cookie: it must come from
    this site's own pages (`origin`, the base URL's): a matching Origin, else Sec-Fetch-Site
    same-origin; a state-changing call with neither is refused. A cross-site form or script
    can make a browser send the cookie, but not these headers. Bearer-token calls never get
    here: no browser adds those on its own."""
    if not from_this_site(request.headers, request.method, origin):
        raise Forbidden("This request came from another site. The API accepts the sign-in "
                        "cookie only from this site's own pages; other clients send an API "
                        "token (Authorization: Bearer ...).", code="cross_site_request",
                        details={"header": "Origin"})


def from_this_site(headers: Headers, method: str, origin: str) -> bool:
    sent_origin = headers.get("origin")
    if sent_origin is not None:
        return sent_origin.lower() == origin
    fetch_site = headers.get("sec-fetch-site")
    safe = method in SAFE_METHODS
    if fetch_site is not None:  # "none": typed in or a bookmark (a reading only)
        return fetch_site == "same-origin" or (safe and fetch_site == "none")
    return safe  # an old browser or a script: it may read, not change anything

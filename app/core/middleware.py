"""Request guards that run before any handler: body size, Content-Length, Content-Type."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import AppError, PayloadTooLarge, error_response

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
        request = Request(scope, receive)  # (the page reads headers and cookies, not the body)
        if self.html is not None and self.html[0](request):
            response = await run_in_threadpool(self.html[1], request, err)
        else:
            response = error_response(err)
        await response(scope, receive, send)

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

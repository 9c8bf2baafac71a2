"""The one error body of the API: {"error": {"code", "message", "details"}}.

Services raise AppError subclasses; the handlers here turn them, FastAPI's validation errors and
Starlette's HTTP errors into that body, so no client ever sees a different shape.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy.exc import DataError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("wellpanel.errors")


class AppError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: Any = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        if code:
            self.code = code
        if status_code:
            self.status_code = status_code


class NotFound(AppError):
    status_code = 404
    code = "not_found"


class Conflict(AppError):
    status_code = 409
    code = "conflict"


class Unauthorized(AppError):
    status_code = 401
    code = "unauthorized"


class Forbidden(AppError):
    status_code = 403
    code = "forbidden"


class ValidationFailed(AppError):
    status_code = 422
    code = "validation_failed"


class PayloadTooLarge(AppError):
    status_code = 413
    code = "payload_too_large"


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorBody(BaseModel):
    """The body of every 4xx answer (DESIGN.md, "Errors")."""

    error: ErrorDetail


def document_errors(app: FastAPI) -> None:
    """Describe the real error body in the OpenAPI schema: every operation's 422 (which FastAPI
    documents as its own HTTPValidationError shape) and a 4XX default point to ErrorBody."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version,
                             description=app.description, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(ErrorBody.model_json_schema(ref_template="#/components/schemas/"
                                                      "{model}")["$defs"])
        body = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
        body.pop("$defs", None)
        components["ErrorBody"] = body
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        ref = {"content": {"application/json": {"schema": {
            "$ref": "#/components/schemas/ErrorBody"}}}}
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                responses = operation.setdefault("responses", {})
                if "422" in responses:
                    responses["422"] = {"description": "Validation failed", **ref}
                responses.setdefault("4XX", {"description": "Refused (see error.code)", **ref})
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def error_response(err: AppError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if err.status_code == 401 else None
    return JSONResponse(
        error_body(err.code, err.message, err.details), status_code=err.status_code, headers=headers
    )


def _field_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "cookie")]
    return ".".join(parts) or str(loc[0] if loc else "request")


def validation_details(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"field": _field_name(tuple(e.get("loc", ()))), "problem": e.get("msg", "")}
            for e in errors]


RETRY_AFTER_SECONDS = 30  # what a 503 for an unreachable database asks clients to wait

_HTTP_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 406: "not_acceptable", 409: "conflict", 413: "payload_too_large",
    415: "unsupported_media_type", 422: "validation_failed", 429: "rate_limited",
}


HtmlErrors = tuple[Callable[[Request], bool], Callable[[Request, AppError], Response]]


def install_error_handlers(app: FastAPI, html: HtmlErrors | None = None) -> None:
    """JSON error bodies for the API; `html` renders pages for browser routes instead."""

    async def respond(request: Request, err: AppError) -> Response:
        if html is not None and html[0](request):
            # in a worker thread: the page may look up the signed-in participant's language
            return await run_in_threadpool(html[1], request, err)
        return error_response(err)

    @app.exception_handler(AppError)
    async def _app_error(request: Request, exc: AppError) -> Response:
        return await respond(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        details = validation_details(list(exc.errors()))
        first = details[0] if details else {"field": "request", "problem": "invalid"}
        return await respond(request, ValidationFailed(
            f"{first['field']}: {first['problem']}", details=details))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        if exc.status_code == 400 and "parsing the body" in message:
            code, message = "invalid_body", ("The request body is not valid UTF-8 JSON, or is "
                                             "nested too deeply to read.")
        return await respond(request, AppError(message, code=code,
                                               status_code=exc.status_code))

    @app.exception_handler(DataError)
    async def _unstorable(request: Request, exc: DataError) -> Response:
        # The database refused a value the validators let through (a NUL character in text on
        # PostgreSQL, a number past the column's range). Never log str(exc): it holds the SQL
        # parameters, which can be answers or addresses.
        log.warning("database refused a value", extra={"error": type(exc.orig).__name__})
        return await respond(request, AppError(
            "A value in the request cannot be stored (for example a NUL character in text, or "
            "a number out of range).", code="invalid_value", status_code=400))

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    @app.exception_handler(PoolTimeout)
    async def _database_unavailable(request: Request, exc: Exception) -> Response:
        # The database is unreachable (stopped, restarting, out of connections): a clear 503
        # the client may retry, never a 500. One short line, no traceback and never str(exc)
        # (it can hold SQL); the handler's RepeatLimiter bounds the lines during an outage.
        orig = getattr(exc, "orig", None)
        log.error("database unavailable",
                  extra={"error": type(orig or exc).__name__,  # the template: paths hold tokens
                         "route": getattr(request.scope.get("route"), "path", None)})
        err = AppError("The service is briefly unavailable; please try again in a minute.",
                       code="service_unavailable", status_code=503)
        if html is not None and html[0](request):
            try:
                page = await run_in_threadpool(html[1], request, err)
            except Exception:  # noqa: BLE001 - the page itself may need the database
                page = error_response(err)
        else:
            page = error_response(err)
        page.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return page

    @app.exception_handler(OverflowError)
    async def _too_big(request: Request, _exc: OverflowError) -> Response:
        # SQLite's driver raises this itself (not a DataError) for an id past 64 bits.
        return await respond(request, AppError("A number in the request is out of range.",
                                               code="invalid_value", status_code=400))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error", exc_info=exc)
        err = AppError("Something went wrong on our side.", code="internal_error",
                       status_code=500)
        try:  # a participant gets a page in their language, like any other error
            return await respond(request, err)
        except Exception:  # the page itself failed (e.g. the database is gone): plain JSON
            log.exception("the error page failed too")
            return error_response(err)

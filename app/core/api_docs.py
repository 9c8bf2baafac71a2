"""The API documentation pages (/docs, /redoc) with their inline script under the CSP nonce.

FastAPI's own pages carry an inline <script> that the site's Content-Security-Policy refuses;
these are the same pages with this answer's nonce on it. Which environments serve them is
decided in app.main (off in production unless WELLPANEL_API_DOCS is set)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse

from app.core.middleware import csp_nonce


def _with_nonce(page: HTMLResponse, request: Request) -> HTMLResponse:
    nonce = csp_nonce(request.scope)
    html = bytes(page.body).decode("utf-8").replace("<script", f'<script nonce="{nonce}"')
    return HTMLResponse(html)


def install_api_docs(app: FastAPI, openapi_url: str) -> None:
    title = f"{app.title} API"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        return _with_nonce(get_swagger_ui_html(openapi_url=openapi_url, title=title,
                                               swagger_ui_parameters=app.swagger_ui_parameters),
                           request)

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        return _with_nonce(get_redoc_html(openapi_url=openapi_url, title=title), request)

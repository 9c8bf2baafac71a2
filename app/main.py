"""The application factory: settings, database, routers, error handlers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path

import anyio
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp

from app import __version__
from app.audit import anchor as ledger_anchor
from app.audit.routes import router as audit_router
from app.auth.admin_routes import router as staff_admin_router
from app.auth.routes import router as sign_out_router
from app.config import Settings, get_settings
from app.consent.irb_routes import router as irb_consent_router
from app.consent.routes import router as consent_router
from app.core.api_docs import install_api_docs
from app.core.errors import document_errors, install_error_handlers
from app.core.middleware import (
    AllowedHosts,
    BodySizeLimit,
    JsonContentType,
    SecurityHeaders,
)
from app.core.ratelimit import RateLimit
from app.db import make_engine, utcnow
from app.export.routes import router as export_router
from app.notify.channels import Channel, make_channel
from app.notify.dispatch import Deliverer
from app.notify.routes import router as notify_router
from app.notify.routes import webhook_router as bounce_webhook_router
from app.ops.health import router as health_router
from app.ops.metrics import Metrics, RequestMetrics
from app.ops.metrics import router as metrics_router
from app.participants.data_routes import router as my_data_router
from app.participants.routes import router as participants_router
from app.scheduling.routes import router as compliance_router
from app.surveys.routes import router as surveys_router
from app.surveys.staff_routes import router as safety_router
from app.web.account_routes import router as account_web_router
from app.web.common import html_error, is_web_request
from app.web.feedback_routes import router as feedback_web_router
from app.web.help_routes import router as help_web_router
from app.web.language_routes import router as language_router
from app.web.routes import router as web_router
from app.web.staff_routes import router as staff_web_router
from app.web.submitted_routes import router as submitted_web_router
from app.web.survey_routes import router as survey_web_router
from app.web.unsubscribe_routes import router as unsubscribe_web_router

STATIC_DIR = Path(__file__).parent / "web" / "static"
OPENAPI_URL = "/openapi.json"


def operation_id(route: APIRoute) -> str:
    """`tag-name` (e.g. `participant-submit_response`), as the FastAPI template does: short,
    stable ids that client generators turn into readable method names."""
    return f"{route.tags[0]}-{route.name}" if route.tags else route.name


class WellpanelAPI(FastAPI):
    """FastAPI with the security headers outside Starlette's ServerErrorMiddleware, which
    sends the answer to an unhandled error itself: a 500 gets the headers too."""

    def build_middleware_stack(self) -> ASGIApp:
        return SecurityHeaders(super().build_middleware_stack(),
                               hsts=self.state.settings.is_production)


def create_app(
    settings: Settings | None = None,
    *,
    clock: Callable[[], datetime] = utcnow,
    channel: Channel | None = None,
) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.deliverer.resume()
        yield
        deliverer = getattr(app.state, "deliverer", None)
        if deliverer is not None:  # let a send in progress finish (bounded by SMTP timeouts)
            await anyio.to_thread.run_sync(deliverer.stop)
        app.state.engine.dispose()

    # The API documentation is for developers: off in production unless configured.
    docs = settings.api_docs or not settings.is_production
    app = WellpanelAPI(title="wellpanel", version=__version__, lifespan=lifespan,
                       description="Consent-gated longitudinal wellbeing studies.",
                       openapi_url=OPENAPI_URL if docs else None, docs_url=None,
                       redoc_url=None, generate_unique_id_function=operation_id)
    app.state.settings = settings
    app.state.engine = make_engine(settings.database_url)
    app.state.ledger_anchor = ledger_anchor.attach(app.state.engine, settings)  # checkpoints
    app.state.clock = clock
    app.state.channel = channel or make_channel(settings)
    app.state.deliverer = Deliverer(app.state)  # sends off the request threads
    app.state.metrics = Metrics(app.state.engine, clock)
    install_error_handlers(app, html=(is_web_request, html_error))
    # The last added runs first: metrics see every answer, sizes are checked before rate limits
    # read a body.
    app.add_middleware(RateLimit, settings=settings, html=(is_web_request, html_error))
    app.add_middleware(JsonContentType)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes,
                       html=(is_web_request, html_error))
    app.add_middleware(AllowedHosts, hosts=settings.trusted_hosts,
                       html=(is_web_request, html_error))
    app.add_middleware(RequestMetrics, metrics=app.state.metrics)
    for router in (participants_router, consent_router, surveys_router, irb_consent_router,
                   audit_router, safety_router, web_router, survey_web_router, staff_web_router):
        app.include_router(router)
    for router in (health_router, metrics_router):  # /healthz, /readyz, /metrics
        app.include_router(router)
    app.include_router(notify_router)
    app.include_router(bounce_webhook_router)  # /api/v1/notify/bounces (off without a secret)
    app.include_router(compliance_router)
    app.include_router(export_router)
    app.include_router(staff_admin_router)  # /api/v1/staff/members (admin)
    app.include_router(language_router)  # the header's language switch
    for router in (sign_out_router, my_data_router, account_web_router, submitted_web_router):
        app.include_router(router)  # participant controls: sign out, my data, after a survey
    app.include_router(help_web_router)  # the public "Need help now?" page
    app.include_router(feedback_web_router)  # /p/feedback, when the study file enables it
    app.include_router(unsubscribe_web_router)  # /p/unsubscribe/<token> (RFC 8058 one-click)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    if docs:
        install_api_docs(app, OPENAPI_URL)
    document_errors(app)
    return app

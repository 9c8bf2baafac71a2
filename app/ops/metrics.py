"""Prometheus metrics at /metrics.

Request counts and latencies are labelled by route *template* (`/api/v1/me/surveys/{instance_id}`),
never by the raw path, so no id or token becomes a label. Queue depth, notification failures and
scheduler lag are read from the database at scrape time with a few aggregate queries.

Who may read /metrics: with `WELLPANEL_METRICS_TOKEN` set, whoever sends it as a Bearer token;
without it, loopback clients only (a Prometheus on the same host, or `curl` inside the
container). Counts are not personal data, but they reveal the size and activity of a study.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable, Iterator
from datetime import datetime

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from sqlalchemy import Engine
from sqlmodel import Session, col, func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import Forbidden
from app.jobs import service as jobs_service
from app.notify.models import OutboxMessage
from app.surveys.models import SurveyInstance

log = logging.getLogger("wellpanel.http")
router = APIRouter(include_in_schema=False)
LOOPBACK = {"127.0.0.1", "::1", "localhost"}
UNMATCHED = "unmatched"  # one label for every path no route knows, so scanners cannot blow it up
METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


class Metrics:
    """One registry per application, so several apps in one process (tests) never collide."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("wellpanel_http_requests", "HTTP requests answered",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("wellpanel_http_request_duration_seconds",
                                 "Time to answer an HTTP request", ["method", "route"],
                                 registry=self.registry)
        self.registry.register(DatabaseCollector(engine, clock))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)


class DatabaseCollector(Collector):
    """Gauges computed at scrape time: a handful of indexed aggregate queries."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime]) -> None:
        self.engine = engine
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("wellpanel_database_up", "1 when the scrape could read the database")
        try:
            families = self._read()
        except Exception:  # noqa: BLE001 - a scrape must answer even when the database does not
            log.warning("metrics: database not readable", exc_info=True)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _read(self) -> list[Metric]:
        now = self.clock()
        with Session(self.engine) as session:
            by_status = dict(session.exec(  # type: ignore[call-overload]
                select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status)).all())
            retrying = session.exec(select(func.count()).select_from(OutboxMessage).where(
                OutboxMessage.status == "pending", col(OutboxMessage.attempts) > 0)).one()
            oldest_due = session.exec(select(func.min(SurveyInstance.scheduled_at)).where(
                SurveyInstance.status == "planned", col(SurveyInstance.scheduled_at) <= now,
                col(SurveyInstance.closes_at) > now)).one()
            safety_families = _safety_gauges(session, now)
            job_families = _job_gauges(session)
        depth = GaugeMetricFamily("wellpanel_outbox_messages", "Outbox messages by status",
                                  labels=["status"])
        for status in sorted(set(by_status) | {"pending", "sent", "failed", "cancelled"}):
            depth.add_metric([status], by_status.get(status, 0))
        failures = GaugeMetricFamily(
            "wellpanel_notification_failures",
            "Messages that could not be sent: given up (failed) or waiting to retry",
            labels=["state"])
        failures.add_metric(["failed"], by_status.get("failed", 0))
        failures.add_metric(["retrying"], retrying)
        lag = GaugeMetricFamily(
            "wellpanel_scheduler_lag_seconds",
            "Age of the oldest survey that is due but not yet opened (0 when none is waiting)")
        lag.add_metric([], _age(oldest_due, now))
        return [depth, failures, lag, *safety_families, *job_families]


def _job_gauges(session: Session) -> list[Metric]:
    """Background jobs (exports, analyses) by kind and status, and running ones whose lease
    ran out (alert when that stays above 0: no process is taking jobs over)."""
    by_kind = GaugeMetricFamily("wellpanel_jobs", "Background jobs by kind and status",
                                labels=["kind", "status"])
    for (kind, status), count in sorted(jobs_service.status_counts(session).items()):
        by_kind.add_metric([kind, status], count)
    expired = GaugeMetricFamily(
        "wellpanel_jobs_expired_leases",
        "Running jobs whose process stopped renewing its lease (taken over at the next poll)")
    expired.add_metric([], jobs_service.expired_leases(session))
    return [by_kind, expired]


def _safety_gauges(session: Session, now: datetime) -> list[Metric]:
    """Safety events nobody has acknowledged yet, the oldest one's age, and staff alerts that
    failed to go out and wait for a retry (alert on any of them staying above 0)."""
    from app.notify import staff_alerts
    from app.safety import service as safety

    count, age = safety.open_stats(session, now)
    waiting = GaugeMetricFamily("wellpanel_safety_events_unacknowledged",
                                "Safety events not yet acknowledged in the console")
    waiting.add_metric([], count)
    oldest = GaugeMetricFamily(
        "wellpanel_safety_oldest_unacknowledged_age_seconds",
        "Age of the oldest unacknowledged safety event (0 when none is waiting)")
    oldest.add_metric([], age)
    retrying = GaugeMetricFamily(
        "wellpanel_safety_alerts_retrying",
        "Staff alerts (on-call, escalation) whose sending failed and that wait for a retry")
    retrying.add_metric([], staff_alerts.undelivered(session))
    return [waiting, oldest, retrying]


def _age(moment: datetime | None | str, now: datetime) -> float:
    if moment is None or not isinstance(moment, datetime):
        return 0.0
    if moment.tzinfo is None:  # SQLite's aggregate bypasses the column type: stored UTC
        moment = moment.replace(tzinfo=now.tzinfo)
    return max(0.0, (now - moment).total_seconds())


class RequestMetrics:
    """ASGI middleware: count and time every request by route template, and log one line."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            elapsed = time.perf_counter() - started
            route = route_template(scope)
            method = scope["method"] if scope["method"] in METHODS else "other"
            self.metrics.observe(method, route, status, elapsed)
            log.info("request", extra={"method": method, "route": route,
                                       "status": status, "duration_ms": round(elapsed * 1000, 1)})


def route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else UNMATCHED


def _may_read(request: Request) -> bool:
    token = request.app.state.settings.metrics_token
    if token:
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        return hmac.compare_digest(given.encode(), token.encode())
    return request.client is not None and request.client.host in LOOPBACK


@router.get("/metrics")
def metrics(request: Request) -> Response:
    if not _may_read(request):
        raise Forbidden("Metrics are open to loopback clients, or with the metrics token.")
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

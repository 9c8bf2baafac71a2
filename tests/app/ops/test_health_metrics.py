"""/healthz, /readyz and /metrics against a real database."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from sqlmodel import select

from app import migrate
from app.config import Settings
from app.main import create_app
from app.notify.models import OutboxMessage
from app.scheduling.dispatcher import tick
from tests.support.flows import joined_and_consented

TOKEN = "metrics-token-for-tests"


def _metric(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        metric, _, label_text = key.partition("{")
        found = ",".join(sorted(label_text.rstrip("}").split(","))) if label_text else ""
        if metric == name and found == wanted:
            return float(value)
    raise AssertionError(f"{name}{labels} not in metrics")


def _scrape(client: TestClient) -> str:
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    return response.text


def test_healthz_and_readyz_on_a_migrated_database(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "revision": migrate.head_revision()}


def test_readyz_names_a_schema_behind_head(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    migrate.upgrade(url, "0001")
    app = create_app(Settings(database_url=url, environment="test", log_json=False))
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200  # liveness never asks the database
        response = client.get("/readyz")
    app.state.engine.dispose()
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "not_ready" and "wellpanel db upgrade" in error["message"]
    assert error["details"] == {"revision": "0001", "head": migrate.head_revision()}


def test_readyz_when_the_database_is_unreachable():
    url = "postgresql+psycopg://nobody:secret-pw@127.0.0.1:9/none?connect_timeout=2"
    app = create_app(Settings(database_url=url, environment="test", log_json=False))
    with TestClient(app) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "not_ready"
    assert response.json()["error"]["details"]["database"] == "unreachable"
    assert "secret-pw" not in response.text


def test_metrics_need_loopback_or_the_token(app):
    app.state.settings = app.state.settings.model_copy(update={"metrics_token": None})
    with TestClient(app) as remote:  # the test client's host is "testclient", not loopback
        refused = remote.get("/metrics")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    with TestClient(app, client=("127.0.0.1", 40000)) as local:
        assert local.get("/metrics").status_code == 200
    app.state.settings = app.state.settings.model_copy(update={"metrics_token": TOKEN})
    with TestClient(app, client=("127.0.0.1", 40000)) as local:
        assert local.get("/metrics").status_code == 403  # with a token, the token is needed
        assert local.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code \
            == 403
        assert _scrape(local)


def test_metrics_label_routes_by_template_and_read_the_database(app, client, smtp, clock,
                                                                engine, settings):
    app.state.settings = app.state.settings.model_copy(update={"metrics_token": TOKEN})
    person = joined_and_consented(client, smtp, "metrics@example.org")
    surveys = client.get("/api/v1/me/surveys", headers=person.headers).json()
    instance_id = surveys[0]["id"]
    assert client.get(f"/api/v1/me/surveys/{instance_id}", headers=person.headers)\
        .status_code == 200
    client.get("/api/v1/does-not-exist/12345")
    client.request("BREW", "/api/v1/me/surveys")  # made-up methods share one label

    text = _scrape(client)
    assert _metric(text, "wellpanel_http_requests_total", method="GET",
                   route="/api/v1/me/surveys/{instance_id}", status="200") == 1
    assert _metric(text, "wellpanel_http_requests_total", method="POST",
                   route="/api/v1/studies/{key}/enrollments", status="202") == 1
    assert _metric(text, "wellpanel_http_requests_total", method="GET", route="unmatched",
                   status="404") == 1
    assert _metric(text, "wellpanel_http_request_duration_seconds_count", method="POST",
                   route="/api/v1/me/consent") == 1
    assert _metric(text, "wellpanel_http_requests_total", method="other",
                   route="/api/v1/me/surveys", status="405") == 1
    assert instance_id not in text and person.token not in text and "12345" not in text
    assert "BREW" not in text
    assert _metric(text, "wellpanel_database_up") == 1
    # the magic link and the signed consent copy
    assert _metric(text, "wellpanel_outbox_messages", status="sent") == 2
    assert _metric(text, "wellpanel_notification_failures", state="failed") == 0
    assert _metric(text, "wellpanel_scheduler_lag_seconds") == 0

    clock.advance(days=15)  # the second wave is due, but no tick has opened it
    lag = _metric(_scrape(client), "wellpanel_scheduler_lag_seconds")
    assert 0 < lag <= 2 * 86400
    tick(engine, settings, app.state.channel, now=clock.now)
    after = _scrape(client)
    assert _metric(after, "wellpanel_scheduler_lag_seconds") == 0
    assert _metric(after, "wellpanel_outbox_messages", status="sent") >= 3  # the invitation


def test_failed_notifications_are_counted(app, client, smtp, session):
    app.state.settings = app.state.settings.model_copy(update={"metrics_token": TOKEN})
    joined_and_consented(client, smtp, "fails@example.org")
    message = session.exec(select(OutboxMessage)).first()
    message.status, message.attempts = "failed", 5
    session.add(message)
    session.commit()
    text = _scrape(client)
    assert _metric(text, "wellpanel_notification_failures", state="failed") == 1
    assert _metric(text, "wellpanel_outbox_messages", status="failed") == 1
    assert re.search(r"^wellpanel_outbox_messages\{status=\"pending\"\} 0\.0$", text, re.M)

"""Rate limits are counted in the database, so every server process shares them (#15 part 3).

Found: the counters lived in each process, so with N processes the limit was N times the
setting, and a restart forgot every count. Two app instances on one database stand in for two
processes here (tests/reliability/test_jobs_two_processes.py runs real server processes): the
failures one sees count at the other, a new instance (a restart) remembers them, and a valid
credential still passes an IP that is over its failure limit."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from app.auth import service as auth
from app.config import Settings
from app.core.ratelimit_store import RateLimitHit
from app.main import create_app

FAILURES = 4


@pytest.fixture
def make_app(settings, clock, loaded_study) -> Iterator:  # type: ignore[no-untyped-def]
    made: list[FastAPI] = []

    def make() -> FastAPI:
        application = create_app(Settings(**settings.model_dump() | {
            "rate_limits_enabled": True,
            "rate_limit_auth_failures_per_ip": f"{FAILURES}/hour;100/day",
            "rate_limit_staff_login_per_ip": "3/hour"}), clock=clock)
        made.append(application)
        return application

    yield make
    for application in made:
        application.state.engine.dispose()


def test_failed_authentications_count_across_processes_and_restarts(make_app, engine):
    with Session(engine) as s:
        token = auth.add_staff(s, "shared-limits", "irb")
    first, second = TestClient(make_app()), TestClient(make_app())
    guess = {"Authorization": "Bearer a-guess"}
    answers = [client.get("/api/v1/me", headers=guess).status_code
               for client in (first, second, first, second)]
    assert answers == [401] * FAILURES
    # the limit is spent across both: the next guess gets 429 at either
    assert first.get("/api/v1/me", headers=guess).status_code == 429
    refused = second.get("/api/v1/me", headers=guess)
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["code"] == "rate_limited"
    # a valid credential from the same address still passes, at both
    valid = {"Authorization": f"Bearer {token}"}
    assert first.get("/api/v1/irb/consent-log", headers=valid).status_code == 200
    assert second.get("/api/v1/irb/consent-log", headers=valid).status_code == 200
    # a restarted process remembers the count
    restarted = TestClient(make_app())
    assert restarted.get("/api/v1/me", headers=guess).status_code == 429
    # only keyed hashes are stored: no address, no key text
    with Session(engine) as s:
        keys = s.exec(select(RateLimitHit.key)).all()
    assert len(keys) == FAILURES * 2  # each failure counted once per window (hour, day)
    assert all(len(k) == 64 and "testclient" not in k for k in keys)


def test_a_login_limit_is_shared_by_processes(make_app):
    first, second = TestClient(make_app()), TestClient(make_app())
    answers = []
    for client in (first, second, first, second):
        page = client.get("/staff/login")
        csrf = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        answers.append(client.post("/staff/login", data={"csrf_token": csrf,
                                                         "code": "123456"}).status_code)
    assert 429 not in answers[:3]
    assert answers[3] == 429  # the fourth attempt of three allowed, made at the other process

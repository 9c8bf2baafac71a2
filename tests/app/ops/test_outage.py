"""A database that is not there answers 503 with the standard error body (API) or a page
(participant pages), and its repeated errors cost a bounded number of log lines."""

from __future__ import annotations

import io
import json
import logging

import pytest
from fastapi.testclient import TestClient

from app.logging_setup import RepeatLimiter, configure_logging
from app.main import create_app
from tests.support.flows import ELIGIBLE, STUDY
from tests.support.pg import free_port


@pytest.fixture
def dead_database_url(backend: str, tmp_path) -> str:  # type: ignore[no-untyped-def]
    if backend == "sqlite":  # a file in a folder that does not exist cannot be opened
        return f"sqlite:///{tmp_path / 'gone' / 'wellpanel.db'}"
    return f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/gone"  # nobody listens


@pytest.fixture
def log_stream():  # type: ignore[no-untyped-def]
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging("INFO", json_format=True, stream=stream)
    yield stream
    root.handlers[:], root.level = saved


def test_a_database_outage_answers_503_and_logs_boundedly(settings, dead_database_url, clock,
                                                          log_stream):  # type: ignore[no-untyped-def]
    app = create_app(settings.model_copy(update={"database_url": dead_database_url}),
                     clock=clock)
    with TestClient(app) as client:
        answers = [client.post(f"/api/v1/studies/{STUDY}/enrollments",
                               json={"email": "outage.person@example.org",
                                     "screening": ELIGIBLE}) for _ in range(30)]
        me = client.get("/api/v1/me", headers={"Authorization": "Bearer some-session-token"})
        client.cookies.set("wp_session", "some-cookie")
        page = client.get("/p")
    for answer in [*answers, me]:
        assert answer.status_code == 503
        assert answer.json()["error"]["code"] == "service_unavailable"
        assert answer.headers["Retry-After"] == "30"
    assert page.status_code == 503 and page.headers["content-type"].startswith("text/html")
    lines = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    problems = [r for r in lines if r["level"] in ("WARNING", "ERROR")]
    unavailable = [r for r in problems if r["message"] == "database unavailable"]
    assert 1 <= len(unavailable) <= 5, unavailable  # 31 requests, at most the burst
    assert all("exc_info" not in r for r in unavailable)  # one line each, no traceback
    assert len(problems) <= 5 + 3, problems  # plus the startup's own complaints
    text = log_stream.getvalue()
    assert "outage.person" not in text and "some-session-token" not in text


def test_repeat_limiter_lets_a_burst_through_then_counts_what_it_held_back() -> None:
    now = [0.0]
    limiter = RepeatLimiter(burst=3, window=60, clock=lambda: now[0])

    def record(msg: str, level: int = logging.ERROR) -> logging.LogRecord:
        return logging.LogRecord("wellpanel.x", level, __file__, 1, msg, None, None)

    assert [limiter.filter(record("db down")) for _ in range(10)] == [True] * 3 + [False] * 7
    assert limiter.filter(record("another kind"))  # counted apart
    assert all(limiter.filter(record("request", logging.INFO)) for _ in range(50))  # access log
    now[0] = 61.0
    after = record("db down")
    assert limiter.filter(after) and after.repeats_suppressed == 7  # type: ignore[attr-defined]


def test_database_errors_never_carry_their_parameters(engine) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    with pytest.raises(DBAPIError) as caught, engine.connect() as conn:
        conn.execute(text("SELECT :answer FROM no_such_table"),
                     {"answer": "my private answer"})
    assert "no_such_table" in str(caught.value)  # the statement, for debugging
    assert "my private answer" not in str(caught.value)

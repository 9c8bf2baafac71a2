"""Logs stay safe in every process model (#15 part 1): the real `wellpanel serve --workers 2` on
PostgreSQL, driven over HTTP through a participant's journey and then through a database outage
(the PostgreSQL server stopped mid-run). Every line of every process is one JSON object; none
holds an address, a token or SQL parameters; the outage answers 503 with the standard error body
and costs a bounded number of lines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config import PROJECT_ROOT
from app.db import utcnow
from tests.reliability.harness import seed, server_env, wait_http
from tests.support.flows import ELIGIBLE, STUDY, consent, fresh_link, join
from tests.support.pg import PostgresServer, free_port
from tests.support.smtp import SMTPServer

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

EMAILS = [f"private.worker{i}@example.org" for i in range(3)]
OUTAGE_REQUESTS = 120
FREE_TEXT = "Zorblax-7731 my secret companion"
OUTAGE_TEXT = "Quoxil-2209 typed while the database was gone"


def _records(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    lines = [line for line in path.read_text("utf-8").splitlines() if line.strip()]
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"a log line that is not JSON: {line[:300]}")
    return lines, records


def _worker_pids(records: list[dict[str, Any]]) -> set[int]:
    return {r["process"] for r in records if r.get("name") == "wellpanel.http"}


def test_two_workers_log_json_without_personal_data_and_an_outage_answers_503(
        tmp_path: Path, smtp: SMTPServer) -> None:
    pg = PostgresServer.start()  # its own server: this test stops it
    serve: subprocess.Popen[bytes] | None = None
    try:
        url = pg.url(pg.create_database())
        jobs = seed(url, 2, now=utcnow() - timedelta(minutes=1), prefix="seeded.worker")
        port = free_port()
        log_path = tmp_path / "serve.log"
        env = server_env(url, WELLPANEL_LOG_LEVEL="INFO", WELLPANEL_LOG_JSON="true",
                         WELLPANEL_NOTIFY_CHANNEL="smtp", WELLPANEL_SMTP_HOST="127.0.0.1",
                         WELLPANEL_SMTP_PORT=str(smtp.port),
                         WELLPANEL_BASE_URL="http://testserver",
                         WELLPANEL_RATE_LIMITS_ENABLED="false")
        with open(log_path, "ab") as log:
            serve = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port",
                 str(port), "--workers", "2"], cwd=PROJECT_ROOT, env=env, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/healthz", serve, 90)

        secrets: dict[str, str] = {}
        with httpx.Client(base_url=base, timeout=30) as client:
            for email in EMAILS:
                person = join(client, smtp, email)  # type: ignore[arg-type]
                consent(client, person)  # type: ignore[arg-type]
                smtp.wait_for(email, 2)  # the link, then the signed copy (sent after the answer)
                secrets[f"session of {email}"] = person.token
                secrets[f"unused link of {email}"] = fresh_link(client, smtp, person)  # type: ignore[arg-type]
            # a free-text answer, to look for in the logs afterwards
            free_text = {"used_models": ["other"], "other_model_name": FREE_TEXT,
                         "hours_other": 2, "purposes": ["work"], "ai_framing": 1,
                         "lost_access": "no"}
            surveys = client.get("/api/v1/me/surveys", headers=person.headers).json()
            ai_usage = [x["id"] for x in surveys if x["instrument"] == "ai_usage"]
            assert ai_usage, surveys
            stored = client.post(f"/api/v1/me/surveys/{ai_usage[0]}/responses",
                                 json={"answers": free_text},
                                 headers=person.headers | {"Idempotency-Key": "w-free-text"})
            assert stored.status_code == 201, stored.text
            for job in jobs:
                secrets[f"token of {job.instance_id}"] = job.token
                stored = client.post(f"/api/v1/me/surveys/{job.instance_id}/responses",
                                     json={"answers": job.answers},
                                     headers={"Authorization": f"Bearer {job.token}",
                                              "Idempotency-Key": f"w-{job.instance_id}"})
                assert stored.status_code == 201, stored.text
            refused = client.post("/api/v1/session", json={"link": "not-a-real-link-token"})
            assert refused.status_code in (401, 404, 422)
        # Fresh connections until both workers have answered (the kernel spreads accepts).
        for _ in range(300):
            if len(_worker_pids(_records(log_path)[1])) >= 2:
                break
            httpx.get(base + "/healthz", headers={"Connection": "close"})
        _, before = _records(log_path)
        assert len(_worker_pids(before)) == 2, "both workers log their requests"
        started = [r for r in before if str(r.get("message", "")).startswith(
            "Started server process")]
        assert len({r["process"] for r in started}) >= 2  # uvicorn's own lines, JSON too

        # The database goes away mid-run.
        lines_before = len(before)
        subprocess.run(pg._cmd(str(pg.bin_dir / "pg_ctl"), "-D", str(pg.data_dir), "-m",
                               "immediate", "stop"), check=True, capture_output=True)
        statuses, bodies, slowest = [], [], 0.0
        with httpx.Client(base_url=base, timeout=30) as client:
            for i in range(OUTAGE_REQUESTS):
                t0 = time.monotonic()
                if i % 3 == 0:
                    answer = client.post(
                        f"/api/v1/me/surveys/{ai_usage[0]}/responses",
                        json={"answers": free_text | {"other_model_name": OUTAGE_TEXT}},
                        headers=person.headers | {"Idempotency-Key": f"w-outage-{i}"})
                elif i % 3 == 1:
                    answer = client.post(f"/api/v1/studies/{STUDY}/enrollments", json={
                        "email": EMAILS[0], "screening": ELIGIBLE})
                else:
                    answer = client.post("/api/v1/session", json={"link": secrets[
                        f"unused link of {EMAILS[1]}"]})
                slowest = max(slowest, time.monotonic() - t0)
                statuses.append(answer.status_code)
                bodies.append(answer.json())
        time.sleep(1)  # let the workers flush
        lines, records = _records(log_path)
    finally:
        if serve is not None and serve.poll() is None:
            os.killpg(serve.pid, signal.SIGTERM)
            try:
                serve.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(serve.pid, signal.SIGKILL)
                serve.wait(10)
        pg.stop()

    assert set(statuses) == {503}, statuses
    assert all(b["error"]["code"] == "service_unavailable" for b in bodies)
    assert slowest < 10, slowest
    during = records[lines_before:]
    problems = [r for r in during if r["level"] in ("WARNING", "ERROR", "CRITICAL")]
    requests = [r for r in during if r.get("name") == "wellpanel.http"]
    assert len(requests) == OUTAGE_REQUESTS  # one access line per request, nothing more
    # Bounded: a few lines per kind and worker, not one (or a traceback) per request.
    assert len(problems) <= 2 * 5 * 3, [r["message"] for r in problems]
    assert not any("exc_info" in r for r in during)
    for line in lines:
        assert "[parameters" not in line and "INSERT INTO" not in line, line[:300]
        assert "[email]" not in line and "/p/login/[token]" not in line  # nothing to mask
        for email in EMAILS:
            assert email.split("@")[0] not in line, f"an address in: {line[:300]}"
        assert "seeded.worker" not in line
        assert "Zorblax" not in line and "Quoxil" not in line, f"an answer in: {line[:300]}"
        for what, value in secrets.items():
            assert value not in line, f"{what} in: {line[:300]}"


def test_the_scheduler_logs_json_with_bounded_repetition_while_the_database_is_gone(
        tmp_path: Path) -> None:
    """`wellpanel scheduler run` ticking every second against a database nobody answers: every
    line is JSON, and each kind of failure is written at most 5 times in the minute."""
    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/gone"
    env = server_env(url, WELLPANEL_LOG_LEVEL="INFO", WELLPANEL_LOG_JSON="true")
    log_path = tmp_path / "scheduler.log"
    with open(log_path, "ab") as log:
        scheduler = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "scheduler", "run", "--interval", "1"],
            cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
    try:
        time.sleep(10)  # about ten ticks, each failing in three places
    finally:
        os.killpg(scheduler.pid, signal.SIGTERM)
        scheduler.wait(20)
    _, records = _records(log_path)
    errors = [r for r in records if r["level"] == "ERROR"]
    kinds = {(r["name"], r["message"]) for r in errors}
    per_kind = [sum(1 for r in errors if (r["name"], r["message"]) == k) for k in kinds]
    assert kinds and max(per_kind) == 5, per_kind  # ticks went on; lines stopped at five
    assert all("[parameters" not in json.dumps(r) for r in records)

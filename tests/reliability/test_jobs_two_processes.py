"""Exports shared by two real API processes on one PostgreSQL (#15 part 3).

Found: a restarting worker marked every running export failed and deleted its folder, killing
a sibling's live export, and rate-limit counters lived in each process. Now an export is a job
claimed under a lease on the real clock, kept by its holder's heartbeat and taken over only once
that lease has run out; rate limits count in the database.

The servers are real `uvicorn app.asgi:app` processes (tests/reliability/harness.py) with a 2 s
lease. To keep an export mid-way for as long as the test needs, the test holds an ACCESS
EXCLUSIVE lock on survey_responses (the export's stream blocks on it; the jobs table, the
heartbeat and the API stay free); nothing in the servers is mocked or slowed. The tests wait for
states with deadlines and never assert how long anything took. The export test runs on
PostgreSQL only: SQLite readers cannot be held by a lock (tests/app/export/test_export_api.py and
tests/app/jobs cover SQLite in one process); the rate-limit test runs on both.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from app.audit.models import AuditEvent
from app.auth import service as auth
from app.export.models import ExportJob
from app.jobs.models import Job
from tests.app.export.seed import Seeder
from tests.conftest import app_role_url
from tests.reliability.harness import ServerProcess

pytestmark = pytest.mark.slow

API = "/api/v1/researcher/exports"
DEADLINE = 120.0
FAILURES_ALLOWED = 6


def _until(what: str, check: Callable[[], Any], deadline: float = DEADLINE) -> Any:
    end = time.monotonic() + deadline
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < end, f"still waiting for {what}"
        time.sleep(0.1)


def _job(engine: Engine, export_id: str) -> Job | None:
    with Session(engine) as s:
        return s.exec(select(Job).where(Job.subject == f"export_job:{export_id}")).first()


def _servers_env(export_dir: Path) -> dict[str, str]:
    return {"WELLPANEL_JOB_LEASE_SECONDS": "2", "WELLPANEL_JOB_POLL_SECONDS": "0.2",
            "WELLPANEL_JOB_MAX_ATTEMPTS": "5", "WELLPANEL_EXPORT_DIR": str(export_dir),
            "WELLPANEL_RATE_LIMITS_ENABLED": "true",
            "WELLPANEL_RATE_LIMIT_AUTH_FAILURES_PER_IP": f"{FAILURES_ALLOWED}/hour;100/day"}


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_an_export_outlives_its_process_and_is_finished_once_by_another(
        db_url, engine, loaded_study, tmp_path):
    seeder = Seeder(engine)
    seeder.populate(60, 3, seed=21)
    seeder.flush()
    with Session(engine) as s:
        token = auth.add_staff(s, "two-process-researcher", "researcher")
    headers = {"Authorization": f"Bearer {token}"}
    export_dir = tmp_path / "exports"
    env = _servers_env(export_dir)
    url = app_role_url(db_url)

    def server(name: str) -> ServerProcess:
        return ServerProcess(url, env_extra=env, log_path=tmp_path / f"{name}.log")

    first = server("first").start()
    second = restarted = None
    blocker = engine.connect()
    try:
        hold = blocker.begin()  # the export's response stream waits behind this lock
        blocker.exec_driver_sql("LOCK TABLE survey_responses IN ACCESS EXCLUSIVE MODE")
        started = httpx.post(first.base_url + API, json={"format": "csv"}, headers=headers,
                             timeout=30)
        assert started.status_code == 202, started.text
        export_id = started.json()["id"]
        held = _until("the first process to run the export", lambda: (
            (job := _job(engine, export_id)) is not None and job.status == "running" and job))
        holder = held.claimed_by
        assert held.attempts == 1

        # A second process starts while the first is alive (a sibling restarting): it polls
        # every 0.2 s, yet over several leases the job stays with the first, whose heartbeat
        # renews its lease; the export is not marked failed and its files stay.
        second = server("second").start()
        beats = {held.heartbeat_at}
        _until("several heartbeats of the holder", lambda: (
            beats.add((_job(engine, export_id) or held).heartbeat_at) or len(beats) >= 6))
        kept = _job(engine, export_id)
        assert kept is not None
        assert (kept.status, kept.claimed_by, kept.attempts) == ("running", holder, 1)
        view = httpx.get(f"{second.base_url}{API}/{export_id}", headers=headers, timeout=30)
        assert view.json()["status"] == "running" and view.json()["error"] is None

        # kill -9 the holder mid-export: once its lease has run out the second process takes
        # the export over (a second attempt) and, with the table free again, finishes it.
        first.kill()
        taken = _until("the second process to take the export over", lambda: (
            (job := _job(engine, export_id)) is not None and job.claimed_by != holder
            and job.status == "running" and job))
        assert taken.attempts == 2

        # The killed process comes back while the second holds the export: it leaves it alone.
        restarted = server("restarted").start()
        beats = {taken.heartbeat_at}
        _until("heartbeats of the second process", lambda: (
            beats.add((_job(engine, export_id) or taken).heartbeat_at) or len(beats) >= 4))
        still = _job(engine, export_id)
        assert still is not None
        assert (still.status, still.claimed_by, still.attempts) == (
            "running", taken.claimed_by, 2)

        # Now the second restarts in turn (SIGTERM: a normal stop) while its export waits on
        # the table: it gives the export back as it stops (the attempt not counted), and the
        # restarted first process takes it over and, with the table free again, finishes it.
        second.stop()
        last = _until("the restarted process to take the export over", lambda: (
            (job := _job(engine, export_id)) is not None and job.status == "running"
            and job.claimed_by not in (holder, taken.claimed_by) and job))
        assert last.attempts == 2
        hold.rollback()
        done = _until("the export to finish", lambda: (
            (body := httpx.get(f"{restarted.base_url}{API}/{export_id}", headers=headers,
                               timeout=30).json())["status"] in ("done", "failed") and body))
        assert done["status"] == "done", done["error"]
        download = httpx.get(f"{restarted.base_url}{API}/{export_id}/download",
                             headers=headers, timeout=30)
        assert download.status_code == 200
        assert hashlib.sha256(download.content).hexdigest() == done["archive_sha256"]
        finished = _job(engine, export_id)
        assert finished is not None
        assert (finished.status, finished.attempts) == ("done", 2)
        assert finished.claimed_by == last.claimed_by

        # Exactly one result: one zip (the recorded one), no work directory or partial zip of
        # the killed or stopped attempts, one export record done, one export in the ledger.
        with Session(engine) as s:
            record = s.get(ExportJob, export_id)
            exports = s.exec(select(AuditEvent).where(AuditEvent.action == "export.panel")).all()
        assert record is not None and record.status == "done" and record.archive_path
        assert sorted(p.name for p in export_dir.iterdir()) == [Path(record.archive_path).name]
        assert len(exports) == 1

    finally:
        blocker.close()
        for process in (first, second, restarted):
            if process is not None:
                process.stop()


def test_rate_limits_are_counted_across_two_server_processes(db_url, engine, loaded_study,
                                                               tmp_path):
    """Failed authentications at either process count together; a valid credential from the
    same address still passes at both; a restarted process remembers (SQLite and
    PostgreSQL)."""
    with Session(engine) as s:
        token = auth.add_staff(s, "rate-limited-neighbour", "researcher")
    valid = {"Authorization": f"Bearer {token}"}
    env = _servers_env(tmp_path / "exports")
    url = app_role_url(db_url)
    servers = [ServerProcess(url, env_extra=env, log_path=tmp_path / f"{n}.log")
               for n in ("one", "two")]
    restarted = None
    try:
        for srv in servers:
            srv.start()
        guess = {"Authorization": "Bearer a-guessed-token"}
        answers = [httpx.get(f"{srv.base_url}/api/v1/me", headers=guess, timeout=30).status_code
                   for srv in servers * (FAILURES_ALLOWED // 2)]
        assert answers == [401] * FAILURES_ALLOWED
        for srv in servers:
            refused = httpx.get(f"{srv.base_url}/api/v1/me", headers=guess, timeout=30)
            assert refused.status_code == 429
            assert refused.json()["error"]["code"] == "rate_limited"
            assert int(refused.headers["retry-after"]) >= 1
            assert httpx.get(f"{srv.base_url}{API}", headers=valid, timeout=30).status_code == 200
        servers[0].kill()
        restarted = ServerProcess(url, env_extra=env, log_path=tmp_path / "restarted.log").start()
        assert httpx.get(f"{restarted.base_url}/api/v1/me", headers=guess,
                         timeout=30).status_code == 429
    finally:
        for srv in (*servers, restarted):
            if srv is not None:
                srv.stop()

"""Shared by the reliability tests and bench/api.py: seed a study, run the real server as a
subprocess, and fire submissions at it from many concurrent clients.

Nothing here is mocked: the server is `uvicorn app.asgi:app` (or `wellpanel scheduler run`) in its
own process, talking to a real SQLite file or PostgreSQL database.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlmodel import Session, col, select

from app.config import PROJECT_ROOT

STUDY_FILE = PROJECT_ROOT / "surveys" / "studies" / "keep4o-panel.yaml"
SECRET = "reliability-secret-0123456789"
# Instruments of the baseline occasion whose answers are all small integers.
SIMPLE = {"who5": (5, 5), "phq9": (9, 3), "gad7": (7, 3)}


def answers_for(instrument: str, rng: random.Random) -> dict[str, int]:
    n_items, top = SIMPLE[instrument]
    answers = {f"{instrument}_{i}": rng.randint(0, top) for i in range(1, n_items + 1)}
    if instrument == "phq9":
        answers["phq9_9"] = 0  # the crisis path is exercised by its own tests
    return answers


@dataclass
class Job:
    """One survey to answer: who answers it, which instance, with what."""

    token: str
    instance_id: str
    instrument: str
    answers: dict[str, int]


def seed(url: str, n_participants: int, *, now: datetime, instruments: Iterable[str] = SIMPLE,
         rng: random.Random | None = None, prefix: str = "p") -> list[Job]:
    """Load the study, add consented participants with their baseline surveys open, and give
    each a magic-link token. Returns one job per open survey of the given instruments."""
    from app import migrate
    from app.auth import service as auth
    from app.db import make_engine
    from app.scheduling import service as scheduling
    from app.studies import service as studies
    from app.surveys.models import SurveyInstance
    from tests.support.factory import consented_participants

    rng = rng or random.Random(1)
    wanted = set(instruments)
    migrate.upgrade(url)
    engine = make_engine(url)
    jobs: list[Job] = []
    try:
        with Session(engine, expire_on_commit=False) as session:
            studies.load_study(session, STUDY_FILE, PROJECT_ROOT / "surveys", actor="seed")
            people = consented_participants(session, n_participants, now=now, prefix=prefix)
            tokens = {}
            for person in people:
                scheduling.plan_at_enrollment(session, person, now=now)
                tokens[person.id] = auth.issue_participant_token(
                    session, person.id, "api", timedelta(days=30), now=now)
            session.commit()
            rows = session.exec(select(SurveyInstance).where(
                SurveyInstance.status == "open",
                col(SurveyInstance.instrument_key).in_(sorted(wanted)))).all()
            for row in rows:
                jobs.append(Job(tokens[row.participant_id], row.id, row.instrument_key,
                                answers_for(row.instrument_key, rng)))
    finally:
        engine.dispose()
    rng.shuffle(jobs)
    return jobs


def server_env(url: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"WELLPANEL_DATABASE_URL": url, "WELLPANEL_ENVIRONMENT": "test",
                "WELLPANEL_SECRET_KEY": SECRET, "WELLPANEL_NOTIFY_CHANNEL": "console",
                "WELLPANEL_LOG_LEVEL": "WARNING", "WELLPANEL_LOG_JSON": "false",
                "PYTHONPATH": str(PROJECT_ROOT)})
    env.update(extra)
    return env


def free_port() -> int:
    from tests.support.pg import free_port as _free_port

    return _free_port()


@dataclass
class ServerProcess:
    """`uvicorn <app>` in a subprocess; start() waits until it answers HTTP."""

    url: str
    app: str = "app.asgi:app"
    workers: int = 1
    port: int = field(default_factory=free_port)
    log_path: Path | None = None
    env_extra: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> ServerProcess:
        cmd = [sys.executable, "-m", "uvicorn", self.app, "--host", "127.0.0.1",
               "--port", str(self.port), "--workers", str(self.workers), "--no-access-log",
               "--log-level", "warning"]
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=server_env(self.url,
                                     **self.env_extra), stdout=log, stderr=log,
                                     start_new_session=True)
        wait_http(self.base_url + "/openapi.json", self.proc, timeout)
        return self

    def kill(self) -> None:
        """SIGKILL the whole process group: no shutdown handlers, no flushing."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    @property
    def pids(self) -> list[int]:
        """The server's own pid and its workers' (for py-spy)."""
        assert self.proc is not None
        out = subprocess.run(["pgrep", "-g", str(self.proc.pid)], capture_output=True,
                             text=True).stdout
        return [int(p) for p in out.split()]


@dataclass
class SchedulerProcess:
    """`wellpanel scheduler run` in a subprocess, sending through a real SMTP server."""

    url: str
    smtp_port: int
    interval: int = 1
    log_path: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> SchedulerProcess:
        env = server_env(self.url, WELLPANEL_NOTIFY_CHANNEL="smtp",
                         WELLPANEL_SMTP_HOST="127.0.0.1", WELLPANEL_SMTP_PORT=str(self.smtp_port),
                         WELLPANEL_BASE_URL="http://testserver", WELLPANEL_LOG_LEVEL="INFO")
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "scheduler", "run", "--interval",
             str(self.interval)], cwd=PROJECT_ROOT, env=env, stdout=log, stderr=log,
            start_new_session=True)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def wait_http(url: str, proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering {url}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer within {timeout}s")
        time.sleep(0.1)


# ---- load ----------------------------------------------------------------------------------

@dataclass
class Outcome:
    job: Job
    key: str
    status: int | None  # None: no answer (connection refused or reset, timeout)
    body: dict[str, Any] | None
    seconds: float
    error: str | None = None  # the transport error's name when there was no answer
    attempts: int = 1


async def post_submission(client: httpx.AsyncClient, base_url: str, job: Job, key: str,
                          *, disconnect_retries: int = 0) -> Outcome:
    """POST one submission. With `disconnect_retries`, a connection the server closed without
    an answer (a pooled keep-alive connection closed just as it was reused) is retried with the
    same Idempotency-Key, as a real client would; the attempts are counted."""
    started = time.perf_counter()
    for attempt in range(1, disconnect_retries + 2):
        try:
            response = await client.post(
                f"{base_url}/api/v1/me/surveys/{job.instance_id}/responses",
                json={"answers": job.answers},
                headers={"Authorization": f"Bearer {job.token}", "Idempotency-Key": key})
            break
        except httpx.RemoteProtocolError as exc:
            if attempt > disconnect_retries:
                return Outcome(job, key, None, None, time.perf_counter() - started,
                               type(exc).__name__, attempt)
        except httpx.HTTPError as exc:
            return Outcome(job, key, None, None, time.perf_counter() - started,
                           type(exc).__name__, attempt)
    try:
        body = response.json()
    except ValueError:
        body = None
    return Outcome(job, key, response.status_code, body, time.perf_counter() - started,
                   attempts=attempt)


async def run_load(base_urls: list[str], jobs: list[Job], *, concurrency: int,
                   retry_share: float = 0.0, concurrent_retry_share: float = 0.0,
                   seed: int = 7, timeout: float = 60, disconnect_retries: int = 0,
                   outcomes: list[Outcome] | None = None) -> list[Outcome]:
    """Each job is posted once with its own Idempotency-Key by one of `concurrency` workers;
    a share of jobs is posted again afterwards with the same key (a retry), and a share is sent
    twice at the same moment (to different servers when there are several)."""
    rng = random.Random(seed)
    queue: asyncio.Queue[tuple[int, Job]] = asyncio.Queue()
    for i, job in enumerate(jobs):
        queue.put_nowait((i, job))
    outcomes = [] if outcomes is None else outcomes  # the caller may watch it grow
    limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency)

    async def post(client: httpx.AsyncClient, base: str, job: Job, key: str) -> Outcome:
        return await post_submission(client, base, job, key,
                                     disconnect_retries=disconnect_retries)

    async def worker(client: httpx.AsyncClient) -> None:
        while True:
            try:
                i, job = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            key = f"key-{job.instance_id}"
            base = base_urls[i % len(base_urls)]
            other = base_urls[(i + 1) % len(base_urls)]
            if rng.random() < concurrent_retry_share:
                outcomes.extend(await asyncio.gather(post(client, base, job, key),
                                                     post(client, other, job, key)))
            else:
                outcomes.append(await post(client, base, job, key))
            if rng.random() < retry_share:
                outcomes.append(await post(client, other, job, key))

    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return outcomes


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


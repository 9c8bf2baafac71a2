"""The job runner of one process: a worker thread that claims and runs jobs, and a heartbeat.

Each API process has one runner (``runner_for(app)``), started with the app and woken when a
request queues a job; between wake-ups it polls every ``job_poll_seconds``, which is also how a
job whose holder died (its lease ran out) is picked up. It runs one job at a time with the
handler its domain registered for the job's kind (``register``). A second thread renews the
lease of what this process holds every quarter of ``job_lease_seconds`` and tells a running
handler when its job was lost (``JobContext.check`` raises), so it stops and discards its work.

Handlers: ``run(ctx)`` does the work and finishes with ``ctx.complete(session)`` in the
transaction that stores the result; ``failed(session, ctx, message, final)`` records a failure
in the domain's own table (``final`` False: it will be retried). A handler raises ``JobFailed``
for a failure no retry can fix; any other exception is retried up to ``job_max_attempts``.
A process that stops mid-job gives the job back (queued at once, the attempt not counted).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from app.config import Settings
from app.jobs import service
from app.jobs.service import Claim, LeaseLost

log = logging.getLogger("wellpanel.jobs")

IDLE_POLL_FLOOR = 0.05
STOPPED = "interrupted: the server stopped; another process will run this job"


class JobFailed(Exception):
    """A failure no retry can fix; ``message`` is shown to the person who asked for the job."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class JobInterrupted(Exception):
    """This process is stopping: the job goes back to the queue for another process."""


@dataclass(frozen=True)
class JobKind:
    run: Callable[[JobContext], None]
    failed: Callable[[Session, JobContext, str, bool], None]


_KINDS: dict[str, JobKind] = {}


def register(kind: str, run: Callable[[JobContext], None],
             failed: Callable[[Session, JobContext, str, bool], None]) -> None:
    """A domain declares how to run its kind of job (at import)."""
    _KINDS[kind] = JobKind(run, failed)


class JobContext:
    """What a handler gets: the claim, the app's engine, settings and clock, and a check to
    call between steps."""

    def __init__(self, claim: Claim, runner: JobRunner) -> None:
        self.claim = claim
        self.runner = runner
        self.engine: Engine = runner.engine
        self.settings: Settings = runner.settings
        self.clock: Callable[[], datetime] = runner.clock
        self.lost = threading.Event()

    @property
    def id(self) -> str:
        return self.claim.id

    @property
    def params(self) -> dict[str, Any]:
        return self.claim.params

    @property
    def worker_id(self) -> str:
        return self.runner.worker_id

    def check(self) -> None:
        """Raise when the job must stop: LeaseLost (another process has it now) or
        JobInterrupted (this process is stopping)."""
        if self.lost.is_set():
            raise LeaseLost(self.id)
        if self.runner.stopping:
            raise JobInterrupted(self.id)

    def complete(self, session: Session) -> None:
        """Mark the job done in the session that stores its result (LeaseLost if it is no
        longer ours: roll back and discard the result)."""
        service.complete(session, self.claim)


class JobRunner:
    """One worker thread and one heartbeat thread for a process (an app)."""

    def __init__(self, engine: Engine, settings: Settings, clock: Callable[[], datetime]) -> None:
        self.engine = engine
        self.settings = settings
        self.clock = clock
        self.worker_id = uuid.uuid4().hex
        self.lease = timedelta(seconds=settings.job_lease_seconds)
        self.poll = max(settings.job_poll_seconds, IDLE_POLL_FLOOR)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._beat_stop = threading.Event()  # the heartbeat outlives the worker while stopping
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._current: JobContext | None = None
        self._reserved: set[str] = set()
        self._idle = threading.Condition()
        self._busy = False
        # The app disposes its engine when it shuts down (and tests when they drop the
        # database): the runner stops with it instead of polling a database that is gone.
        event.listen(engine, "engine_disposed", self._engine_disposed)

    def _engine_disposed(self, _engine: Engine) -> None:
        self._stop.set()
        self._beat_stop.set()
        self._wake.set()

    # -- control --

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def start(self) -> None:
        with self._lock:
            if self._threads and all(t.is_alive() for t in self._threads):
                return
            self._stop.clear()
            self._beat_stop.clear()
            self._threads = [
                threading.Thread(target=self._loop, name="wellpanel-jobs", daemon=True),
                threading.Thread(target=self._heartbeat_loop, name="wellpanel-jobs-heartbeat",
                                 daemon=True)]
            for thread in self._threads:
                thread.start()

    def wake(self) -> None:
        """Look for work now (starts the threads if they are not running)."""
        self.start()
        self._wake.set()

    def reserve(self, job_id: str) -> None:
        """A job queued for this process only: the heartbeat keeps its reservation."""
        with self._lock:
            self._reserved.add(job_id)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop: a running handler is asked to give its job back at its next check. One that
        does not reach a check within ``timeout`` seconds (it waits on the database, say) has
        its job given back for it: the claim token fences whatever the stuck thread still
        tries to record, and its files are its own, so another process may start at once."""
        self._stop.set()
        self._wake.set()
        with self._lock:
            threads, self._threads = self._threads, []
        worker = threads[0] if threads else None
        beats = threads[1] if len(threads) > 1 else None
        if worker is not None:  # the heartbeat keeps the lease meanwhile
            worker.join(timeout)
        stuck = self._current
        if stuck is not None and worker is not None and worker.is_alive():
            stuck.lost.set()
            self._settle(stuck, _KINDS[stuck.claim.kind], STOPPED, release=True)
        self._beat_stop.set()
        if beats is not None:
            beats.join(timeout)

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """True once no job is claimable by this process and none runs (for tests)."""
        self.wake()
        with self._idle:
            return self._idle.wait_for(
                lambda: not self._busy and not self._wake.is_set()
                and not service.has_work(self.engine, self.worker_id, _KINDS), timeout)

    # -- the worker thread --

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                ran = self.run_one()
            except SQLAlchemyError:  # the database is away: try again at the next poll (one
                # short line; the log's repeat limiter bounds them through a long outage)
                log.warning("could not look for jobs: database unavailable")
                ran = False
            with self._idle:
                self._idle.notify_all()
            if not ran:
                self._wake.wait(self.poll)

    def run_one(self) -> bool:
        """Claim and run one job; False when there was none."""
        if not service.has_work(self.engine, self.worker_id, _KINDS):
            return False
        claim = service.claim(self.engine, self.worker_id, _KINDS, self.lease)
        if claim is None:
            return False
        with self._idle:
            self._busy = True
        try:
            self._execute(claim)
        finally:
            with self._lock:
                self._reserved.discard(claim.id)
            with self._idle:
                self._busy = False
                self._idle.notify_all()
        return True

    def _execute(self, claim: Claim) -> None:
        ctx = JobContext(claim, self)
        kind = _KINDS[claim.kind]
        self._current = ctx
        extra = {"job_id": claim.id, "kind": claim.kind, "attempt": claim.attempt}
        try:
            if claim.attempt > claim.max_attempts:
                raise JobFailed(f"gave up after {claim.max_attempts} attempts: the process "
                                "running this job stopped each time")
            log.info("job started", extra=extra)
            kind.run(ctx)
            log.info("job done", extra=extra)
        except LeaseLost:
            log.warning("job lease lost; left to the process that took it over", extra=extra)
        except JobInterrupted:
            self._settle(ctx, kind, STOPPED, release=True)
        except JobFailed as exc:
            self._settle(ctx, kind, exc.message, retry=False)
        except Exception as exc:  # any other failure is retried; the traceback goes to the log
            log.exception("job failed", extra=extra)
            self._settle(ctx, kind, f"failed unexpectedly ({type(exc).__name__}); the server "
                         "log has the details", retry=True)
        finally:
            self._current = None

    def _settle(self, ctx: JobContext, kind: JobKind, message: str, *, retry: bool = False,
                release: bool = False) -> None:
        """Record the failure (or the release) of a job and tell its domain, in one
        transaction; nothing if the job is no longer ours."""
        try:
            with Session(self.engine) as session:
                if release:
                    service.release(session, ctx.claim)
                    final = False
                else:
                    final = service.fail(session, ctx.claim, message, retry=retry)
                kind.failed(session, ctx, message, final)
                session.commit()
        except LeaseLost:
            log.warning("job lease lost before its failure was recorded",
                        extra={"job_id": ctx.id})
        except SQLAlchemyError:  # the lease runs out and another process retries it
            log.exception("could not record the end of job %s", ctx.id)

    # -- the heartbeat thread --

    def _heartbeat_loop(self) -> None:
        interval = self.lease.total_seconds() / 4
        while not self._beat_stop.wait(interval):
            current = self._current
            with self._lock:
                held = set(self._reserved) | ({current.id} if current else set())
            if not held:
                continue
            try:
                alive = service.heartbeat(self.engine, self.worker_id, self.lease)
            except SQLAlchemyError:
                log.warning("job heartbeat failed: database unavailable")
                continue
            if current is not None and current.id not in alive:
                current.lost.set()
            with self._lock:
                self._reserved &= alive | {c for c in self._reserved if c not in held}


_RUNNER_LOCK = threading.Lock()


def runner_for(app: Any) -> JobRunner:
    """The app's job runner (created on first use)."""
    with _RUNNER_LOCK:
        runner = getattr(app.state, "job_runner", None)
        if runner is None:
            runner = JobRunner(app.state.engine, app.state.settings, app.state.clock)
            app.state.job_runner = runner
        return runner

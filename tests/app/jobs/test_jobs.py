"""The job table and runner (#15 part 3), on SQLite and PostgreSQL: claims under a lease, a
heartbeat that keeps a live holder's job, reclaim only after the lease ran out, a holder that
lost its job cannot finish it, bounded retries, jobs reserved for one process.

Leases are on the real clock (they measure processes); the tests wait for a state with a
deadline and never assert how long anything took."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import Engine, update
from sqlmodel import Session, col, select

from app.config import Settings
from app.db import make_engine, utcnow
from app.jobs import service
from app.jobs.models import Job
from app.jobs.runner import JobContext, JobFailed, JobRunner, register
from app.jobs.service import LeaseLost

KIND = "test-job"
LEASE = timedelta(seconds=1)
DEADLINE = 30.0
RUNS: dict[str, list[str]] = {}  # job id -> what the handler did, in order
GATES: dict[str, threading.Event] = {}
FAILURES: dict[str, list[tuple[str, bool]]] = {}


def _run(ctx: JobContext) -> None:
    RUNS.setdefault(ctx.id, []).append(f"attempt {ctx.claim.attempt}")
    mode = ctx.params.get("mode")
    if mode == "wait":  # until the test opens the gate, checking the job is still ours
        gate = GATES[ctx.params["gate"]]
        while not gate.wait(0.05):
            ctx.check()
    elif mode == "flaky" and ctx.claim.attempt < 2:
        raise RuntimeError("transient")
    elif mode == "broken":
        raise JobFailed("cannot be done")
    with Session(ctx.engine) as session:
        ctx.complete(session)
        session.commit()
    RUNS[ctx.id].append("completed")


def _failed(session: Session, ctx: JobContext, message: str, final: bool) -> None:
    FAILURES.setdefault(ctx.id, []).append((message, final))


register(KIND, _run, _failed)


@pytest.fixture
def app_engine(settings: Settings) -> Iterator[Engine]:
    eng = make_engine(settings.database_url)
    yield eng
    eng.dispose()


def _runner(settings: Settings, **changes: object) -> JobRunner:
    changed = Settings(**settings.model_dump() | {"job_lease_seconds": 1.0,
                                                 "job_poll_seconds": 0.1} | changes)
    return JobRunner(make_engine(changed.database_url), changed, utcnow)


def _queue(engine: Engine, **params: object) -> str:
    with Session(engine) as session:
        job = service.enqueue(session, KIND, dict(params), max_attempts=3)
        session.commit()
        return job.id


def _job(engine: Engine, job_id: str) -> Job:
    with Session(engine) as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def _until(predicate, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + DEADLINE
    while not predicate():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.05)


def test_a_live_lease_is_never_taken_and_an_expired_one_is_taken_once(app_engine):
    job_id = _queue(app_engine)
    first = service.claim(app_engine, "worker-a", [KIND], LEASE)
    assert first is not None and first.id == job_id and first.attempt == 1
    assert service.claim(app_engine, "worker-b", [KIND], LEASE) is None  # held
    assert service.heartbeat(app_engine, "worker-a", LEASE) == {job_id}
    assert service.claim(app_engine, "worker-b", [KIND], LEASE) is None  # renewed

    # worker-a stops heartbeating (killed): once its lease has run out, worker-b takes it
    _until(lambda: service.has_work(app_engine, "worker-b", [KIND]), "the lease to run out")
    second = service.claim(app_engine, "worker-b", [KIND], LEASE)
    assert second is not None and second.id == job_id and second.attempt == 2
    assert service.claim(app_engine, "worker-c", [KIND], LEASE) is None

    # the old holder can neither heartbeat, finish nor fail it any more
    assert service.heartbeat(app_engine, "worker-a", LEASE) == set()
    with Session(app_engine) as session, pytest.raises(LeaseLost):
        service.complete(session, first)
    with Session(app_engine) as session, pytest.raises(LeaseLost):
        service.fail(session, first, "late", retry=True)
    with Session(app_engine) as session:
        service.complete(session, second)
        session.commit()
    done = _job(app_engine, job_id)
    assert (done.status, done.attempts, done.claimed_by) == ("done", 2, "worker-b")


def test_failures_are_retried_a_bounded_number_of_times(app_engine):
    with Session(app_engine) as session:
        job_id = service.enqueue(session, KIND, {}, max_attempts=2).id
        session.commit()
    claim = service.claim(app_engine, "worker-a", [KIND], LEASE)
    assert claim is not None
    with Session(app_engine) as session:
        assert service.fail(session, claim, "transient", retry=True) is False
        session.commit()
    queued = _job(app_engine, job_id)
    assert queued.status == "queued" and queued.claimed_by is None
    assert queued.run_after > utcnow()  # backoff: not claimable at once
    assert service.claim(app_engine, "worker-a", [KIND], LEASE) is None
    with Session(app_engine) as session:  # the backoff has passed
        session.exec(update(Job).where(col(Job.id) == job_id)  # type: ignore[call-overload]
                     .values(run_after=utcnow() - timedelta(seconds=1)))
        session.commit()
    claim = service.claim(app_engine, "worker-b", [KIND], LEASE)
    assert claim is not None and claim.attempt == 2
    with Session(app_engine) as session:
        assert service.fail(session, claim, "transient again", retry=True) is True
        session.commit()
    failed = _job(app_engine, job_id)
    assert (failed.status, failed.error, failed.attempts) == ("failed", "transient again", 2)


def test_a_reserved_job_waits_for_its_process_until_the_reservation_runs_out(app_engine):
    with Session(app_engine) as session:
        job_id = service.enqueue(session, KIND, {}, reserve_for="worker-a", lease=LEASE).id
        session.commit()
    assert service.claim(app_engine, "worker-b", [KIND], LEASE) is None
    assert service.heartbeat(app_engine, "worker-a", LEASE) == {job_id}  # kept while alive
    _until(lambda: service.has_work(app_engine, "worker-b", [KIND]), "the reservation to end")
    claim = service.claim(app_engine, "worker-b", [KIND], LEASE)
    assert claim is not None and claim.id == job_id


def test_the_runner_heartbeat_keeps_a_long_job_and_a_second_runner_waits(settings, app_engine):
    GATES["long"] = threading.Event()
    job_id = _queue(app_engine, mode="wait", gate="long")
    holder, other = _runner(settings), _runner(settings)
    try:
        holder.wake()
        _until(lambda: _job(app_engine, job_id).status == "running", "the job to start")
        beats = {_job(app_engine, job_id).heartbeat_at}
        # several leases go by: the heartbeat renews it and the other runner never gets it
        while len(beats) < 6:
            assert other.run_one() is False
            beats.add(_job(app_engine, job_id).heartbeat_at)
            time.sleep(0.1)
        GATES["long"].set()
        _until(lambda: _job(app_engine, job_id).status == "done", "the job to finish")
    finally:
        GATES["long"].set()
        holder.stop()
    job = _job(app_engine, job_id)
    assert (job.attempts, job.claimed_by) == (1, holder.worker_id)
    assert RUNS[job_id] == ["attempt 1", "completed"]
    holder.engine.dispose()
    other.engine.dispose()


def test_a_holder_that_lost_its_job_stops_and_records_nothing(settings, app_engine):
    GATES["stolen"] = threading.Event()
    job_id = _queue(app_engine, mode="wait", gate="stolen")
    holder = _runner(settings)
    try:
        holder.wake()
        _until(lambda: _job(app_engine, job_id).status == "running", "the job to start")
        with Session(app_engine) as session:  # as if the holder had stalled past its lease and
            # another process had claimed the job in the meantime
            session.exec(update(Job).where(col(Job.id) == job_id)  # type: ignore[call-overload]
                         .values(claimed_by="worker-elsewhere", claim_token="f" * 32))
            session.commit()
        _until(lambda: not holder._busy, "the holder to give up")
    finally:
        GATES["stolen"].set()
        holder.stop()
    job = _job(app_engine, job_id)
    assert (job.status, job.claimed_by) == ("running", "worker-elsewhere")
    assert RUNS[job_id] == ["attempt 1"] and job_id not in FAILURES
    holder.engine.dispose()


def test_the_runner_retries_a_transient_failure_and_ends_a_permanent_one(settings, app_engine):
    flaky, broken = _queue(app_engine, mode="flaky"), _queue(app_engine, mode="broken")
    runner = _runner(settings)
    try:
        assert runner.run_one() and runner.run_one()  # one attempt each
        with Session(app_engine) as session:  # the retry's backoff has passed
            session.exec(update(Job).where(col(Job.id) == flaky)  # type: ignore[call-overload]
                         .values(run_after=utcnow() - timedelta(seconds=1)))
            session.commit()
        assert runner.run_one() and not runner.run_one()
    finally:
        runner.stop()
    assert _job(app_engine, flaky).status == "done" and _job(app_engine, flaky).attempts == 2
    assert RUNS[flaky] == ["attempt 1", "attempt 2", "completed"]
    assert [final for _, final in FAILURES[flaky]] == [False]
    assert _job(app_engine, broken).status == "failed"
    assert FAILURES[broken] == [("cannot be done", True)]
    with Session(app_engine) as session:
        assert len(session.exec(select(Job)).all()) == 2
    runner.engine.dispose()


def test_metrics_show_jobs_by_kind_and_status_and_expired_leases(app_engine):
    from app.ops.metrics import DatabaseCollector

    done, dead = _queue(app_engine), _queue(app_engine)
    for job_id in (done, dead):
        claim = service.claim(app_engine, f"worker-{job_id[:4]}", [KIND], LEASE)
        assert claim is not None
        if claim.id == done:
            with Session(app_engine) as session:
                service.complete(session, claim)
                session.commit()
    _queue(app_engine)
    def expired() -> int:
        with Session(app_engine) as session:
            return service.expired_leases(session)

    _until(lambda: expired() == 1, "the lease to run out")
    families = {f.name: f for f in DatabaseCollector(app_engine, utcnow).collect()}
    jobs = {tuple(s.labels.values()): s.value for s in families["wellpanel_jobs"].samples}
    assert jobs == {(KIND, "done"): 1, (KIND, "running"): 1, (KIND, "queued"): 1}
    assert families["wellpanel_jobs_expired_leases"].samples[0].value == 1

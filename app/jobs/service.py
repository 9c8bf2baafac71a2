"""Jobs in the database, claimed under a lease: what every process uses to share background work.

A process claims a job in one transaction: it picks the oldest claimable row with
``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL (two processes never wait for, or take, the
same row) and marks it with UPDATE ... RETURNING; on SQLite every write transaction begins
IMMEDIATE, which serialises claims. The claim sets
``claimed_by`` (the process's worker id), a fresh ``claim_token`` and ``lease_until`` on the real
clock: the lease measures whether a process is alive, so it never uses the study clock.

While the holder runs the job its heartbeat renews the lease (``heartbeat``); a job whose lease
ran out (the holder was killed, or hangs without a heartbeat) is claimable again, and only such a
job: a restarting process never takes a job a live sibling holds. Every later write of the holder
(``complete``, ``fail``, ``release``) names its token, so a holder that lost its lease cannot
finish a job someone else took over (``LeaseLost``); each claim counts an attempt, and a job
gives up after ``max_attempts``.

A job can be reserved for the process that queued it (``reserve_for``): a job that needs a secret
held only in that process's memory (a stable pseudonym key). The reservation is a lease too: if
that process dies, the job becomes claimable by others, who end it with a clear error.

Services never commit the caller's unit of work: ``enqueue``, ``complete``, ``fail`` and
``release`` write in the caller's session (so the domain's own result goes in the same
transaction); ``claim`` and ``heartbeat`` are the runner's own short transactions.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, func, or_, update
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col, select

from app.db import READ_ONLY, utcnow
from app.jobs.models import Job

BACKOFF_BASE = timedelta(seconds=5)
BACKOFF_MAX = timedelta(minutes=5)


class LeaseLost(Exception):
    """The job is no longer this claim's: its lease ran out and another process took it."""


@dataclass(frozen=True)
class Claim:
    """A job as its holder got it."""

    id: str
    kind: str
    params: dict[str, Any]
    subject: str | None
    attempt: int
    max_attempts: int
    token: str
    worker_id: str
    claimed_at: datetime = field(compare=False)


def enqueue(
    session: Session, kind: str, params: dict[str, Any], *, subject: str | None = None,
    max_attempts: int = 3, reserve_for: str | None = None, lease: timedelta | None = None,
    job_id: str | None = None,
) -> Job:
    """Add a queued job (the caller commits). ``reserve_for`` (a worker id) keeps it for that
    process for ``lease`` (renewed by its heartbeat)."""
    wall = utcnow()
    job = Job(id=job_id or str(uuid.uuid4()), kind=kind, subject=subject, params=params,
              max_attempts=max_attempts, run_after=wall, created_at=wall)
    if reserve_for is not None:
        job.claimed_by = reserve_for
        job.lease_until = wall + (lease or timedelta(minutes=1))
    session.add(job)
    return job


def _claimable(worker_id: str, kinds: Iterable[str], wall: datetime) -> ColumnElement[bool]:
    ready = and_(col(Job.status) == "queued", col(Job.run_after) <= wall,
                 or_(col(Job.claimed_by).is_(None), col(Job.claimed_by) == worker_id))
    expired = and_(col(Job.status).in_(("queued", "running")),
                   col(Job.lease_until).is_not(None), col(Job.lease_until) <= wall)
    return and_(col(Job.kind).in_(list(kinds)), or_(ready, expired))


def has_work(engine: Engine, worker_id: str, kinds: Iterable[str]) -> bool:
    """Whether a claim would find a job: a read that never takes SQLite's write lock, so an idle
    process polling costs no writer anything."""
    kinds = list(kinds)
    if not kinds:
        return False
    with Session(engine.execution_options(**{READ_ONLY: True})) as session:
        found = session.exec(select(Job.id).where(
            _claimable(worker_id, kinds, utcnow())).limit(1)).first()
        session.rollback()
    return found is not None


def claim(engine: Engine, worker_id: str, kinds: Iterable[str], lease: timedelta
          ) -> Claim | None:
    """Claim the oldest claimable job of ``kinds`` for ``worker_id``; None when there is none."""
    kinds = list(kinds)
    if not kinds:
        return None
    wall = utcnow()
    token = uuid.uuid4().hex
    with Session(engine) as session:
        claimable = _claimable(worker_id, kinds, wall)
        candidate = (select(Job.id).where(claimable)
                     .order_by(col(Job.created_at), col(Job.id)).limit(1))
        if session.get_bind().dialect.name == "postgresql":
            candidate = candidate.with_for_update(skip_locked=True)
        # Two statements, not UPDATE ... WHERE id IN (subquery): PostgreSQL may evaluate a
        # LIMIT 1 ... SKIP LOCKED subquery more than once and so claim more than one row.
        job_id = session.exec(candidate).first()
        row = None if job_id is None else session.exec(  # type: ignore[call-overload]
            update(Job)
            .where(col(Job.id) == job_id, claimable)
            .values(status="running", attempts=Job.attempts + 1, claimed_by=worker_id,
                    claim_token=token, lease_until=wall + lease, heartbeat_at=wall,
                    started_at=wall)
            .returning(col(Job.id), col(Job.kind), col(Job.params), col(Job.subject),
                       col(Job.attempts), col(Job.max_attempts))
        ).first()
        session.commit()
    if row is None:
        return None
    job_id, kind, params, subject, attempts, max_attempts = row
    return Claim(id=job_id, kind=kind, params=dict(params or {}), subject=subject,
                 attempt=attempts, max_attempts=max_attempts, token=token,
                 worker_id=worker_id, claimed_at=wall)


def heartbeat(engine: Engine, worker_id: str, lease: timedelta) -> set[str]:
    """Renew the lease of every job this process holds (running or reserved for it); returns
    their ids, so a job missing from it was lost."""
    wall = utcnow()
    with Session(engine) as session:
        rows = session.exec(  # type: ignore[call-overload]
            update(Job)
            .where(col(Job.claimed_by) == worker_id,
                   col(Job.status).in_(("queued", "running")))
            .values(lease_until=wall + lease, heartbeat_at=wall)
            .returning(col(Job.id))).all()
        session.commit()
    return {row[0] for row in rows}


def _mine(claim: Claim) -> ColumnElement[bool]:
    return and_(col(Job.id) == claim.id, col(Job.claim_token) == claim.token,
                col(Job.status) == "running")


def _write(session: Session, claim: Claim, **values: Any) -> None:
    result = session.exec(update(Job).where(_mine(claim)).values(**values))  # type: ignore[call-overload]
    if result.rowcount != 1:
        raise LeaseLost(claim.id)


def complete(session: Session, claim: Claim) -> None:
    """Mark the job done in the caller's transaction; LeaseLost if it is no longer ours (the
    caller rolls back and discards its result)."""
    _write(session, claim, status="done", finished_at=utcnow(), claim_token=None,
           lease_until=None, error=None)


def backoff(attempt: int) -> timedelta:
    return min(BACKOFF_BASE * (2 ** max(attempt - 1, 0)), BACKOFF_MAX)


def fail(session: Session, claim: Claim, error: str, *, retry: bool) -> bool:
    """Record a failure in the caller's transaction: queued again after a backoff when
    ``retry`` and attempts are left, else failed. Returns True when it is final."""
    wall = utcnow()
    if retry and claim.attempt < claim.max_attempts:
        _write(session, claim, status="queued", run_after=wall + backoff(claim.attempt),
               claimed_by=None, claim_token=None, lease_until=None, error=error[:2000])
        return False
    _write(session, claim, status="failed", finished_at=wall, claim_token=None,
           lease_until=None, error=error[:2000])
    return True


def release(session: Session, claim: Claim) -> None:
    """Give a job back unfinished (this process is stopping): queued at once for any process,
    the attempt not counted."""
    _write(session, claim, status="queued", attempts=Job.attempts - 1, run_after=utcnow(),
           claimed_by=None, claim_token=None, lease_until=None)


def for_subject(session: Session, subject: str) -> list[Job]:
    """The jobs about one thing (e.g. ``export_job:<id>``), oldest first."""
    return list(session.exec(select(Job).where(Job.subject == subject)
                             .order_by(col(Job.created_at))
                             .execution_options(populate_existing=True)).all())


def status_counts(session: Session) -> dict[tuple[str, str], int]:
    """How many jobs there are by (kind, status) (for /metrics)."""
    rows = session.exec(select(Job.kind, Job.status, func.count())
                        .group_by(col(Job.kind), col(Job.status))).all()
    return {(kind, status): int(n) for kind, status, n in rows}


def expired_leases(session: Session) -> int:
    """Running jobs whose lease has run out: their process died or hangs, and the next process
    that polls takes them over (a value that stays above 0 means no process is taking jobs)."""
    return int(session.exec(select(func.count()).select_from(Job).where(
        col(Job.status) == "running", col(Job.lease_until) <= utcnow())).one())

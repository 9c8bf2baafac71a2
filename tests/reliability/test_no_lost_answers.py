"""No lost and no duplicated answers under concurrent load, retries, SIGKILL and scale-out.

Every test drives the real server (`uvicorn app.asgi:app` in a subprocess) over HTTP from dozens
of concurrent clients; clients retry with the same Idempotency-Key, some at the same moment.
Afterwards the database must hold exactly one response per key, every acknowledged (2xx)
submission, one ledger row per response, and an audit chain that verifies.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from app.audit import service as audit
from app.audit.models import AuditEvent
from app.db import utcnow
from app.notify.models import OutboxMessage
from app.participants.models import Contact
from app.surveys.models import SurveyInstance, SurveyResponse
from tests.reliability.harness import (
    Job,
    Outcome,
    SchedulerProcess,
    ServerProcess,
    run_load,
    seed,
)
from tests.support.aio import run_async
from tests.support.smtp import SMTPServer

pytestmark = pytest.mark.slow


def _ok(outcome: Outcome) -> bool:
    return outcome.status is not None and 200 <= outcome.status < 300


def _stored(engine: Engine) -> dict[str, SurveyResponse]:
    with Session(engine) as session:
        rows = session.exec(select(SurveyResponse)).all()
    by_instance = {r.instance_id: r for r in rows}
    assert len(by_instance) == len(rows), "two responses for one survey"
    return by_instance


def _assert_exactly_once(engine: Engine, jobs: list[Job], outcomes: list[Outcome]) -> None:
    """One stored response per job (and its key), every 2xx among them, one ledger row each,
    and a chain that verifies."""
    stored = _stored(engine)
    assert sorted(stored) == sorted(j.instance_id for j in jobs)
    for job in jobs:
        response = stored[job.instance_id]
        assert response.idempotency_key == f"key-{job.instance_id}"
        assert response.answers == job.answers
    for outcome in outcomes:
        if _ok(outcome):
            assert outcome.body is not None
            assert outcome.body["response_id"] == stored[outcome.job.instance_id].id, outcome
    with Session(engine) as session:
        targets = session.exec(select(AuditEvent.target).where(
            AuditEvent.action == "response.store")).all()
        report = audit.verify(session)
    assert sorted(targets) == sorted(f"survey_instance:{j.instance_id}" for j in jobs)
    assert report.ok, report.first_broken


def _statuses(outcomes: list[Outcome]) -> Counter[int | None]:
    return Counter(o.status for o in outcomes)


def test_concurrent_clients_and_retries_store_each_answer_once(db_url, engine, tmp_path):
    jobs = seed(db_url, 220, now=utcnow(), prefix=f"load-{uuid.uuid4().hex[:6]}-")
    assert len(jobs) == 660  # three surveys each
    server = ServerProcess(db_url, log_path=tmp_path / "server.log").start()
    try:
        # A client retries a connection the server closed unanswered, with the same key.
        outcomes = run_async(run_load([server.base_url], jobs, concurrency=32,
                                        retry_share=0.25, concurrent_retry_share=0.1,
                                        disconnect_retries=2))
    finally:
        server.stop()
    statuses = _statuses(outcomes)
    # Every request is answered, and a retry gets the first answer back (201, replayed).
    assert set(statuses) == {201}, (statuses, Counter(o.error for o in outcomes))
    assert len(outcomes) > len(jobs) * 1.2
    replayed = [o for o in outcomes if o.body and o.body["replayed"]]
    # A resent attempt may find its first try stored (then it is a replay too).
    resent = sum(o.attempts > 1 for o in outcomes)
    assert len(outcomes) - len(jobs) <= len(replayed) <= len(outcomes) - len(jobs) + resent
    _assert_exactly_once(engine, jobs, outcomes)


def test_sigkill_mid_load_keeps_every_acknowledged_answer(db_url, engine, tmp_path):
    jobs = seed(db_url, 130, now=utcnow(), prefix=f"kill-{uuid.uuid4().hex[:6]}-")
    server = ServerProcess(db_url, log_path=tmp_path / "server.log").start()
    outcomes: list[Outcome] = []

    async def load_and_kill() -> None:
        load = asyncio.ensure_future(run_load([server.base_url], jobs, concurrency=32,
                                              retry_share=0.1, outcomes=outcomes))
        while len(outcomes) < len(jobs) // 3 and not load.done():
            await asyncio.sleep(0.005)
        server.kill()  # requests in flight lose their connection; nothing shuts down cleanly
        await load

    try:
        run_async(load_and_kill())
    finally:
        server.kill()
    acknowledged = [o for o in outcomes if _ok(o)]
    assert 0 < len(acknowledged) < len(jobs)
    assert None in _statuses(outcomes), "the kill happened after the load"
    stored = _stored(engine)
    for outcome in acknowledged:
        assert stored[outcome.job.instance_id].id == outcome.body["response_id"]

    # Clients retry what was not acknowledged, with the same keys, once the server is back.
    done = {o.job.instance_id for o in acknowledged}
    pending = [j for j in jobs if j.instance_id not in done]
    restarted = ServerProcess(db_url, log_path=tmp_path / "server.log").start()
    try:
        # A keep-alive connection the server closed as it was reused is sent again with the
        # same key, as a real client does (on a loaded machine, uvicorn's 5 s keep-alive ends).
        retried = run_async(run_load([restarted.base_url], pending, concurrency=32,
                                     disconnect_retries=2))
    finally:
        restarted.stop()
    assert set(_statuses(retried)) == {201}, {o.error for o in retried if o.status is None}
    _assert_exactly_once(engine, jobs, outcomes + retried)


def _make_an_occasion_due(session: Session, participant_ids: list[str], now) -> None:  # type: ignore[no-untyped-def]
    """Move each participant's next planned occasion to a minute ago, so a tick opens it."""
    for pid in participant_ids:
        planned = session.exec(select(SurveyInstance).where(
            SurveyInstance.participant_id == pid, SurveyInstance.status == "planned")
            .order_by(col(SurveyInstance.scheduled_at))).all()
        first = planned[0]
        for instance in planned:
            if (instance.schedule_entry, instance.wave) == (first.schedule_entry, first.wave):
                instance.scheduled_at = now - timedelta(minutes=1)
                session.add(instance)
    session.commit()


@pytest.mark.parametrize("backend", ["postgres"])
def test_two_servers_and_two_schedulers_share_one_postgres(
        db_url, engine, tmp_path: Path, smtp: SMTPServer):
    prefix = f"scale-{uuid.uuid4().hex[:6]}-"
    now = utcnow()
    jobs = seed(db_url, 150, now=now, prefix=prefix)
    with Session(engine) as session:
        contacts = session.exec(select(Contact).where(
            col(Contact.email).startswith(prefix))).all()
        invited = {c.participant_id: c.email for c in contacts[:50]}
        _make_an_occasion_due(session, list(invited), now)
    processes: list[ServerProcess | SchedulerProcess] = []
    try:
        servers = [ServerProcess(db_url, log_path=tmp_path / f"server{i}.log").start()
                   for i in range(2)]
        processes += servers
        processes += [SchedulerProcess(db_url, smtp.port, log_path=tmp_path / f"sched{i}.log")
                      .start() for i in range(2)]
        outcomes = run_async(run_load([s.base_url for s in servers], jobs, concurrency=32,
                                        retry_share=0.2, concurrent_retry_share=0.15))
        for email in invited.values():
            smtp.wait_for(email, 1, timeout=60)
        time.sleep(3)  # a few more ticks of both schedulers: nothing may be sent again
    finally:
        for process in processes:
            process.stop()
    assert set(_statuses(outcomes)) == {201}
    _assert_exactly_once(engine, jobs, outcomes)
    received = Counter(address for m in smtp.received for address in m.rcpt_tos
                       if address.startswith(prefix))
    assert received == Counter({email: 1 for email in invited.values()})
    with Session(engine) as session:
        invitations = session.exec(select(OutboxMessage).where(
            OutboxMessage.kind == "invitation",
            col(OutboxMessage.participant_id).in_(list(invited)))).all()
    assert sorted(m.participant_id for m in invitations) == sorted(invited)
    assert {m.status for m in invitations} == {"sent"}

"""Delivery that cannot strand or stall (#15 part 2), with real processes and sockets: a sender
killed mid-batch leaves its messages to the next sender once its lease runs out, and each is
still sent once; a mail server that accepts and never answers costs a bounded timeout on the
deliverer's thread, never an API request's."""

from __future__ import annotations

import os
import signal
import smtplib
import subprocess
import sys
import threading
import time
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, col, select

from app.config import PROJECT_ROOT, Settings
from app.db import utcnow
from app.main import create_app
from app.notify import service as notify
from app.notify.channels import Message, SMTPChannel
from app.notify.models import OutboxMessage
from tests.support.factory import consented_participants
from tests.support.flows import ELIGIBLE, STUDY
from tests.support.tarpit import Tarpit

LEASE = 4.0  # seconds; more than the killed sender's two timeouts together
TIMEOUT = 1.5


@pytest.fixture
def tarpit():  # type: ignore[no-untyped-def]
    server = Tarpit().start()
    yield server
    server.stop()


def _outbox(engine) -> list[OutboxMessage]:  # type: ignore[no-untyped-def]
    with Session(engine) as s:
        return list(s.exec(select(OutboxMessage).order_by(col(OutboxMessage.id))).all())


def _wait(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_sender_killed_mid_batch_leaves_messages_that_are_sent_once_after_its_lease(
        db_url, engine, session, settings, smtp, clock, loaded_study, tarpit):  # type: ignore[no-untyped-def]
    people = consented_participants(session, 5, now=clock(), prefix="killed")
    for person in people:
        notify.queue(session, person.id, "magic_link", dedupe_key=f"magic_link:{person.id}:k",
                     now=clock())
    session.commit()
    smtp.clear()
    # A real sender process claims the batch and is killed while its first message is on the
    # wire (the tarpit holds the connection; its timeouts are far from over).
    sender = subprocess.Popen(
        [sys.executable, "-m", "tests.support.sender", db_url, clock().isoformat(),
         str(tarpit.port), str(TIMEOUT), str(LEASE)], cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait(lambda: tarpit.connections >= 1, 60, "the sender to connect")
        os.kill(sender.pid, signal.SIGKILL)
    finally:
        sender.wait(10)
    assert sender.returncode == -signal.SIGKILL
    stranded = _outbox(engine)
    assert [m.status for m in stranded] == ["sending"] * 5
    assert all(m.claim_token and m.lease_until for m in stranded)

    ours = settings.model_copy(update={"outbox_lease_seconds": LEASE})
    # While the dead sender's lease lasts nobody else sends its messages...
    assert notify.deliver_due(engine, ours, SMTPChannel(ours), now=clock())["sent"] == 0
    assert smtp.received == []
    # ...after it, the next sender does, each once.
    latest = max(m.lease_until for m in stranded)  # type: ignore[type-var]
    _wait(lambda: utcnow() > latest, LEASE + 5, "the lease to run out")
    assert notify.deliver_due(engine, ours, SMTPChannel(ours), now=clock())["sent"] == 5
    assert notify.deliver_due(engine, ours, SMTPChannel(ours), now=clock())["sent"] == 0
    for i in range(5):
        received = smtp.to(f"killed{i}@example.org")
        assert len(received) == 1
        assert received[0].message["Message-ID"] and received[0].message["Date"]
    assert [m.status for m in _outbox(engine)] == ["sent"] * 5
    assert all(m.claim_token is None and m.lease_until is None for m in _outbox(engine))


def test_a_lost_lease_is_not_sent_by_its_old_holder(engine, session, settings, smtp, clock,
                                                    loaded_study):  # type: ignore[no-untyped-def]
    """A sender that was too slow (its lease ran out, another claimed the row) sends nothing."""
    person = consented_participants(session, 1, now=clock(), prefix="slow")[0]
    notify.queue(session, person.id, "magic_link", dedupe_key="magic_link:slow", now=clock())
    session.commit()
    smtp.clear()
    [first] = notify.claim_due(session, clock(), 10, token="a" * 32,
                               lease=timedelta(seconds=-1))  # already run out
    [again] = notify.claim_due(session, clock(), 10, token="b" * 32)
    assert first == again
    from app.notify.render import render_message

    old_holder = notify._deliver_one(engine, settings, SMTPChannel(settings), first, clock(),
                                     render_message, "a" * 32, timedelta(minutes=5))
    assert old_holder is None and smtp.received == []
    assert notify._deliver_one(engine, settings, SMTPChannel(settings), first, clock(),
                               render_message, "b" * 32, timedelta(minutes=5)) == "sent"
    assert len(smtp.to("slow0@example.org")) == 1


@pytest.mark.parametrize("greet", [False, True], ids=["silent", "greets-then-silent"])
def test_smtp_send_times_out_within_the_configured_timeout(greet, settings):  # type: ignore[no-untyped-def]
    server = Tarpit(greet=greet).start()
    try:
        quick = settings.model_copy(update={"smtp_port": server.port,
                                            "smtp_connect_timeout": 0.5,
                                            "smtp_send_timeout": 0.7})
        started = time.monotonic()
        with pytest.raises((TimeoutError, smtplib.SMTPServerDisconnected)):
            SMTPChannel(quick).send(Message(to="x@example.org", subject="s", body="b",
                                            language="en", key="k"))
        elapsed = time.monotonic() - started
    finally:
        server.stop()
    limit = 0.5 if not greet else 0.5 + 0.7
    assert elapsed < limit + 0.5, elapsed


def test_a_silent_mail_server_holds_up_no_request(settings, clock, loaded_study, engine,
                                                   tarpit):  # type: ignore[no-untyped-def]
    stalled: Settings = settings.model_copy(update={
        "smtp_port": tarpit.port, "smtp_connect_timeout": 1.0, "smtp_send_timeout": 1.0,
        "outbox_lease_seconds": 5.0, "rate_limits_enabled": False})
    app = create_app(stalled, clock=clock)
    with TestClient(app) as client:
        answer_times = []
        for i in range(3):
            started = time.monotonic()
            response = client.post(f"/api/v1/studies/{STUDY}/enrollments", json={
                "email": f"tarpit{i}@example.org", "screening": ELIGIBLE})
            answer_times.append(time.monotonic() - started)
            assert response.status_code == 202
        _wait(lambda: tarpit.connections >= 1, 10, "the deliverer to reach the tarpit")
        # While the deliverer waits on the silent server, other requests go through at once,
        # several at a time.
        read_times: list[float] = []

        def read() -> None:
            started = time.monotonic()
            assert client.get("/healthz").status_code == 200
            read_times.append(time.monotonic() - started)

        readers = [threading.Thread(target=read) for _ in range(4)]
        for t in readers:
            t.start()
        for t in readers:
            t.join()
        started = time.monotonic()
        assert app.state.deliverer.wait_idle(timeout=15)
        drained = time.monotonic() - started
    assert max(answer_times) < 0.9, answer_times  # less than one SMTP timeout
    assert len(read_times) == 4 and max(read_times) < 0.9, read_times
    # Each delivery run costs at most one timeout: the rest of its batch goes back at once.
    assert drained < 3 * 1.0 + 1.5, drained
    rows = _outbox(engine)
    assert len(rows) == 3 and all(m.status == "pending" for m in rows)
    failed = [m for m in rows if m.last_error]
    assert failed and all(m.last_error.startswith(("TimeoutError", "SMTPServerDisconnected"))
                          for m in failed)
    assert all(m.attempts == 0 for m in rows if not m.last_error)  # released, not counted


def test_a_silent_mail_server_costs_a_scheduler_tick_one_timeout(engine, session, settings,
                                                                  clock, loaded_study, tarpit):  # type: ignore[no-untyped-def]
    """Twenty messages (and the tick's invitations) due and a server that never answers: the
    tick waits one timeout, not one per message, and no message is left claimed."""
    from app.scheduling.dispatcher import tick

    for person in consented_participants(session, 20, now=clock(), prefix="tick"):
        notify.queue(session, person.id, "magic_link", dedupe_key=f"magic_link:{person.id}:t",
                     now=clock())
    session.commit()
    stalled = settings.model_copy(update={"smtp_port": tarpit.port, "smtp_connect_timeout": 1.0,
                                          "smtp_send_timeout": 1.0})
    started = time.monotonic()
    report = tick(engine, stalled, SMTPChannel(stalled), now=clock())
    elapsed = time.monotonic() - started
    assert elapsed < 1.0 + 2.0, elapsed
    rows = _outbox(engine)  # the twenty links, and the invitations the tick opened
    assert report.sent == 0 and report.retry == len(rows) >= 20
    assert {m.status for m in rows} == {"pending"} and sum(m.attempts for m in rows) == 1


def test_an_app_started_again_still_delivers(app, smtp) -> None:  # type: ignore[no-untyped-def]
    """A shutdown stops the deliverer; a start (a second lifespan of the same app) resumes it."""
    with TestClient(app):
        pass
    before = len(smtp.to("restarted@example.org"))  # the server outlives each test
    with TestClient(app) as client:
        response = client.post(f"/api/v1/studies/{STUDY}/enrollments", json={
            "email": "restarted@example.org", "screening": ELIGIBLE})
        assert response.status_code == 202
        assert len(smtp.wait_for("restarted@example.org", before + 1)) == before + 1


def test_the_lease_must_outlast_both_smtp_timeouts() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="OUTBOX_LEASE_SECONDS must exceed"):
        Settings(smtp_connect_timeout=10, smtp_send_timeout=30, outbox_lease_seconds=40)
    with pytest.raises(ValidationError):
        Settings(smtp_send_timeout=0)
    assert Settings(smtp_connect_timeout=10, smtp_send_timeout=30,
                    outbox_lease_seconds=41).outbox_lease_seconds == 41

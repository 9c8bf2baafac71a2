"""Delivery that cannot strand or stall (#15 part 2), with real processes and sockets: a sender
killed mid-batch leaves its messages to the next sender once its lease runs out, and each is
still sent once; a mail server that accepts and never answers costs a bounded timeout on the
deliverer's thread, never an API request's.

No test here asserts how long anything took (the machines are shared and noisy): each checks
the order of events and the state they leave, e.g. requests answered while the deliverer is
still stuck on a server whose timeout outlasts the test. bench/delivery_faults.py measures the
times."""

from __future__ import annotations

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

FOREVER = 3600.0  # seconds: a timeout or lease no check here outlasts
SENDER_TIMEOUT = 120.0  # the longest SMTP connect timeout Settings accept: also never reached
GUARD = 60.0  # seconds before a hang is reported as a failure (not a measurement)


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


def _in_thread(call):  # type: ignore[no-untyped-def]
    """Run `call` on a daemon thread; its result or exception once it ends, a failure if it is
    still running after GUARD (a hang: a timeout that was not applied)."""
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["result"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(GUARD)
    assert not thread.is_alive(), f"{call} still blocked after {GUARD} s"
    return outcome


def _sending(engine) -> list[tuple[int, str | None]]:  # type: ignore[no-untyped-def]
    """The messages claimed for sending, with their holders' claim tokens."""
    return [(m.id, m.claim_token) for m in _outbox(engine) if m.status == "sending"]


def test_sender_killed_mid_batch_leaves_messages_that_are_sent_once_after_its_lease(
        db_url, engine, session, settings, smtp, clock, loaded_study, tarpit):  # type: ignore[no-untyped-def]
    people = consented_participants(session, 5, now=clock(), prefix="killed")
    for person in people:
        notify.queue(session, person.id, "magic_link", dedupe_key=f"magic_link:{person.id}:k",
                     now=clock())
    session.commit()
    smtp.clear()
    # A real sender process claims the batch and is killed while its first message is on the
    # wire (the tarpit holds the connection; its timeouts, and its lease, are far from over).
    sender = subprocess.Popen(
        [sys.executable, "-m", "tests.support.sender", db_url, clock().isoformat(),
         str(tarpit.port), str(SENDER_TIMEOUT), str(FOREVER)], cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait(lambda: tarpit.connections >= 1 or sender.poll() is not None, GUARD,
              "the sender to connect")
    finally:
        sender.kill()  # SIGKILL mid-send (and never left behind by a failed wait)
        sender.wait(10)
    assert sender.returncode == -signal.SIGKILL, sender.stderr.read()  # type: ignore[union-attr]
    stranded = _outbox(engine)
    assert [m.status for m in stranded] == ["sending"] * 5
    assert all(m.claim_token and m.lease_until for m in stranded)

    # While the dead sender's lease lasts (an hour: it cannot run out during this check, however
    # slow the machine) nobody else sends its messages...
    assert notify.deliver_due(engine, settings, SMTPChannel(settings), now=clock())["sent"] == 0
    assert smtp.received == []
    assert _sending(engine) == [(m.id, m.claim_token) for m in stranded]  # still its claims
    # ...after it, the next sender does, each once. The lease is on the real clock: its end is
    # brought forward rather than waited for.
    with Session(engine) as s:
        for m in s.exec(select(OutboxMessage)).all():
            m.lease_until = utcnow() - timedelta(seconds=1)
            s.add(m)
        s.commit()
    assert notify.deliver_due(engine, settings, SMTPChannel(settings), now=clock())["sent"] == 5
    assert notify.deliver_due(engine, settings, SMTPChannel(settings), now=clock())["sent"] == 0
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
def test_smtp_send_gives_up_on_the_timeout_of_its_phase(greet, settings):  # type: ignore[no-untyped-def]
    """A server silent from the start is given up on by the connect timeout (TCP and greeting),
    one that greets and then falls silent by the send timeout: the other one is set to an hour,
    so the send can only have ended on the one its phase is meant to have, and it ended while
    the tarpit still held the connection open (how long it took: bench/delivery_faults.py)."""
    server = Tarpit(greet=greet).start()
    try:
        quick = settings.model_copy(update={"smtp_port": server.port,
                                            "smtp_connect_timeout": FOREVER if greet else 0.5,
                                            "smtp_send_timeout": 0.5 if greet else FOREVER})
        outcome = _in_thread(lambda: SMTPChannel(quick).send(Message(
            to="x@example.org", subject="s", body="b", language="en", key="k")))
        assert server.connections == 1 and not server.released  # the tarpit never hung up
    finally:
        server.stop()
    error = outcome.get("error")
    assert isinstance(error, (TimeoutError, smtplib.SMTPServerDisconnected)), outcome
    assert "timed out" in str(error)  # its own timeout, not the server hanging up


def test_a_silent_mail_server_holds_up_no_request(settings, clock, loaded_study, engine,
                                                   tarpit):  # type: ignore[no-untyped-def]
    """The deliverer is stuck on a server that never answers, with timeouts of an hour: every
    request made meanwhile is answered while it is still stuck, holding its claim. Once the
    server hangs up, each delivery run has cost one connection and the rest of its batch went
    back to pending at once."""
    stalled: Settings = settings.model_copy(update={
        "smtp_port": tarpit.port, "smtp_connect_timeout": FOREVER,
        "smtp_send_timeout": FOREVER, "outbox_lease_seconds": 2 * FOREVER + 1,
        "rate_limits_enabled": False})
    app = create_app(stalled, clock=clock)
    with TestClient(app) as client:
        def enroll(i: int) -> None:  # a request stuck behind the deliverer fails after GUARD
            outcome = _in_thread(lambda: client.post(f"/api/v1/studies/{STUDY}/enrollments",
                                                     json={"email": f"tarpit{i}@example.org",
                                                           "screening": ELIGIBLE}))
            assert outcome["result"].status_code == 202, outcome

        enroll(0)
        _wait(lambda: tarpit.connections >= 1, GUARD, "the deliverer to reach the tarpit")
        _wait(lambda: len(_sending(engine)) == 1, GUARD, "the deliverer's claim")
        stuck = _sending(engine)

        def still_stuck() -> bool:
            return (not app.state.deliverer.wait_idle(timeout=0) and tarpit.connections == 1
                    and _sending(engine) == stuck)

        # While the deliverer waits on the silent server, enrollments are answered...
        for i in (1, 2):
            enroll(i)
            assert still_stuck()
        # ...and so are reads, several at a time.
        reads: list[int] = []
        readers = [threading.Thread(target=lambda: reads.append(client.get("/healthz")
                                                                .status_code))
                   for _ in range(4)]
        for t in readers:
            t.start()
        for t in readers:
            t.join(GUARD)
        assert reads == [200] * 4  # all answered (a reader still blocked has not appended)
        assert still_stuck()
        tarpit.release()  # the server hangs up: the stuck run, and each run after it, fail
        assert app.state.deliverer.wait_idle(timeout=GUARD)
    rows = _outbox(engine)
    assert len(rows) == 3 and all(m.status == "pending" for m in rows)
    failed = [m for m in rows if m.last_error]
    assert failed and all(m.last_error.startswith(("TimeoutError", "SMTPServerDisconnected"))
                          for m in failed)
    assert all(m.attempts == 0 for m in rows if not m.last_error)  # released, not counted
    # One connection per failed message: no run went on to the rest of its batch.
    assert sum(m.attempts for m in rows) == tarpit.connections


def test_a_silent_mail_server_costs_a_scheduler_tick_one_timeout(engine, session, settings,
                                                                  clock, loaded_study, tarpit):  # type: ignore[no-untyped-def]
    """Twenty messages (and the tick's invitations) due and a server that never answers: the
    tick gives up on its own timeout once, with one connection, not one per message, and no
    message is left claimed (how long the tick took: bench/delivery_faults.py)."""
    from app.scheduling.dispatcher import tick

    for person in consented_participants(session, 20, now=clock(), prefix="tick"):
        notify.queue(session, person.id, "magic_link", dedupe_key=f"magic_link:{person.id}:t",
                     now=clock())
    session.commit()
    stalled = settings.model_copy(update={"smtp_port": tarpit.port, "smtp_connect_timeout": 1.0,
                                          "smtp_send_timeout": 1.0})
    outcome = _in_thread(lambda: tick(engine, stalled, SMTPChannel(stalled), now=clock()))
    assert "error" not in outcome, outcome
    report = outcome["result"]
    # It returned while the tarpit still held its one connection open: on its own timeout.
    assert tarpit.connections == 1 and not tarpit.released
    rows = _outbox(engine)  # the twenty links, and the invitations the tick opened
    assert report.sent == 0 and report.retry == len(rows) >= 20
    assert {m.status for m in rows} == {"pending"} and sum(m.attempts for m in rows) == 1
    assert all(m.claim_token is None and m.lease_until is None for m in rows)


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


def test_a_claim_takes_at_most_its_limit_and_claims_never_share_a_row(session, clock, loaded_study):  # type: ignore[no-untyped-def]
    people = consented_participants(session, 7, now=clock(), prefix="limit")
    for person in people:
        notify.queue(session, person.id, "magic_link", dedupe_key=f"magic_link:{person.id}",
                     now=clock())
    session.commit()
    first = notify.claim_due(session, clock(), 3, token="a" * 32)
    second = notify.claim_due(session, clock(), 3, token="b" * 32)
    rest = notify.claim_due(session, clock(), 3, token="c" * 32)
    assert (len(first), len(second), len(rest)) == (3, 3, 1)
    assert not set(first) & set(second) and not (set(first) | set(second)) & set(rest)
    assert notify.claim_due(session, clock(), 3, token="d" * 32) == []

"""One SMTP connection per delivery batch (#15 part 4), counted by the local SMTP server: N
messages, one connection; a refused message does not lose the rest of the batch; a connection
the server drops is opened again once, and a second drop gives the rest back for the next run."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlmodel import Session, col, select

from app.notify import service as notify
from app.notify.channels import SMTPChannel
from app.notify.models import OutboxMessage
from tests.support.factory import consented_participants
from tests.support.smtp import SMTPServer


@pytest.fixture
def mail(smtp: SMTPServer) -> Iterator[SMTPServer]:
    """The shared server, put back to accepting everything when the test ends."""
    yield smtp
    smtp.accept_everyone()


def _queue_links(session, clock, prefix: str, n: int) -> list[str]:  # type: ignore[no-untyped-def]
    people = consented_participants(session, n, now=clock(), prefix=prefix)
    for person in people:
        notify.queue(session, person.id, "magic_link", dedupe_key=f"magic_link:{person.id}:b",
                     now=clock())
    session.commit()
    return [f"{prefix}{i}@example.org" for i in range(n)]


def _statuses(engine) -> list[str]:  # type: ignore[no-untyped-def]
    with Session(engine) as s:
        return list(s.exec(select(OutboxMessage.status).order_by(col(OutboxMessage.id))).all())


def test_a_batch_of_messages_goes_over_one_connection(engine, session, settings, mail, clock,
                                                      backend, loaded_study):  # type: ignore[no-untyped-def]
    addresses = _queue_links(session, clock, f"batch-{backend}-", 12)
    before = mail.connections
    counts = notify.deliver_due(engine, settings, SMTPChannel(settings), now=clock())
    assert counts["sent"] == 12
    assert mail.connections - before == 1
    assert all(len(mail.to(a)) == 1 for a in addresses)
    assert notify.deliver_due(engine, settings, SMTPChannel(settings), now=clock())["sent"] == 0
    assert mail.connections - before == 1  # nothing due: no connection at all


def test_a_refused_message_does_not_lose_the_rest_of_the_batch(engine, session, settings, mail,
                                                               clock, backend, loaded_study):  # type: ignore[no-untyped-def]
    addresses = _queue_links(session, clock, f"busy-{backend}-", 5)
    mail.refuse(addresses[1], "450 4.2.1 Mailbox busy, try later")
    mail.refuse(addresses[3], "451 4.3.0 Try again later", at="DATA")
    before = mail.connections
    counts = notify.deliver_due(engine, settings, SMTPChannel(settings), now=clock())
    assert (counts["sent"], counts["retry"]) == (3, 2)
    assert mail.connections - before == 1  # the refusals left the connection in use
    assert _statuses(engine) == ["sent", "pending", "sent", "pending", "sent"]
    mail.accept_everyone()
    clock.advance(minutes=2)  # past the first backoff: a 4xx is retried
    assert notify.deliver_due(engine, settings, SMTPChannel(settings), now=clock())["sent"] == 2
    assert all(len(mail.to(a)) == 1 for a in addresses)


def test_a_dropped_connection_is_opened_again_once(engine, session, settings, mail, clock,
                                                   backend, loaded_study):  # type: ignore[no-untyped-def]
    addresses = _queue_links(session, clock, f"drop-{backend}-", 7)
    mail.limit_messages_per_connection(3)  # then 421 and the connection closes
    before = mail.connections
    counts = notify.deliver_due(engine, settings, SMTPChannel(settings), now=clock())
    # 3 on the first connection, 3 on the second; the second drop ends the batch: the 7th
    # counts one attempt (pending again, its error recorded), nothing is lost or sent twice.
    assert (counts["sent"], counts["retry"]) == (6, 1)
    assert mail.connections - before == 2
    assert _statuses(engine) == ["sent"] * 6 + ["pending"]
    with Session(engine) as s:
        last = s.exec(select(OutboxMessage).where(OutboxMessage.status == "pending")).one()
        assert last.last_error and last.last_error.startswith("SMTPServerDisconnected")
        assert "@" not in last.last_error
    clock.advance(minutes=2)
    assert notify.deliver_due(engine, settings, SMTPChannel(settings), now=clock())["sent"] == 1
    assert all(len(mail.to(a)) == 1 for a in addresses)
    assert notify.deliver_due(engine, settings, SMTPChannel(settings),
                              now=clock() + timedelta(hours=1))["sent"] == 0

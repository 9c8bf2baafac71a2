"""Messages that cannot be delivered end as `failed` after the retry limit, and researchers see
them (under the IRB pseudonym, with addresses scrubbed from the error)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from aiosmtpd.controller import Controller
from sqlmodel import Session, select

from app.auth import service as auth
from app.consent.service import irb_pseudonym
from app.notify import service as notify
from app.notify.channels import SMTPChannel
from app.notify.models import OutboxMessage
from tests.support.factory import consented_participants
from tests.support.pg import free_port


class _RejectEveryone:
    """A real SMTP server that refuses every recipient and, like many, echoes the address."""

    def __init__(self, code: int) -> None:
        self.code = code

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        return f"{self.code} 5.1.1 <{address}>: Recipient address rejected: User unknown"


@pytest.fixture
def rejecting_smtp(request) -> Iterator[int]:  # type: ignore[no-untyped-def]
    port = free_port()
    controller = Controller(_RejectEveryone(getattr(request, "param", 450)),
                            hostname="127.0.0.1", port=port)
    controller.start()
    yield port
    controller.stop()


def _report(client, token: str, **params):  # type: ignore[no-untyped-def]
    return client.get("/api/v1/researcher/notifications", params=params,
                      headers={"Authorization": f"Bearer {token}"})


@pytest.mark.parametrize("rejecting_smtp", [450], indirect=True)
def test_temporary_failure_is_retried_then_ends_failed_and_is_listed_without_addresses(
        app, client, session, clock, rejecting_smtp):
    person = consented_participants(session, 1, now=clock(), prefix="bounce")[0]
    notify.queue(session, person.id, "magic_link", dedupe_key="bounce:1", now=clock())
    session.commit()
    settings = app.state.settings.model_copy(update={"smtp_port": rejecting_smtp})
    channel = SMTPChannel(settings)
    token = auth.add_staff(session, "notif-researcher", "researcher")

    first = notify.deliver_due(app.state.engine, settings, channel, now=clock())
    assert first["retry"] == 1
    pending = _report(client, token).json()["failures"]
    assert [(f["status"], f["attempts"]) for f in pending] == [("pending", 1)]

    outcomes = [first]
    for _ in range(notify.MAX_ATTEMPTS + 1):  # past the limit: nothing more is tried
        clock.advance(hours=2)  # beyond the longest backoff
        outcomes.append(notify.deliver_due(app.state.engine, settings, channel, now=clock()))
    assert sum(o["retry"] for o in outcomes) == notify.MAX_ATTEMPTS - 1
    assert sum(o["failed"] for o in outcomes) == 1 and sum(o["sent"] for o in outcomes) == 0
    with Session(app.state.engine) as s:
        row = s.exec(select(OutboxMessage).where(OutboxMessage.dedupe_key == "bounce:1")).one()
        assert (row.status, row.attempts) == ("failed", notify.MAX_ATTEMPTS)
        assert "@" not in (row.last_error or "") and "450" in (row.last_error or "")

    answer = _report(client, token)
    assert answer.status_code == 200
    body = answer.json()
    assert {"kind": "magic_link", "status": "failed", "count": 1} in body["counts"]
    [failure] = body["failures"]
    assert failure["kind"] == "magic_link" and failure["attempts"] == notify.MAX_ATTEMPTS
    assert failure["pseudonym"] == irb_pseudonym(settings.secret_key, person.id)
    assert "Recipient" in failure["last_error"]
    assert body["undeliverable"] == {"count": 0, "contacts": []}  # a 4xx is not permanent
    assert "@" not in answer.text and person.id not in answer.text


def test_notifications_route_needs_a_researcher(app, client, session):
    assert client.get("/api/v1/researcher/notifications").status_code == 401
    bad = client.get("/api/v1/researcher/notifications",
                     headers={"Authorization": "Bearer not-a-token"})
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "unauthorized"
    irb = auth.add_staff(session, "notif-irb", "irb")
    denied = _report(client, irb)
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "forbidden"
    researcher = auth.add_staff(session, "notif-r2", "researcher")
    wrong = _report(client, researcher, limit=0)
    assert wrong.status_code == 422 and "limit" in wrong.json()["error"]["message"]
    assert _report(client, researcher).json() == {
        "counts": [], "failures": [], "undeliverable": {"count": 0, "contacts": []}}


@pytest.mark.parametrize("text", [
    "{'ann@example.org': (550, b'5.1.1 <ann@example.org>: unknown')}",
    "rejected: ann.lee+tag@mail.example.co.uk, retry later",
    "mailto:ann%40example.org failed",
    "RCPT TO:<ANN@EXAMPLE.ORG> 550",
])
def test_scrub_error_removes_anything_address_like(text: str) -> None:
    scrubbed = notify.scrub_error(text)
    assert scrubbed is not None and "@" not in scrubbed and "%40" not in scrubbed.lower()
    assert "ann" not in scrubbed.lower() and "<address>" in scrubbed


def test_scrub_error_keeps_the_rest() -> None:
    assert notify.scrub_error("ConnectionRefusedError: [Errno 111] refused") == (
        "ConnectionRefusedError: [Errno 111] refused")
    assert notify.scrub_error(None) is None

"""Permanent failures (#15 part 4): an SMTP 5xx to RCPT or DATA marks the address undeliverable
(time, code; no address anywhere), nothing more goes to it until the participant changes it,
and researchers see a count and a list by pseudonym in the API and on the console. A provider's
bounce reaches the same state through the webhook (shared secret, constant-time compare)."""

from __future__ import annotations

import json
import smtplib
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, col, select

from app.audit.models import AuditEvent
from app.auth import service as auth
from app.consent.service import irb_pseudonym
from app.main import create_app
from app.notify import bounces
from app.notify import service as notify
from app.notify.channels import SMTPChannel
from app.notify.models import MailContact, OutboxMessage
from app.participants.models import Contact
from tests.support.factory import consented_participants
from tests.support.smtp import SMTPServer

SECRET = "webhook-secret-0123456789"


@pytest.fixture
def mail(smtp: SMTPServer) -> Iterator[SMTPServer]:
    yield smtp
    smtp.accept_everyone()


def _queue(session, people, tag: str, now) -> None:  # type: ignore[no-untyped-def]
    for person in people:
        notify.queue(session, person.id, "magic_link", dedupe_key=f"magic_link:{person.id}:{tag}",
                     now=now)
    session.commit()


def _outbox(engine, participant_id: str) -> list[OutboxMessage]:  # type: ignore[no-untyped-def]
    with Session(engine) as s:
        return list(s.exec(select(OutboxMessage).where(
            OutboxMessage.participant_id == participant_id).order_by(
            col(OutboxMessage.id))).all())


def _report(client, token: str):  # type: ignore[no-untyped-def]
    answer = client.get("/api/v1/researcher/notifications",
                        headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200
    return answer


@pytest.mark.parametrize("at,reply", [("RCPT", "550 5.1.1 <{a}>: User unknown"),
                                      ("DATA", "554 5.7.1 Message to {a} rejected")])
def test_a_5xx_marks_the_address_undeliverable_and_stops_mail_to_it(
        app, client, engine, session, clock, mail, backend, log_stream, at, reply):  # type: ignore[no-untyped-def]
    prefix = f"perm-{at.lower()}-{backend}-"
    people = consented_participants(session, 3, now=clock(), prefix=prefix)
    bad = f"{prefix}1@example.org"
    mail.refuse(bad, reply.format(a=bad), at=at)
    _queue(session, people, "1", clock())
    before = mail.connections
    settings = app.state.settings
    counts = notify.deliver_due(engine, settings, SMTPChannel(settings), now=clock())
    assert (counts["sent"], counts["failed"], counts["retry"]) == (2, 1, 0)
    assert mail.connections - before == 1  # the others went on over the same connection
    [message] = _outbox(engine, people[1].id)
    assert (message.status, message.attempts) == ("failed", 1)  # no retries of a 5xx
    assert "@" not in (message.last_error or "")
    code = int(reply[:3])
    with Session(engine) as s:
        row = s.get(MailContact, people[1].id)
        assert row is not None
        assert (row.undeliverable_at, row.undeliverable_code, row.undeliverable_source) == (
            clock(), code, "smtp")
        assert row.undeliverable_address and "@" not in row.undeliverable_address
        [event] = s.exec(select(AuditEvent).where(
            AuditEvent.action == "participant.email_undeliverable")).all()
        assert event.target == f"participant:{people[1].id}"
        assert event.details == {"code": code, "source": "smtp"}
    logged = log_stream.getvalue()
    assert "undeliverable" in logged and "@" not in logged and prefix not in logged

    # Researchers: a count and the pseudonym, in the API and on the console.
    token = auth.add_staff(session, f"undeliv-{at.lower()}", "researcher")
    answer = _report(client, token)
    assert answer.json()["undeliverable"] == {"count": 1, "contacts": [{
        "pseudonym": irb_pseudonym(settings.secret_key, people[1].id),
        "since": clock().isoformat().replace("+00:00", "Z"), "code": code, "source": "smtp"}]}
    assert "@" not in answer.text
    web = TestClient(app)
    page = web.get("/staff/login")
    csrf = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    web.post("/staff/login", data={"csrf_token": csrf, "token": token})
    console = web.get("/staff/researcher/notifications")
    assert "Undeliverable addresses (1)" in console.text and 'id="undeliverable"' in console.text
    assert irb_pseudonym(settings.secret_key, people[1].id) in console.text
    assert "@example.org" not in console.text

    # Nothing more goes to that address: the next message is cancelled, not attempted.
    mail.accept_everyone()
    _queue(session, people[1:2], "2", clock())
    assert notify.deliver_due(engine, settings, SMTPChannel(settings), now=clock()) == {
        "sent": 0, "failed": 0, "retry": 0, "cancelled": 1}
    assert mail.to(bad) == []
    # Until the participant changes it: the new address gets mail, the list is empty again.
    with Session(engine) as s:
        contact = s.get(Contact, people[1].id)
        assert contact is not None
        contact.email = f"{prefix}new@example.org"
        s.add(contact)
        s.commit()
    _queue(session, people[1:2], "3", clock())
    assert notify.deliver_due(engine, settings, SMTPChannel(settings), now=clock())["sent"] == 1
    assert len(mail.to(f"{prefix}new@example.org")) == 1
    assert _report(client, token).json()["undeliverable"] == {"count": 0, "contacts": []}


def test_a_4xx_stays_a_retry_and_marks_nothing(app, engine, session, clock, mail, backend):  # type: ignore[no-untyped-def]
    prefix = f"temp-{backend}-"
    [person] = consented_participants(session, 1, now=clock(), prefix=prefix)
    mail.refuse(f"{prefix}0@example.org", "452 4.2.2 Mailbox full")
    _queue(session, [person], "1", clock())
    settings = app.state.settings
    assert notify.deliver_due(engine, settings, SMTPChannel(settings), now=clock())["retry"] == 1
    with Session(engine) as s:
        assert s.get(MailContact, person.id) is None


@pytest.mark.parametrize("exc,code", [
    (smtplib.SMTPRecipientsRefused({"a@example.org": (550, b"unknown")}), 550),
    (smtplib.SMTPRecipientsRefused({"a@example.org": (451, b"later")}), None),
    (smtplib.SMTPDataError(554, b"rejected"), 554),
    (smtplib.SMTPDataError(452, b"full"), None),
    # a 5xx to MAIL FROM is about our sender address, not the participant's
    (smtplib.SMTPSenderRefused(550, b"sender rejected", "study@wellpanel.invalid"), None),
    (TimeoutError("timed out"), None),
])
def test_only_a_5xx_about_the_recipient_is_permanent(exc, code) -> None:  # type: ignore[no-untyped-def]
    assert bounces.permanent_code(exc) == code


@pytest.fixture
def webhook_app(settings, clock, loaded_study):  # type: ignore[no-untyped-def]
    application = create_app(settings.model_copy(update={"bounce_webhook_secret": SECRET}),
                             clock=clock)
    with TestClient(application) as c:
        yield application, c
    application.state.engine.dispose()


def _bounce(client, body, secret: str | None = SECRET):  # type: ignore[no-untyped-def]
    headers = {} if secret is None else {"Authorization": f"Bearer {secret}"}
    return client.post("/api/v1/notify/bounces", json=body, headers=headers)


def test_the_bounce_webhook_marks_the_address_with_its_secret_only(
        webhook_app, engine, session, clock, backend):  # type: ignore[no-untyped-def]
    application, client = webhook_app
    prefix = f"hook-{backend}-"
    people = consented_participants(session, 2, now=clock(), prefix=prefix)
    body = {"email": f"{prefix}0@example.org", "type": "permanent", "code": 550,
            "provider_field": "ignored"}
    for wrong in (None, "not-the-secret", SECRET[:-1], SECRET + "x"):
        refused = _bounce(client, body, wrong)
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "unauthorized"
    with Session(engine) as s:
        assert s.get(MailContact, people[0].id) is None
    accepted = _bounce(client, body)
    assert accepted.status_code == 202 and accepted.json() == {"accepted": True}
    # Unknown addresses and transient bounces get the same answer and change nothing.
    assert _bounce(client, body | {"email": "nobody@example.org"}).json() == {"accepted": True}
    assert _bounce(client, body | {"email": f"{prefix}1@example.org",
                                   "type": "transient"}).status_code == 202
    bad = _bounce(client, {"email": f"{prefix}1@example.org", "type": "soft"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "validation_failed"
    with Session(engine) as s:
        row = s.get(MailContact, people[0].id)
        assert row is not None and (row.undeliverable_code, row.undeliverable_source) == (
            550, "webhook")
        assert s.get(MailContact, people[1].id) is None
    token = auth.add_staff(session, "hook-researcher", "researcher")
    report = _report(client, token).json()["undeliverable"]
    assert report["count"] == 1 and report["contacts"][0]["source"] == "webhook"
    assert report["contacts"][0]["pseudonym"] == irb_pseudonym(
        application.state.settings.secret_key, people[0].id)
    assert "@" not in json.dumps(report)


def test_the_bounce_webhook_is_off_without_a_secret(client):  # type: ignore[no-untyped-def]
    answer = _bounce(client, {"email": "a@example.org", "type": "permanent"})
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"

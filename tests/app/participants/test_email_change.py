"""Changing the email address: a confirmation link to the new address, and an answer that never
tells whether an address is already enrolled in the study."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlmodel import select

from app.audit.models import AuditEvent
from app.participants.models import Contact, EmailChange
from tests.support.flows import join, joined_and_consented
from tests.support.smtp import SMTPServer


def _confirm_token(smtp: SMTPServer, address: str) -> str:
    body = smtp.to(address)[-1].body
    assert "/p/login/" not in body, "a login link must never go to an unconfirmed address"
    found = re.search(r"/p/email/confirm/(\S+)", body)
    assert found, body
    return found.group(1)


def _contact(session, email: str) -> Contact | None:  # type: ignore[no-untyped-def]
    session.rollback()
    return session.exec(select(Contact).where(Contact.email == email)).first()


def test_free_address_gets_a_link_and_the_change_is_audited_without_addresses(
        client, smtp, session):
    smtp.clear()
    person = joined_and_consented(client, smtp, "old@example.org")
    answer = client.post("/api/v1/me/email", json={"email": " New@Example.org "},
                         headers=person.headers)
    assert answer.status_code == 202
    assert len(smtp.to("new@example.org")) == 1
    assert "Confirm your new email address" in smtp.to("new@example.org")[0].message["Subject"]
    token = _confirm_token(smtp, "new@example.org")
    session.rollback()
    change = session.exec(select(EmailChange)).one()
    assert change.token_hash != token and token not in change.token_hash  # hash only
    assert _contact(session, "old@example.org") is not None  # nothing changes before confirming

    done = client.post("/api/v1/me/email/confirm", json={"token": token},
                       headers=person.headers)
    assert done.status_code == 200, done.text
    assert _contact(session, "old@example.org") is None
    contact = _contact(session, "new@example.org")
    assert contact is not None and contact.verified_at is not None
    again = client.post("/api/v1/me/email/confirm", json={"token": token},
                        headers=person.headers)
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_confirmed"
    events = session.exec(select(AuditEvent)).all()
    assert [e.action for e in events].count("participant.email_change") == 1
    assert not any("@" in str((e.details, e.old_value, e.new_value, e.target)) for e in events)


def test_taken_address_gets_the_same_answer_and_only_a_neutral_notice(client, smtp, session):
    smtp.clear()
    asker = joined_and_consented(client, smtp, "asker@example.org")
    joined_and_consented(client, smtp, "owner@example.org")
    to_free = client.post("/api/v1/me/email", json={"email": "free@example.org"},
                          headers=asker.headers)
    owner_before = len(smtp.to("owner@example.org"))
    to_taken = client.post("/api/v1/me/email", json={"email": "owner@example.org"},
                           headers=asker.headers)
    assert (to_taken.status_code, to_taken.json()) == (to_free.status_code, to_free.json())
    notices = smtp.to("owner@example.org")[owner_before:]
    assert len(notices) == 1
    assert "already in use" in notices[0].body and "/p/" not in notices[0].body  # no link
    session.rollback()
    changes = session.exec(select(EmailChange)).all()
    assert [c.new_email for c in changes] == ["free@example.org"]  # none for the taken one
    # A second request within the hour does not flood the owner's mailbox.
    client.post("/api/v1/me/email", json={"email": "owner@example.org"}, headers=asker.headers)
    assert len(smtp.to("owner@example.org")) == owner_before + 1


def test_only_the_requester_can_confirm_and_routes_are_guarded(client, smtp, session):
    smtp.clear()
    asker = joined_and_consented(client, smtp, "mine@example.org")
    other = joined_and_consented(client, smtp, "other@example.org")
    client.post("/api/v1/me/email", json={"email": "mine-new@example.org"},
                headers=asker.headers)
    token = _confirm_token(smtp, "mine-new@example.org")
    stolen = client.post("/api/v1/me/email/confirm", json={"token": token},
                         headers=other.headers)
    assert stolen.status_code == 404 and stolen.json()["error"]["code"] == "not_found"
    assert _contact(session, "other@example.org") is not None
    for path, body in (("/api/v1/me/email", {"email": "x@example.org"}),
                       ("/api/v1/me/email/confirm", {"token": token})):
        assert client.post(path, json=body).status_code == 401
        assert client.post(path, json=body, headers={"Authorization": "Bearer nope"}
                           ).status_code == 401
    unconsented = join(client, smtp, "fresh@example.org")
    gated = client.post("/api/v1/me/email", json={"email": "x@example.org"},
                        headers=unconsented.headers)
    assert gated.status_code == 403 and gated.json()["error"]["code"] == "consent_required"
    bad = client.post("/api/v1/me/email", json={"email": "not an address"},
                      headers=asker.headers)
    assert bad.status_code == 422 and "email" in bad.json()["error"]["message"]
    extra = client.post("/api/v1/me/email/confirm", json={"token": token, "x": 1},
                        headers=asker.headers)
    assert extra.status_code == 422 and extra.json()["error"]["code"] == "validation_failed"
    assert client.post("/api/v1/me/email/confirm", json={"token": token},
                       headers=asker.headers).status_code == 200


def test_address_taken_before_confirming_is_a_clear_conflict(client, smtp, session):
    smtp.clear()
    person = joined_and_consented(client, smtp, "racer@example.org")
    client.post("/api/v1/me/email", json={"email": "contested@example.org"},
                headers=person.headers)
    token = _confirm_token(smtp, "contested@example.org")
    joined_and_consented(client, smtp, "contested@example.org")  # someone enrolls it meanwhile
    late = client.post("/api/v1/me/email/confirm", json={"token": token},
                       headers=person.headers)
    assert late.status_code == 409
    error = late.json()["error"]
    assert error["code"] == "email_unavailable" and "@" not in error["message"]
    assert _contact(session, "racer@example.org") is not None


def test_links_expire_and_confirming_one_cancels_the_others(client, smtp, session, clock):
    smtp.clear()
    person = joined_and_consented(client, smtp, "multi@example.org")
    client.post("/api/v1/me/email", json={"email": "one@example.org"}, headers=person.headers)
    client.post("/api/v1/me/email", json={"email": "two@example.org"}, headers=person.headers)
    one, two = _confirm_token(smtp, "one@example.org"), _confirm_token(smtp, "two@example.org")
    assert client.post("/api/v1/me/email/confirm", json={"token": two},
                       headers=person.headers).status_code == 200
    stale = client.post("/api/v1/me/email/confirm", json={"token": one},
                        headers=person.headers)
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "expired"
    client.post("/api/v1/me/email", json={"email": "three@example.org"},
                headers=person.headers)
    three = _confirm_token(smtp, "three@example.org")
    clock.advance(days=4)  # the magic link (30 days) still works, the change link (3) not
    expired = client.post("/api/v1/me/email/confirm", json={"token": three},
                          headers=person.headers)
    assert expired.status_code == 409 and expired.json()["error"]["code"] == "expired"
    assert _contact(session, "two@example.org") is not None


def test_withdrawal_erases_requested_addresses(client, smtp, session):
    smtp.clear()
    person = joined_and_consented(client, smtp, "leaving@example.org")
    client.post("/api/v1/me/email", json={"email": "leaving-new@example.org"},
                headers=person.headers)
    started = client.post("/api/v1/me/withdrawal", json={"scope": "stop_contact"},
                          headers=person.headers)
    assert started.status_code == 201, started.text
    body = started.json()
    confirmed = client.post(f"/api/v1/me/withdrawal/{body['withdrawal_id']}/confirm",
                            json={"confirm_token": body["confirm_token"]},
                            headers=person.headers)
    assert confirmed.status_code == 200, confirmed.text
    session.rollback()
    assert session.exec(select(EmailChange)).all() == []
    assert session.exec(select(Contact)).all() == []


def test_a_change_link_is_not_sent_once_the_request_is_over(app, client, smtp, session, clock):
    """The address is read at send time; a cancelled request sends nothing."""
    from app.notify import service as notify
    from app.notify.models import OutboxMessage

    smtp.clear()
    person = joined_and_consented(client, smtp, "later@example.org")
    session.rollback()
    contact = _contact(session, "later@example.org")
    assert contact is not None
    change = EmailChange(participant_id=contact.participant_id, new_email="gone@example.org",
                         token_hash="0" * 64, created_at=clock(),
                         expires_at=clock() - timedelta(minutes=1))
    session.add(change)
    session.flush()
    notify.queue(session, contact.participant_id, "email_change", dedupe_key="t:expired",
                 now=clock(), payload={"email_change_id": change.id})
    session.commit()
    counts = notify.deliver_due(app.state.engine, app.state.settings, app.state.channel,
                                now=clock())
    assert counts["cancelled"] == 1 and smtp.to("gone@example.org") == []
    session.rollback()
    message = session.exec(select(OutboxMessage).where(
        OutboxMessage.dedupe_key == "t:expired")).one()
    assert message.status == "cancelled" and "gone@" not in str(message.payload)
    assert person.email == "later@example.org"


def test_a_declined_address_is_forgotten_like_any_free_one(client, smtp, session):
    """Declining erases the address, so the study no longer knows it: a request to use it is
    answered and mailed as for any free address (a confirmation link, never the "taken" notice
    that would tell someone had joined with it)."""
    from tests.support.flows import consent

    smtp.clear()
    asker = joined_and_consented(client, smtp, "asks@example.org")
    declined = join(client, smtp, "said-no@example.org")
    consent(client, declined, decision="decline", signature_name=None, statements=[])
    assert _contact(session, "said-no@example.org") is None
    before = len(smtp.to("said-no@example.org"))
    answer = client.post("/api/v1/me/email", json={"email": "said-no@example.org"},
                         headers=asker.headers)
    assert answer.status_code == 202
    [mail] = smtp.to("said-no@example.org")[before:]
    assert "Confirm your new email address" in mail.message["Subject"]

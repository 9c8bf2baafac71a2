"""A confirmed change of address is told to the address it replaced, which can take it back
for a week: whoever held a link cannot move the contact to their own mailbox silently."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from app.audit.models import AuditEvent
from app.participants.models import Contact, EmailChange
from tests.support.flows import join, joined_and_consented, link_token
from tests.support.smtp import SMTPServer


def _changed(client, smtp: SMTPServer, person, new: str) -> None:  # type: ignore[no-untyped-def]
    assert client.post("/api/v1/me/email", json={"email": new},
                       headers=person.headers).status_code == 202
    token = re.search(r"/p/email/confirm/(\S+)", smtp.to(new)[-1].body).group(1)  # type: ignore[union-attr]
    done = client.post("/api/v1/me/email/confirm", json={"token": token}, headers=person.headers)
    assert done.status_code == 200, done.text


def _undo_link(smtp: SMTPServer, old: str) -> str:
    notice = smtp.wait_for(old, count=2)[-1]  # after the first link
    assert "/p/login/" not in notice.body  # a notice with the undo link, never a sign-in link
    found = re.search(r"https?://\S+(/p/email/undo/\S+)", notice.body)
    assert found, notice.body
    return found.group(1)


def _csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]


def _contact(session, participant_id: str) -> Contact:  # type: ignore[no-untyped-def]
    session.rollback()
    return session.get(Contact, participant_id)


def test_the_old_address_is_told_and_can_take_the_change_back(app, client, smtp, session):
    old, new = "victim@example.org", "intruder@example.org"
    person = joined_and_consented(client, smtp, old)
    _changed(client, smtp, person, new)
    pid = session.exec(select(EmailChange.participant_id)).one()
    assert _contact(session, pid).email == new
    path = _undo_link(smtp, old)

    visitor = TestClient(app, follow_redirects=False)  # no session: the old owner may have none
    page = visitor.get(path)
    assert page.status_code == 200 and 'action="/p/email/undo/' in page.text
    assert _contact(session, pid).email == new  # opening the link (a mail scanner) changes nothing
    done = visitor.post(path.split("?")[0], data={"csrf_token": _csrf(page.text)})
    assert done.status_code == 200 and 'id="email-undone"' in done.text
    assert _contact(session, pid).email == old
    # The intruder's session is over; a new sign-in link went to the old address.
    assert client.get("/api/v1/me", headers=person.headers).status_code == 401
    fresh = smtp.wait_for(old, count=3)[-1]
    assert "/p/login/" in fresh.body
    assert TestClient(app, follow_redirects=False).get(
        f"/p/login/{link_token(fresh.link())}").status_code == 303
    again = visitor.post(path.split("?")[0], data={"csrf_token": _csrf(page.text)})
    assert again.status_code == 409  # once only
    session.rollback()
    [entry] = session.exec(select(AuditEvent).where(
        AuditEvent.action == "participant.email_change_undone")).all()
    assert "@" not in str((entry.details, entry.target, entry.old_value, entry.new_value))


def test_the_undo_link_expires_after_a_week(app, client, smtp, session, clock):
    old = "slow@example.org"
    person = joined_and_consented(client, smtp, old)
    _changed(client, smtp, person, "later@example.org")
    path = _undo_link(smtp, old)
    clock.advance(days=7, seconds=1)
    visitor = TestClient(app, follow_redirects=False)
    page = visitor.get(path)
    answer = visitor.post(path.split("?")[0], data={"csrf_token": _csrf(page.text)})
    assert answer.status_code == 409 and 'id="email-undo-error"' in answer.text
    pid = session.exec(select(EmailChange.participant_id)).one()
    assert _contact(session, pid).email == "later@example.org"


@pytest.mark.parametrize("token", ["not-a-token", "x" * 43])
def test_a_made_up_undo_link_changes_nothing(app, client, smtp, session, token):
    join(client, smtp, "kept@example.org")
    visitor = TestClient(app, follow_redirects=False)
    page = visitor.get(f"/p/email/undo/{token}")
    answer = visitor.post(f"/p/email/undo/{token}", data={"csrf_token": _csrf(page.text)})
    assert answer.status_code == 404 and "text/html" in answer.headers["content-type"]
    session.rollback()
    assert session.exec(select(Contact.email)).all() == ["kept@example.org"]


def test_the_undo_needs_its_csrf_token(app, client, smtp, session):
    old = "csrf-undo@example.org"
    person = joined_and_consented(client, smtp, old)
    _changed(client, smtp, person, "csrf-new@example.org")
    path = _undo_link(smtp, old)
    answer = TestClient(app, follow_redirects=False).post(path.split("?")[0], data={})
    assert answer.status_code == 403
    pid = session.exec(select(EmailChange.participant_id)).one()
    assert _contact(session, pid).email == "csrf-new@example.org"

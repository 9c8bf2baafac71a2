"""RFC 8058 one-click unsubscribe on invitations and reminders (#15 part 4): the headers on the
local SMTP server, a one-click POST without cookie or CSRF token, the page where the person
chooses (stop email contact or pause), the audit rows, the scheduler honouring it, and a token
that opens nothing else, survives a new sign-in link and dies with a withdrawal."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, col, select

from app.audit.models import AuditEvent
from app.consent import service as consent
from app.notify import unsubscribe
from app.notify.models import MailContact, OutboxMessage
from app.participants import service as participants
from app.participants.models import Participant
from app.scheduling.dispatcher import tick
from tests.support.factory import consented_participants
from tests.support.flows import fresh_link
from tests.support.pages import signed_in_browser

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


def _tick(app, clock):  # type: ignore[no-untyped-def]
    return tick(app.state.engine, app.state.settings, app.state.channel, now=clock())


def _invited(app, session, clock, smtp, prefix, n=1):  # type: ignore[no-untyped-def]
    """n consented people and their invitations (the core survey opens a day later)."""
    people = consented_participants(session, n, now=clock(), prefix=prefix)
    _tick(app, clock)
    clock.advance(days=1)
    _tick(app, clock)
    return people, [smtp.to(f"{prefix}{i}@example.org")[-1] for i in range(n)]


def _unsubscribe_url(received) -> str:  # type: ignore[no-untyped-def]
    header = str(received.message["List-Unsubscribe"])
    found = re.fullmatch(r"<(http://testserver/p/unsubscribe/[A-Za-z0-9_-]{43})>", header)
    assert found, header
    return found.group(1)


def _path(url: str) -> str:
    return urlsplit(url).path


def _ledger(engine, participant_id: str) -> list[AuditEvent]:  # type: ignore[no-untyped-def]
    with Session(engine) as s:
        return list(s.exec(select(AuditEvent).where(
            AuditEvent.target == f"participant:{participant_id}").order_by(
            col(AuditEvent.id))).all())


def _status(engine, participant_id: str) -> str:  # type: ignore[no-untyped-def]
    with Session(engine) as s:
        row = s.get(Participant, participant_id)
        assert row is not None
        return row.status


def test_invitations_and_reminders_carry_one_click_headers_and_the_link(
        app, client, smtp, session, clock, backend, core_study):  # type: ignore[no-untyped-def]
    prefix = f"unsub-h-{backend}-"
    [person], [invitation] = _invited(app, session, clock, smtp, prefix)
    url = _unsubscribe_url(invitation)
    assert invitation.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # On the wire: one line, the address as written (no folding, no RFC 2047 encoded words,
    # which mail clients do not decode in this header).
    assert f"\r\nList-Unsubscribe: <{url}>\r\n".encode() in invitation.raw
    assert b"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in invitation.raw
    assert url in invitation.body  # the page, for people reading the message
    html = invitation.message.get_body(preferencelist=("html",)).get_content()
    assert f'href="{url}"' in html
    assert unsubscribe.token_for(app.state.settings.secret_key, person.id) in url
    assert person.id not in url
    clock.advance(hours=24)
    _tick(app, clock)
    reminder = smtp.to(f"{prefix}0@example.org")[-1]
    assert "Reminder" in reminder.message["Subject"]
    assert _unsubscribe_url(reminder) == url  # one link per person, in every message
    # Mail the person asked for carries no unsubscribe header.
    fresh_link(client, smtp, f"{prefix}0@example.org")
    asked = smtp.to(f"{prefix}0@example.org")[-1]
    assert asked.message["List-Unsubscribe"] is None and "/p/unsubscribe/" not in asked.body


def test_one_click_post_stops_email_contact_audited_and_honoured(
        app, client, smtp, session, clock, backend, core_study):  # type: ignore[no-untyped-def]
    prefix = f"unsub-1-{backend}-"
    people, invitations = _invited(app, session, clock, smtp, prefix, n=2)
    url = _unsubscribe_url(invitations[0])
    client.cookies.clear()  # as a mail client posts: no cookie, no CSRF token, no Origin
    answer = client.post(_path(url), data=ONE_CLICK)
    assert answer.status_code == 200
    assert 'id="unsubscribe-done"' in answer.text and 'id="state-stopped"' in answer.text
    with Session(app.state.engine) as s:
        row = s.get(MailContact, people[0].id)
        assert row is not None and row.email_stopped_at == clock()
    assert _status(app.state.engine, people[0].id) == "active"  # not a withdrawal, no pause
    [event] = [e for e in _ledger(app.state.engine, people[0].id)
               if e.action == "participant.email_stopped"]
    assert event.actor == "unsubscribe-link" and event.details == {"via": "one_click"}
    assert "@" not in str(event.details) + str(event.old_value) + str(event.new_value)
    # Again: nothing changes, nothing more is audited.
    assert client.post(_path(url), data=ONE_CLICK).status_code == 200
    assert len([e for e in _ledger(app.state.engine, people[0].id)
                if e.action == "participant.email_stopped"]) == 1
    # The scheduler: the 24-hour reminder goes to the other person only...
    before = len(smtp.to(f"{prefix}0@example.org"))
    clock.advance(hours=24)
    report = _tick(app, clock)
    assert report.reminders == 2 and report.sent == 1
    assert len(smtp.to(f"{prefix}0@example.org")) == before
    assert len(smtp.to(f"{prefix}1@example.org")) == 2
    with Session(app.state.engine) as s:
        kinds = s.exec(select(OutboxMessage.kind, OutboxMessage.status).where(
            OutboxMessage.participant_id == people[0].id)).all()
    assert ("reminder", "cancelled") in kinds
    # ...while a sign-in link the person asks for still goes.
    fresh_link(client, smtp, f"{prefix}0@example.org")
    assert len(smtp.to(f"{prefix}0@example.org")) == before + 1


def test_the_page_lets_the_person_choose_pause_and_one_click_then_pauses(
        app, client, smtp, session, clock, backend, core_study):  # type: ignore[no-untyped-def]
    prefix = f"unsub-p-{backend}-"
    [person], [invitation] = _invited(app, session, clock, smtp, prefix)
    path = _path(_unsubscribe_url(invitation))
    page = client.get(path)
    assert page.status_code == 200
    assert 'value="stop" checked' in page.text and 'value="pause"' in page.text  # default: stop
    assert 'id="withdraw-link"' in page.text and 'id="not-withdrawal"' in page.text
    assert _ledger(app.state.engine, person.id) == []  # opening the page changes nothing
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf is not None
    # Without the form's CSRF token the page's form changes nothing.
    assert client.post(path, data={"choice": "pause"}).status_code == 403
    assert _status(app.state.engine, person.id) == "active"
    missing = client.post(path, data={"choice": "nothing", "csrf_token": csrf.group(1)})
    assert missing.status_code == 422 and 'aria-invalid="true"' in missing.text
    chosen = client.post(path, data={"choice": "pause", "csrf_token": csrf.group(1)})
    assert chosen.status_code == 200 and 'id="unsubscribe-done"' in chosen.text
    assert _status(app.state.engine, person.id) == "paused"
    assert "participant.pause" in [e.action for e in _ledger(app.state.engine, person.id)]
    # Resumed on the study page; a mail client's one-click now applies the stored choice.
    with Session(app.state.engine) as s:
        row = s.get(Participant, person.id)
        participants.set_paused(s, row, False, now=clock())  # type: ignore[arg-type]
    client.cookies.clear()
    assert client.post(path, data=ONE_CLICK).status_code == 200
    assert _status(app.state.engine, person.id) == "paused"
    with Session(app.state.engine) as s:
        assert s.get(MailContact, person.id).email_stopped_at is None  # type: ignore[union-attr]


def test_stopped_email_can_be_turned_on_again_from_the_page(
        app, client, smtp, session, clock, backend, core_study):  # type: ignore[no-untyped-def]
    prefix = f"unsub-r-{backend}-"
    [person], [invitation] = _invited(app, session, clock, smtp, prefix)
    path = _path(_unsubscribe_url(invitation))
    client.post(path, data=ONE_CLICK)
    page = client.get(path)
    assert 'value="resume"' in page.text and 'value="stop"' not in page.text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf is not None
    again = client.post(path, data={"choice": "resume", "csrf_token": csrf.group(1)})
    assert again.status_code == 200
    actions = [e.action for e in _ledger(app.state.engine, person.id)]
    assert actions[-2:] == ["participant.email_stopped", "participant.email_resumed"]
    clock.advance(hours=24)
    assert _tick(app, clock).sent == 1  # the reminder goes again


@pytest.mark.parametrize("language,heading", [
    ("de", "E-Mails von"), ("pt-BR", "E-mails de"), ("zh-CN", "来自「")])
def test_the_page_speaks_the_participants_language(app, client, smtp, session, clock, backend,
                                                   core_study, language, heading):  # type: ignore[no-untyped-def]
    prefix = f"unsub-l-{backend}-{language.lower()}-"
    [person], [invitation] = _invited(app, session, clock, smtp, prefix)
    with Session(app.state.engine) as s:
        row = s.get(Participant, person.id)
        row.language = language  # type: ignore[union-attr]
        s.add(row)
        s.commit()
    client.cookies.clear()
    page = client.get(_path(_unsubscribe_url(invitation)), headers={"Accept-Language": "en"})
    assert page.status_code == 200 and f'<html lang="{language}">' in page.text
    assert heading in page.text


def test_the_token_opens_nothing_else_survives_new_links_and_dies_with_withdrawal(
        app, client, smtp, session, clock, backend, core_study):  # type: ignore[no-untyped-def]
    prefix = f"unsub-t-{backend}-"
    [person], [invitation] = _invited(app, session, clock, smtp, prefix)
    url = _unsubscribe_url(invitation)
    token = url.rsplit("/", 1)[1]
    assert client.post("/api/v1/session", json={"link": token}).status_code in (401, 404)
    client.cookies.clear()
    client.get(f"/p/login/{token}")
    assert client.get("/api/v1/me").status_code == 401  # not signed in by it
    fresh_link(client, smtp, f"{prefix}0@example.org")  # a new sign-in link...
    assert client.get(_path(url)).status_code == 200  # ...leaves the unsubscribe link working
    with Session(app.state.engine) as s:
        row = s.get(Participant, person.id)
        row.status = "withdrawn"  # type: ignore[union-attr]
        s.add(row)
        s.commit()
    dead = client.get(_path(url))
    assert dead.status_code == 404 and 'id="unsubscribe-invalid"' in dead.text
    client.cookies.clear()
    assert client.post(_path(url), data=ONE_CLICK).status_code == 404
    assert client.get("/p/unsubscribe/" + "A" * 43).status_code == 404
    assert consent.irb_pseudonym(app.state.settings.secret_key, person.id) not in url


def test_the_settings_page_links_back_while_email_is_stopped(app, smtp, session, clock,
                                                             backend):  # type: ignore[no-untyped-def]
    """No invitation brings the link once email is stopped: the signed-in settings page does."""
    address = f"unsub-s-{backend}@example.org"
    web = signed_in_browser(app, smtp, "de", email=address)
    assert 'id="email-stopped"' not in web.get("/p/settings").text
    with Session(app.state.engine) as s:
        [participant_id] = participants.participants_with_address(s, address)
        path = _path(unsubscribe.link_for(s, app.state.settings.secret_key, "http://testserver",
                                          participant_id, clock()))
        s.commit()
    stranger = TestClient(app)
    assert stranger.post(path, data=ONE_CLICK).status_code == 200
    page = web.get("/p/settings")
    assert 'id="email-stopped"' in page.text and f'href="{path}?lang=de"' in page.text
    assert "Einladungen und Erinnerungen per E-Mail" in page.text


def test_withdrawal_forgets_what_was_derived_from_the_address(app, client, smtp, clock,
                                                               backend):  # type: ignore[no-untyped-def]
    from app.notify import bounces
    from tests.support.flows import joined_and_consented

    address = f"unsub-w-{backend}@example.org"
    person = joined_and_consented(client, smtp, address)
    secret = app.state.settings.secret_key
    with Session(app.state.engine) as s:
        [participant_id] = participants.participants_with_address(s, address)
        path = _path(unsubscribe.link_for(s, secret, "http://testserver", participant_id,
                                          clock()))
        bounces.mark_undeliverable(s, participant_id, address, code=550, source="smtp",
                                   secret_key=secret, now=clock())
        s.commit()
    assert client.get(path).status_code == 200
    started = client.post("/api/v1/me/withdrawal", json={"scope": "stop_contact"},
                          headers=person.headers).json()
    confirmed = client.post(f"/api/v1/me/withdrawal/{started['withdrawal_id']}/confirm",
                            json={"confirm_token": started["confirm_token"]},
                            headers=person.headers)
    assert confirmed.status_code == 200, confirmed.text
    with Session(app.state.engine) as s:
        row = s.get(MailContact, participant_id)
        assert row is not None
        assert row.undeliverable_address is None and row.unsubscribe_hash is None
    assert client.get(path).status_code == 404

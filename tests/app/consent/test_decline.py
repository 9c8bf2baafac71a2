"""Declining consent erases the email address at once (audited without it) and says so; someone
who has consented cannot "decline" (that is a withdrawal), and nothing is written when refused."""

from __future__ import annotations

import html
import json
import re

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, func, select

from app.audit import service as audit
from app.audit.models import AuditEvent
from app.consent.models import ConsentRecord
from app.i18n import translator
from app.notify import service as notify
from app.participants.models import Contact, EmailChange, Participant
from app.scheduling.dispatcher import tick
from tests.support.flows import consent_body, join, joined_and_consented


def _count(session: Session, model) -> int:  # type: ignore[no-untyped-def]
    return session.exec(select(func.count()).select_from(model)).one()


def _decline(client: TestClient, person, **overrides):  # type: ignore[no-untyped-def]
    return client.post("/api/v1/me/consent", headers=person.headers, json=consent_body(
        decision="decline", signature_name=None, statements=[], **overrides))


def test_declining_erases_the_address_and_nothing_is_sent_again(app, client, smtp, session,
                                                                clock):
    smtp.clear()
    email = "declines@example.org"
    person = join(client, smtp, email)
    client.post("/api/v1/me/email", json={"email": "declines-new@example.org"},
                headers=person.headers)  # a pending address change holds an address too
    answer = _decline(client, person)
    assert answer.status_code == 201 and answer.json()["decision"] == "decline"
    session.rollback()
    participant = session.exec(select(Participant)).one()
    assert participant.status == "declined"
    assert _count(session, Contact) == 0 and _count(session, EmailChange) == 0

    rows = session.exec(select(AuditEvent).order_by(AuditEvent.id)).all()  # type: ignore[arg-type]
    assert [r.action for r in rows[-2:]] == ["consent.decline", "participant.contact_erased"]
    erased = rows[-1]
    assert erased.details == {"reason": "declined"}
    assert erased.target == f"participant:{participant.id}"
    ledger = json.dumps([[r.details, r.old_value, r.new_value, r.target] for r in rows])
    assert "@" not in ledger  # no address anywhere in the ledger
    assert audit.verify(session).ok

    # Whatever was queued for them never goes out, by the outbox or the dispatcher.
    before = len(smtp.to(email))
    notify.queue(session, participant.id, "magic_link", dedupe_key="after-decline", now=clock())
    session.commit()
    report = tick(app.state.engine, app.state.settings, app.state.channel, now=clock())
    assert report.sent == 0 and report.cancelled >= 1
    assert len(smtp.to(email)) == before and smtp.to("declines-new@example.org") == []


def test_someone_who_declined_cannot_sign_or_decline_again(client, smtp, session):
    person = join(client, smtp, "changed-mind@example.org")
    assert _decline(client, person).status_code == 201
    records, events = _count(session, ConsentRecord), _count(session, AuditEvent)
    for body in (consent_body(), consent_body(decision="decline", signature_name=None,
                                              statements=[])):
        refused = client.post("/api/v1/me/consent", json=body, headers=person.headers)
        assert refused.status_code == 409
        error = refused.json()["error"]
        assert error["code"] == "declined" and "join again" in error["message"]
    session.rollback()
    assert (_count(session, ConsentRecord), _count(session, AuditEvent)) == (records, events)
    assert session.exec(select(Participant)).one().status == "declined"


def test_declining_after_consent_is_refused_and_writes_nothing(client, smtp, session):
    person = joined_and_consented(client, smtp, "already@example.org")
    records, events = _count(session, ConsentRecord), _count(session, AuditEvent)
    refused = _decline(client, person)
    assert refused.status_code == 409
    error = refused.json()["error"]
    assert error["code"] == "already_consented" and "withdraw" in error["message"]
    session.rollback()
    assert (_count(session, ConsentRecord), _count(session, AuditEvent)) == (records, events)
    assert session.exec(select(Participant)).one().status == "active"
    assert _count(session, Contact) == 1
    log = client.get("/api/v1/me/consent/records", headers=person.headers).json()
    assert [r["decision"] for r in log] == ["consent"]


def _csrf(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "no CSRF field on the page"
    return match.group(1)


def _browser(app, smtp, email: str, lang: str) -> tuple[TestClient, str]:  # type: ignore[no-untyped-def]
    """A browser that joined in ``lang`` and opened the emailed link: (browser, consent page)."""
    web = TestClient(app)
    page = web.get(f"/join/keep4o-panel?lang={lang}")
    web.post(f"/join/keep4o-panel?lang={lang}", data={
        "csrf_token": _csrf(page.text), "lang": lang, "email": email,
        "timezone": "Europe/Berlin", "screening_adult": "yes", "screening_uses_ai_chat": "yes"})
    consent_page = web.get(smtp.to(email)[-1].link().replace("http://testserver", ""),
                           follow_redirects=True)
    assert consent_page.url.path == "/p/consent", consent_page.text
    return web, consent_page.text


def _form(page: str) -> dict[str, str]:
    return {name: re.search(rf'name="{name}" value="([^"]*)"', page).group(1)  # type: ignore[union-attr]
            for name in ("csrf_token", "version", "language")}


@pytest.mark.parametrize("lang", ["en", "de", "pt-BR", "zh-CN"])
def test_the_page_after_declining_says_the_address_is_erased(app, smtp, session, lang):
    email = f"no-thanks-{lang.lower()}@example.org"
    web, page = _browser(app, smtp, email, lang)
    assert 'value="decline"' in page
    done = web.post(f"/p/consent?lang={lang}", data={**_form(page), "decision": "decline"},
                    follow_redirects=True)
    assert done.status_code == 200 and done.url.path.startswith("/p/consent/records/")
    assert translator(lang)("copy.declined") in html.unescape(done.text)
    session.rollback()
    assert session.exec(select(Contact).where(Contact.email == email)).first() is None
    # Coming back later: their decline and what it did, not the form again.
    again = web.get("/p", follow_redirects=True)
    assert again.url.path == done.url.path
    assert translator(lang)("copy.declined") in html.unescape(again.text)
    assert 'value="decline"' not in again.text and "Email me my copy" not in again.text


def test_consent_page_offers_no_decline_after_signing(app, smtp, session):
    email = "signed-page@example.org"
    web, page = _browser(app, smtp, email, "en")
    form = _form(page)
    signed = web.post("/p/consent?lang=en", data={
        **form, "decision": "consent", "signature_name": "Page Signer",
        "statements": ["read_information", "voluntary", "data_use", "adult_confirmed"]},
        follow_redirects=False)
    assert signed.status_code == 303
    again = web.get("/p/consent?lang=en")
    assert 'value="decline"' not in again.text
    assert 'id="withdraw-instead"' in again.text and 'href="/p/withdraw"' in again.text
    records, events = _count(session, ConsentRecord), _count(session, AuditEvent)
    stale = web.post("/p/consent?lang=en", data={**form, "decision": "decline"})  # old tab
    assert stale.status_code == 409 and "withdraw from the study instead" in stale.text
    session.rollback()
    assert (_count(session, ConsentRecord), _count(session, AuditEvent)) == (records, events)
    assert session.exec(select(Participant)).one().status == "active"

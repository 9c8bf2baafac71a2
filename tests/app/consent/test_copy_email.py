"""The signed consent copy by email: a PDF attachment, in the participant's language, sent once
on signing and again on request (deduplicated, limited), never to a withdrawn participant."""

from __future__ import annotations

import io
import re

import pytest
from fastapi.testclient import TestClient
from pypdf import PdfReader
from sqlmodel import select

from app.consent import copy_mail
from app.i18n import translator
from app.notify import service as notify
from app.notify.channels import Attachment, ConsoleChannel, Message
from app.notify.models import OutboxMessage
from app.participants.models import Participant
from tests.support.flows import CONSENT_VERSION, STATEMENTS, consent_body, join
from tests.support.smtp import SMTPServer

TITLES = {"en": "Living with AI companions: a wellbeing panel",
          "de": "Leben mit KI-Begleitern: eine Wohlbefindens-Studie",
          "pt-BR": "Vivendo com companheiros de IA: um painel de bem-estar",
          "zh-CN": "与AI伙伴共同生活：一项幸福感追踪研究"}


def _copies(smtp: SMTPServer, email: str) -> list:  # type: ignore[type-arg]
    """The messages to ``email`` that carry an attachment (the consent copies)."""
    return [m for m in smtp.to(email) if list(m.message.iter_attachments())]


def _pdf_of(received) -> tuple[str, bytes]:  # type: ignore[no-untyped-def]
    [part] = list(received.message.iter_attachments())
    assert part.get_content_type() == "application/pdf"
    return part.get_filename(), part.get_content()


@pytest.mark.parametrize("lang", ["en", "de", "pt-BR", "zh-CN"])
def test_signing_emails_the_copy_as_pdf_in_the_participants_language(client, smtp, session,
                                                                      lang):
    smtp.clear()
    email = f"copy-{lang.lower()}@example.org"
    person = join(client, smtp, email, language=lang)
    doc = client.get("/api/v1/me/consent/document", headers=person.headers).json()
    signed = client.post("/api/v1/me/consent", headers=person.headers, json=consent_body(
        version=doc["version"], language=doc["language"], signature_name="Alex Example"))
    assert signed.status_code == 201, signed.text

    [copy] = _copies(smtp, email)  # sent right away, once
    t = translator(lang)
    assert copy.message["Subject"] == t("email.consent_copy.subject", study=TITLES[lang])
    assert copy.message["Content-Language"] == lang
    assert copy.body.strip().splitlines()[0] == t("email.consent_copy.body",
                                                  study=TITLES[lang]).splitlines()[0]
    assert "/p/login/" not in copy.body  # a copy to keep carries no login link
    filename, pdf = _pdf_of(copy)
    assert filename == f"consent-keep4o-panel-{doc['version']}.pdf"
    assert pdf.startswith(b"%PDF")
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    assert "Alex Example" in text and signed.json()["document_sha256"] in text.replace("\n", "")
    # The outbox holds the record id only: no address, no token, no PDF.
    session.rollback()
    [row] = session.exec(select(OutboxMessage).where(
        OutboxMessage.kind == "consent_copy")).all()
    assert row.payload == {"consent_record_id": signed.json()["id"]}
    assert row.status == "sent" and "@" not in row.dedupe_key


def test_api_resend_is_deduplicated_limited_and_only_for_own_signed_records(
        app, client, smtp, session, clock):
    smtp.clear()
    email = "again@example.org"
    person = join(client, smtp, email)
    record = client.post("/api/v1/me/consent", json=consent_body(),
                         headers=person.headers).json()
    url = f"/api/v1/me/consent/records/{record['id']}/email"
    # Right after signing the copy is on its way: asking now sends nothing more.
    first = client.post(url, headers=person.headers)
    assert first.status_code == 202 and first.json() == {"queued": False, "per_day": 3}
    assert len(_copies(smtp, email)) == 1
    clock.advance(minutes=11)
    assert client.post(url, headers=person.headers).json()["queued"] is True
    assert client.post(url, headers=person.headers).json()["queued"] is False  # double click
    assert len(_copies(smtp, email)) == 2
    clock.advance(minutes=11)
    assert client.post(url, headers=person.headers).json()["queued"] is True
    assert len(_copies(smtp, email)) == 3
    clock.advance(minutes=11)
    limited = client.post(url, headers=person.headers)
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "copy_email_limit"
    assert len(_copies(smtp, email)) == 3
    clock.advance(days=1)
    assert client.post(url, headers=person.headers).json()["queued"] is True
    assert len(_copies(smtp, email)) == 4

    other = join(client, smtp, "someone-else@example.org")
    assert client.post(url, headers=other.headers).status_code == 404  # not theirs


def test_copy_page_button_sends_one_copy_per_click_burst(app, smtp, session, clock):
    smtp.clear()
    web = TestClient(app)
    email = "button@example.org"
    page = web.get("/join/keep4o-panel?lang=en")
    csrf = _csrf(page.text)
    web.post("/join/keep4o-panel?lang=en", data={
        "csrf_token": csrf, "lang": "en", "email": email, "timezone": "Europe/Berlin",
        "screening_adult": "yes", "screening_uses_ai_chat": "yes"})
    web.get(smtp.to(email)[-1].link().replace("http://testserver", ""))
    csrf = _csrf(web.get("/p/consent?lang=en").text)  # tokens are bound to the new session
    signed = web.post("/p/consent?lang=en", data={
        "csrf_token": csrf, "version": CONSENT_VERSION, "language": "en", "decision": "consent",
        "signature_name": "Button Tester", "statements": STATEMENTS}, follow_redirects=True)
    assert signed.status_code == 200
    assert "We have also emailed you this copy as a PDF." in signed.text
    assert "Email me my copy" in signed.text
    assert len(_copies(smtp, email)) == 1
    action = re.search(r'action="(/p/consent/records/\d+/email[^"]*)"', signed.text)
    assert action

    clock.advance(minutes=11)
    answers = [web.post(action.group(1).replace("&amp;", "&"), data={"csrf_token": csrf},
                        follow_redirects=False) for _ in range(2)]  # a double click
    assert [a.status_code for a in answers] == [303, 303]
    shown = web.get(answers[-1].headers["location"])
    assert "Your copy is on its way" in shown.text
    web.get(answers[-1].headers["location"])  # a reload asks for nothing
    assert len(_copies(smtp, email)) == 2
    for _ in range(2):
        clock.advance(minutes=11)
        last = web.post(action.group(1), data={"csrf_token": csrf}, follow_redirects=True)
    assert "several times today" in last.text
    assert len(_copies(smtp, email)) == 3
    forged = web.post(action.group(1), data={}, follow_redirects=False)
    assert forged.status_code == 403 and len(_copies(smtp, email)) == 3  # no CSRF token


def test_a_withdrawn_participant_gets_no_copy(app, client, smtp, session, clock):
    smtp.clear()
    email = "gone-copy@example.org"
    person = join(client, smtp, email)
    record = client.post("/api/v1/me/consent", json=consent_body(),
                         headers=person.headers).json()
    clock.advance(minutes=11)
    participant = session.exec(select(Participant)).one()
    assert copy_mail.email_again(session, participant, record["id"], now=clock())
    session.commit()  # queued, not yet delivered
    started = client.post("/api/v1/me/withdrawal", json={"scope": "stop_contact"},
                          headers=person.headers).json()
    client.post(f"/api/v1/me/withdrawal/{started['withdrawal_id']}/confirm",
                json={"confirm_token": started["confirm_token"]}, headers=person.headers)
    before = len(smtp.to(email))
    counts = notify.deliver_due(app.state.engine, app.state.settings, app.state.channel,
                                now=clock())
    assert counts["sent"] == 0 and len(smtp.to(email)) == before
    again = client.post(f"/api/v1/me/consent/records/{record['id']}/email",
                        headers=person.headers)
    assert again.status_code == 401  # the session ended with the withdrawal


def test_console_channel_shows_only_the_attachments_name_and_size(capsys):
    pdf = b"%PDF-1.4 secret body"
    ConsoleChannel().send(Message(to="x@example.org", subject="S", body="B", language="en",
                                  attachments=(Attachment("consent.pdf", pdf),)))
    out = capsys.readouterr().out
    assert "consent.pdf" in out and f"{len(pdf)} bytes" in out
    assert "secret body" not in out and "x@example.org" not in out


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF field on the page"
    return match.group(1)

"""Participant pages through HTTP (the browser tests in tests/e2e drive a real Chromium)."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from sqlmodel import select

from app.participants.models import Participant
from tests.support.flows import CONSENT_VERSION


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF field on the page"
    return match.group(1)


def _join(web: TestClient, email: str, lang: str = "en", adult: str = "yes"):  # type: ignore[no-untyped-def]
    page = web.get(f"/join/keep4o-panel?lang={lang}")
    assert page.status_code == 200
    return web.post(f"/join/keep4o-panel?lang={lang}", data={
        "csrf_token": _csrf(page.text), "lang": lang, "email": email,
        "timezone": "America/New_York", "screening_adult": adult,
        "screening_uses_ai_chat": "yes"})


def test_join_consent_and_copy_in_german(app, smtp, session):
    web = TestClient(app)
    answer = _join(web, "web@example.org", lang="de")
    assert answer.status_code == 200 and 'id="check-email"' in answer.text
    assert '<html lang="de">' in answer.text
    link = smtp.to("web@example.org")[-1].link()
    home = web.get(link.replace("http://testserver", ""), follow_redirects=True)
    assert home.url.path == "/p/consent"
    assert 'lang="de"' in home.text and "Studieninformation" in home.text
    token = _csrf(home.text)
    missing = web.post("/p/consent?lang=de", data={
        "csrf_token": token, "version": CONSENT_VERSION, "language": "de", "decision": "consent",
        "signature_name": "Web Tester", "statements": ["read_information", "voluntary"]})
    assert missing.status_code == 422 and 'role="alert"' in missing.text
    signed = web.post("/p/consent?lang=de", data={
        "csrf_token": token, "version": CONSENT_VERSION, "language": "de", "decision": "consent",
        "signature_name": "Web Tester",
        "statements": ["read_information", "voluntary", "data_use", "adult_confirmed"]},
        follow_redirects=True)
    assert signed.status_code == 200 and "Web Tester" in signed.text
    assert "copy.pdf" in signed.text
    session.rollback()
    participant = session.exec(select(Participant)).one()
    assert participant.status == "active" and participant.timezone == "America/New_York"


def test_ineligible_visitor_sees_a_kind_page(app, session):
    web = TestClient(app)
    page = _join(web, "young@example.org", adult="no")
    assert page.status_code == 200 and "Thank you for your interest" in page.text
    session.rollback()
    assert session.exec(select(Participant)).all() == []


def test_form_without_csrf_is_refused(app, session):
    web = TestClient(app)
    response = web.post("/join/keep4o-panel", data={
        "email": "x@example.org", "screening_adult": "yes", "screening_uses_ai_chat": "yes"})
    assert response.status_code == 403 and "text/html" in response.headers["content-type"]
    assert 'href="/join"' in response.text and "javascript:" not in response.text  # no-JS way out
    session.rollback()
    assert session.exec(select(Participant)).all() == []


def test_join_form_errors_are_shown_next_to_fields(app):
    web = TestClient(app)
    page = web.get("/join/keep4o-panel")
    response = web.post("/join/keep4o-panel", data={
        "csrf_token": _csrf(page.text), "email": "nope", "timezone": "Nowhere/Land"})
    assert response.status_code == 422
    assert 'id="email-error"' in response.text and 'id="timezone-error"' in response.text


def test_pages_need_the_link_and_bad_links_explain_themselves(app):
    web = TestClient(app)
    assert web.get("/p").status_code == 401
    bad = web.get("/p/login/not-a-real-token")
    assert bad.status_code == 401 and "This link is no longer valid." in bad.text


def test_withdraw_in_two_steps_through_pages(app, smtp, session):
    web = TestClient(app)
    _join(web, "leave@example.org")
    web.get(smtp.to("leave@example.org")[-1].link().replace("http://testserver", ""))
    page = web.get("/p/consent")
    web.post("/p/consent", data={
        "csrf_token": _csrf(page.text), "version": CONSENT_VERSION, "language": "en",
        "decision": "consent", "signature_name": "Leaver",
        "statements": ["read_information", "voluntary", "data_use", "adult_confirmed"]})
    choose = web.get("/p/withdraw")
    confirm = web.post("/p/withdraw", data={"csrf_token": _csrf(choose.text),
                                            "scope": "stop_contact"})
    assert confirm.status_code == 200 and "cannot be undone" in confirm.text
    session.rollback()
    assert session.exec(select(Participant)).one().status == "active"  # not yet
    fields = dict(re.findall(r'name="(withdrawal_id|confirm_token)" value="([^"]+)"',
                             confirm.text))
    done = web.post("/p/withdraw/confirm", data={"csrf_token": _csrf(confirm.text), **fields})
    assert done.status_code == 200 and "You have withdrawn" in done.text
    session.rollback()
    assert session.exec(select(Participant)).one().status == "withdrawn"


def test_join_form_reports_every_problem_in_one_round(client, session):
    """Unanswered screening questions, a bad address and an unknown zone come back together,
    each marked at its field (radio groups with aria-invalid), and nobody is enrolled."""
    page = client.get("/join?lang=en")
    answer = client.post("/join/keep4o-panel?lang=en", data={
        "csrf_token": _csrf(page.text), "lang": "en", "screening_adult": "yes",
        "email": "not-an-address", "timezone": "Mars/Olympus_Mons"})
    assert answer.status_code == 422
    html = answer.text
    for field in ("screening_uses_ai_chat-error", "email-error", "timezone-error"):
        assert f'id="{field}"' in html, field
    assert 'aria-describedby="screening_uses_ai_chat-error"' in html
    assert html.count('aria-invalid="true"') == 3
    assert 'id="screening_adult-error"' not in html
    assert session.exec(select(Participant)).all() == []


def test_consent_form_marks_name_and_statements_in_one_round(app, smtp, session):
    web = TestClient(app)
    _join(web, "both-errors@example.org", lang="pt-BR")
    home = web.get(smtp.to("both-errors@example.org")[-1].link().replace(
        "http://testserver", ""), follow_redirects=True)
    answer = web.post("/p/consent?lang=pt-BR", data={
        "csrf_token": _csrf(home.text), "version": CONSENT_VERSION, "language": "pt-BR",
        "decision": "consent", "signature_name": "", "statements": ["voluntary"]})
    assert answer.status_code == 422
    html = answer.text
    assert 'id="signature-error"' in html and 'id="statements-error"' in html
    assert 'aria-describedby="signature-error"' in html
    assert 'aria-describedby="statements-error"' in html
    assert html.count('aria-invalid="true"') == 1 + 3  # the name and the 3 unticked statements
    session.rollback()
    assert session.exec(select(Participant)).one().status == "enrolled"

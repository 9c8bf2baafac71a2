"""Staff pages: token login with a session cookie, CSRF, role-aware pages for IRB review."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from sqlmodel import Session

from app.auth import service as auth
from tests.support.flows import fresh_link, joined_and_consented


def _csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]


def _login(app, engine, role: str) -> TestClient:  # type: ignore[no-untyped-def]
    with Session(engine) as s:
        token = auth.add_staff(s, f"{role}-web", role)
    web = TestClient(app)
    page = web.get("/staff/login")
    response = web.post("/staff/login", data={"csrf_token": _csrf(page.text), "token": token},
                        follow_redirects=False)
    assert response.status_code == 303
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    return web


def test_pages_send_strangers_to_the_login(app):
    web = TestClient(app)
    response = web.get("/staff/irb/consent-log", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/staff/login"


def test_wrong_token_is_refused(app):
    web = TestClient(app)
    page = web.get("/staff/login")
    response = web.post("/staff/login", data={"csrf_token": _csrf(page.text), "token": "nope"})
    assert response.status_code == 401 and "not valid" in response.text


def test_irb_reviewer_sees_versions_log_history_and_chain(app, client, smtp, engine):
    joined_and_consented(client, smtp, "reviewed@example.org")
    web = _login(app, engine, "irb")
    home = web.get("/staff")
    assert "/staff/irb/consent-log" in home.text
    versions = web.get("/staff/irb/consent-versions")
    assert "IRB-2026-0412" in versions.text and "(current)" in versions.text
    log = web.get("/staff/irb/consent-log?action=consent")
    assert log.status_code == 200 and "reviewed@example.org" not in log.text
    pseudonym = re.search(r"pseudonym=([0-9a-f]{16})", log.text).group(1)  # type: ignore[union-attr]
    csv_file = web.get("/staff/irb/consent-log.csv")
    assert csv_file.headers["content-type"].startswith("text/csv") and pseudonym in csv_file.text
    history = web.get(f"/staff/irb/participant?pseudonym={pseudonym}")
    assert "active" in history.text and "read_information" in history.text
    chain = web.get("/staff/irb/audit")
    assert 'id="chain-status"' in chain.text and "intact" in chain.text


def test_researcher_cannot_open_irb_pages_and_logout_ends_the_session(app, engine):
    web = _login(app, engine, "researcher")
    assert "/staff/irb/" not in web.get("/staff").text  # role-aware navigation
    refused = web.get("/staff/irb/consent-log")
    assert refused.status_code == 403
    page = web.get("/staff")
    assert web.post("/staff/logout", data={"csrf_token": _csrf(page.text)},
                    follow_redirects=False).status_code == 303
    assert web.get("/staff", follow_redirects=False).status_code == 303


def test_participant_session_never_opens_staff_pages(app, client, smtp):
    person = joined_and_consented(client, smtp, "curious@example.org")
    web = TestClient(app)
    web.get(f"/p/login/{fresh_link(client, smtp, person)}")
    assert web.get("/staff/irb/consent-log", follow_redirects=False).status_code == 303
    assert client.get("/api/v1/irb/consent-log", headers=person.headers).status_code == 401

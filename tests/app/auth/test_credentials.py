"""Participant credentials have a life cycle: an emailed link is used once and is replaced by a
newer one; only sessions and API tokens open anything; API tokens come from a session; and
withdrawal (either scope) ends every credential at once."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from app.audit.models import AuditEvent
from tests.support.flows import (
    consent,
    enroll,
    fresh_link,
    join,
    joined_and_consented,
    link_token,
)


def _new_link(client, smtp, email: str) -> str:  # type: ignore[no-untyped-def]
    before = len(smtp.to(email))
    enroll(client, email)
    return link_token(smtp.wait_for(email, count=before + 1)[-1].link())


def test_a_link_opens_once_in_a_browser_and_never_as_a_bearer_token(app, client, smtp):
    token = _new_link(client, smtp, "once@example.org")
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}
                      ).status_code == 401  # the link itself is no API credential
    browser = TestClient(app, follow_redirects=False)
    assert browser.get(f"/p/login/{token}").status_code == 303
    assert browser.get("/p/consent").status_code == 200
    again = TestClient(app, follow_redirects=False).get(f"/p/login/{token}")
    assert again.status_code == 401 and "text/html" in again.headers["content-type"]
    assert client.post("/api/v1/session", json={"link": token}).status_code == 401


def test_a_newer_link_replaces_the_unused_older_ones(app, client, smtp, clock):
    first = _new_link(client, smtp, "newer@example.org")
    clock.advance(minutes=5)
    second = fresh_link(client, smtp, "newer@example.org")
    refused = client.post("/api/v1/session", json={"link": first})
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_link"
    assert client.post("/api/v1/session", json={"link": second}).status_code == 201


def test_a_link_expires_after_the_configured_days(client, smtp, clock, settings):
    token = _new_link(client, smtp, "late@example.org")
    clock.advance(days=settings.magic_link_ttl_days, seconds=1)
    assert client.post("/api/v1/session", json={"link": token}).status_code == 401


def test_default_link_life_is_at_most_a_week():
    from app.config import Settings

    assert Settings(secret_key="x" * 20, environment="test").magic_link_ttl_days <= 7


def test_api_tokens_come_from_a_session_and_can_be_revoked(client, smtp):
    person = join(client, smtp, "program@example.org")
    made = client.post("/api/v1/me/api-tokens", headers=person.headers)
    assert made.status_code == 201, made.text
    api = {"Authorization": f"Bearer {made.json()['token']}"}
    assert client.get("/api/v1/me", headers=api).status_code == 200
    # An API token cannot breed more tokens; the session lists and revokes it.
    assert client.post("/api/v1/me/api-tokens", headers=api).status_code == 403
    listed = client.get("/api/v1/me/api-tokens", headers=person.headers).json()
    assert [t["id"] for t in listed] == [made.json()["id"]]
    assert "token" not in listed[0]
    assert client.delete(f"/api/v1/me/api-tokens/{made.json()['id']}",
                         headers=person.headers).status_code == 204
    assert client.get("/api/v1/me", headers=api).status_code == 401
    assert client.delete(f"/api/v1/me/api-tokens/{made.json()['id']}",
                         headers=person.headers).status_code == 404


def test_someone_elses_api_token_cannot_be_revoked(client, smtp):
    alice = join(client, smtp, "alice-api@example.org")
    bob = join(client, smtp, "bob-api@example.org")
    made = client.post("/api/v1/me/api-tokens", headers=alice.headers).json()
    assert client.delete(f"/api/v1/me/api-tokens/{made['id']}",
                         headers=bob.headers).status_code == 404
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {made['token']}"}
                      ).status_code == 200


@pytest.mark.parametrize("scope", ["stop_contact", "delete_data"])
def test_withdrawal_ends_every_credential(app, client, smtp, session, clock, scope):
    email = f"leave-{scope}@example.org"
    person = joined_and_consented(client, smtp, email)
    api = client.post("/api/v1/me/api-tokens", headers=person.headers).json()["token"]
    browser = TestClient(app, follow_redirects=False)
    assert browser.get(f"/p/login/{fresh_link(client, smtp, person)}").status_code == 303
    clock.advance(minutes=1)
    unused = fresh_link(client, smtp, person)
    started = client.post("/api/v1/me/withdrawal", json={"scope": scope},
                          headers=person.headers).json()
    done = client.post(f"/api/v1/me/withdrawal/{started['withdrawal_id']}/confirm",
                       json={"confirm_token": started["confirm_token"]}, headers=person.headers)
    assert done.status_code == 200
    for headers in (person.headers, {"Authorization": f"Bearer {api}"}):
        for path in ("/api/v1/me", "/api/v1/me/consent/records", "/api/v1/me/data"):
            assert client.get(path, headers=headers).status_code == 401, path
    assert browser.get("/p").status_code == 401
    assert browser.get("/p/consent/records/1").status_code == 401
    assert TestClient(app).get(f"/p/login/{unused}").status_code == 401
    assert client.post("/api/v1/session", json={"link": unused}).status_code == 401
    session.rollback()
    entry = session.exec(select(AuditEvent).where(
        AuditEvent.action == "withdrawal.confirm")).one()
    assert entry.details["credentials_revoked"] == 4  # two sessions, the API token, the link


def test_the_web_withdrawal_forgets_the_browser_session(app, smtp):
    from tests.support.pages import signed_in_browser

    web = signed_in_browser(app, smtp, "en")
    web.follow_redirects = False
    page = web.get("/p/withdraw")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    step = web.post("/p/withdraw", data={"csrf_token": csrf, "scope": "stop_contact"})
    fields = dict(re.findall(r'name="(withdrawal_id|confirm_token)" value="([^"]+)"', step.text))
    done = web.post("/p/withdraw/confirm", data={"csrf_token": csrf, **fields})
    assert done.status_code == 200 and 'id="withdrawal-outcome"' in done.text
    assert re.search(r'wp_session=""?;.*Max-Age=0', done.headers["set-cookie"])
    assert web.get("/p").status_code == 401


def test_an_unknown_link_gives_no_hint(client):
    for token in ("x" * 43, "", "a" * 300):
        answer = client.post("/api/v1/session", json={"link": token})
        assert answer.status_code in (401, 422)
        assert "email" not in answer.text.lower()


def test_joining_again_before_consent_still_reaches_the_consent_page(app, client, smtp):
    """A person who lost their first link asks again and gets in (the study stays joinable)."""
    email = "lost@example.org"
    join(client, smtp, email)
    token = fresh_link(client, smtp, email)
    browser = TestClient(app, follow_redirects=False)
    assert browser.get(f"/p/login/{token}").headers["location"] == "/p"
    assert browser.get("/p").headers["location"] == "/p/consent"


def test_the_exchanged_session_can_consent(client, smtp):
    person = join(client, smtp, "exchange@example.org")
    assert consent(client, person)["decision"] == "consent"


def test_the_browser_session_cookie_in_production(db_url, client, smtp, clock):  # type: ignore[no-untyped-def]
    """ASVS 3.4.1-3.4.3: Secure, HttpOnly, SameSite; host-only (no Domain) and Path=/."""
    from app.config import Settings
    from app.main import create_app

    token = _new_link(client, smtp, "prod-cookie@example.org")
    prod = create_app(Settings(database_url=db_url, environment="production",
                               secret_key="production-secret-0123456789",
                               base_url="https://testserver"), clock=clock)
    try:
        opened = TestClient(prod, base_url="https://testserver").get(
            f"/p/login/{token}", follow_redirects=False)
        assert opened.status_code == 303
        [cookie] = [c for c in opened.headers.get_list("set-cookie")
                    if c.startswith("wp_session=")]
        attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
        assert {"secure", "httponly", "samesite", "path"} <= attributes
        assert "domain" not in attributes and "Path=/" in cookie
        assert "samesite=lax" in cookie.lower()
    finally:
        prod.state.engine.dispose()

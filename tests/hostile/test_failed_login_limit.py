"""An IP's failed-login limit never blocks a request that carries a valid credential (#13 part 6).

Found: after 60 failed logins from one IP every request from it got 429, valid users included
(a university or a carrier's NAT shares one address). Now only failures count, and once the IP
is over the limit a request passes if the credential its route uses is live; guesses (and a
guess next to a valid credential) still get 429."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from app.auth import service as auth
from app.config import Settings
from app.main import create_app
from tests.support.flows import STUDY, fresh_link, join

GUESSES = 66
FAILURES_ALLOWED = 30


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match
    return match.group(1)


@pytest.fixture
def nat_app(settings, clock, loaded_study):  # type: ignore[no-untyped-def]
    """The production limits, per hour instead of per minute (30 failures, 30 link openings,
    10 staff logins), so that a slow test machine cannot let the window pass mid-test."""
    defaults = {name: Settings.model_fields[name].default for name in (
        "rate_limit_auth_failures_per_ip", "rate_limit_magic_link_per_ip",
        "rate_limit_staff_login_per_ip", "rate_limit_enroll_per_ip",
        "rate_limit_enroll_per_email")}
    assert defaults["rate_limit_auth_failures_per_ip"] == f"{FAILURES_ALLOWED}/minute;300/day"
    hourly = {name: value.replace("/minute", "/hour") for name, value in defaults.items()}
    application = create_app(Settings(**settings.model_dump() | hourly | {
        "rate_limits_enabled": True}), clock=clock)
    yield application
    application.state.engine.dispose()


def _staff_login(app, token: str) -> tuple[TestClient, int]:  # type: ignore[no-untyped-def]
    web = TestClient(app)
    csrf = _csrf(web.get("/staff/login").text)
    response = web.post("/staff/login", data={"csrf_token": csrf, "token": token},
                        follow_redirects=False)
    return web, response.status_code


def test_sixty_failed_logins_from_an_ip_block_guesses_not_its_valid_users(
        nat_app, engine, smtp, clock) -> None:  # type: ignore[no-untyped-def]
    app = nat_app
    with Session(engine) as s:
        irb_token = auth.add_staff(s, "irb-behind-nat", "irb")
        admin_token = auth.add_staff(s, "admin-behind-nat", "admin")
    client = TestClient(app)  # every client here comes from the same address (testclient)
    elsewhere = TestClient(app, client=("10.1.2.3", 5000))

    # Valid users at the address: a participant (API token and browser), a staff member.
    person = join(client, smtp, "behind-nat@example.org")
    clock.advance(minutes=1)
    browser = TestClient(app)
    assert browser.get(f"/p/login/{fresh_link(client, smtp, person)}",
                       follow_redirects=False).status_code == 303
    staff_browser, status = _staff_login(app, admin_token)
    assert status == 303

    # Someone at the same address guesses bearer tokens, links and staff tokens.
    csrf = _csrf(client.get("/staff/login").text)
    answers = []
    for i in range(GUESSES):
        if i % 3 == 0:
            response = client.get("/api/v1/me", headers={"Authorization": f"Bearer guess-{i}"})
        elif i % 3 == 1:
            response = client.get(f"/p/login/guess-{i}", follow_redirects=False)
        else:
            response = client.post("/staff/login", data={"csrf_token": csrf,
                                                         "token": f"guess-{i}"})
        answers.append(response.status_code)
    assert set(answers) == {401, 429}
    assert answers.count(401) == FAILURES_ALLOWED  # only failures count, then every guess waits
    assert answers[-GUESSES // 3:] == [429] * (GUESSES // 3)

    # The valid users are not blocked: participant API and browser, staff API and browser.
    assert client.get("/api/v1/me", headers=person.headers).status_code == 200
    assert browser.get("/p").status_code == 200
    irb = {"Authorization": f"Bearer {irb_token}"}
    assert client.get("/api/v1/irb/consent-log", headers=irb).status_code == 200
    assert staff_browser.get("/staff").status_code == 200
    # ... nor logging in: a new emailed link (asked for elsewhere), a staff token at the login
    clock.advance(minutes=1)
    new_link = fresh_link(elsewhere, smtp, person)
    assert TestClient(app).get(f"/p/login/{new_link}", follow_redirects=False).status_code == 303
    assert _staff_login(app, irb_token)[1] == 303
    # ... nor pages without a credential, which guess nothing (the help page above all)
    assert client.get("/help").status_code == 200
    assert client.get(f"/join/{STUDY}").status_code == 200

    # Another failed attempt still gets 429, whichever way it comes.
    refused = [
        client.get("/api/v1/me", headers={"Authorization": "Bearer guess-again"}),
        client.get("/p/login/guess-again", follow_redirects=False),
        client.post("/staff/login", data={"csrf_token": csrf, "token": "guess-again"}),
        client.post("/staff/login", data={"csrf_token": csrf, "code": "123456"}),  # TOTP step
        client.post("/api/v1/session", json={"link": "guess-again"}),
        # a valid browser session does not carry a guessed bearer token through
        browser.get("/api/v1/me", headers={"Authorization": "Bearer guess-again"}),
        # a guessed staff session cookie
        TestClient(app, cookies={"wp_staff": "guess-again"}).get("/staff"),
        # a link that was valid once is a guess now
        TestClient(app).get(f"/p/login/{new_link}", follow_redirects=False),
    ]
    assert [r.status_code for r in refused] == [429] * len(refused), [
        (r.request.url.path, r.status_code) for r in refused]
    assert all(int(r.headers["retry-after"]) >= 1 for r in refused)

    # From another address the same guesses are plain failures, not 429.
    assert elsewhere.get("/api/v1/me", headers={"Authorization": "Bearer x"}).status_code == 401

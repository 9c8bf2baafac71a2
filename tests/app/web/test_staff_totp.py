"""The optional second factor: roles named in WELLPANEL_STAFF_TOTP_ROLES give a TOTP code after
their token. A wrong or replayed code is a failed login (ledgered); the secret is stored
encrypted and never ledgered; a challenge lasts five minutes and five wrong codes."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pyotp
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from app.auth import service as auth
from app.auth import totp
from app.auth.deps import STAFF_COOKIE
from app.auth.models import StaffLoginFailure
from app.main import create_app
from app.web.staff_routes import CHALLENGE_COOKIE
from tests.support.staff import actions, add_member, csrf, ledger, logged_in, member, post_login


@pytest.fixture
def totp_app(settings, clock, loaded_study):  # type: ignore[no-untyped-def]
    application = create_app(settings.model_copy(update={"staff_totp_roles": "irb,admin"}),
                             clock=clock)
    yield application
    application.state.engine.dispose()


def _enroll(engine, settings, name: str, now) -> str:  # type: ignore[no-untyped-def]
    """Enroll NAME as `wellpanel staff totp-enroll` does; the secret from the URI it shows."""
    with Session(engine) as s:
        uri = auth.enroll_totp(s, member(engine, name), secret_key=settings.secret_key,
                               actor="cli", now=now)
        s.commit()
    assert uri.startswith("otpauth://totp/") and "issuer=wellpanel" in uri
    return pyotp.parse_uri(uri).secret


def _code_step(web: TestClient, code: str):  # type: ignore[no-untyped-def]
    return web.post("/staff/login", data={"csrf_token": csrf(web.get("/staff/login").text),
                                          "code": code}, follow_redirects=False)


def _wrong(right: str) -> str:
    return f"{(int(right) + 1) % 1_000_000:06d}"


def test_token_then_code_logs_in_and_a_wrong_code_is_a_ledgered_failure(
        totp_app, engine, settings, clock):
    token = add_member(engine, "two-step-irb", "irb", now=clock.now)
    secret = _enroll(engine, settings, "two-step-irb", clock.now)
    web = TestClient(totp_app)
    first = post_login(web, token)
    assert first.status_code == 200 and 'autocomplete="one-time-code"' in first.text
    assert STAFF_COOKIE not in web.cookies  # no session yet
    cookie = next(c for c in first.headers.get_list("set-cookie")
                  if c.startswith(f"{CHALLENGE_COOKIE}="))
    assert "HttpOnly" in cookie and "Path=/staff/login" in cookie and "Max-Age=300" in cookie
    assert web.get("/staff/irb/audit", follow_redirects=False).status_code == 303

    right = pyotp.TOTP(secret).at(clock.now)
    wrong = _code_step(web, _wrong(right))
    assert wrong.status_code == 401 and 'id="code-error"' in wrong.text
    assert re.search(r'<input id="code"[^>]*aria-invalid="true"', wrong.text)
    failed = actions(engine, "staff.login_failed")[-1]
    assert failed.details["channel"] == "totp" and failed.details["reason"] == "wrong_code"
    assert failed.target == f"staff:{member(engine, 'two-step-irb').id}"

    signed_in = _code_step(web, right)
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/staff"
    assert web.get("/staff/irb/audit").status_code == 200
    assert actions(engine, "staff.login")[-1].details == {"second_factor": "totp"}
    dump = json.dumps([r.model_dump(mode="json") for r in ledger(engine)])
    assert secret not in dump and right not in dump and token not in dump


def test_a_code_is_never_accepted_twice(totp_app, engine, settings, clock):
    token = add_member(engine, "replay-admin", "admin", now=clock.now)
    secret = _enroll(engine, settings, "replay-admin", clock.now)
    code = pyotp.TOTP(secret).at(clock.now)
    first = TestClient(totp_app)
    post_login(first, token)
    assert _code_step(first, code).status_code == 303
    thief = TestClient(totp_app)  # the same code, seconds later, with the token
    post_login(thief, token)
    clock.advance(seconds=5)
    replayed = _code_step(thief, code)
    assert replayed.status_code == 401 and STAFF_COOKIE not in thief.cookies
    assert actions(engine, "staff.login_failed")[-1].details["reason"] == "replayed_code"
    # The previous step's code, still within the drift window, is refused too.
    assert _code_step(thief, pyotp.TOTP(secret).at(clock.now - timedelta(seconds=30))
                      ).status_code == 401
    clock.advance(seconds=30)
    assert _code_step(thief, pyotp.TOTP(secret).at(clock.now)).status_code == 303


def test_five_wrong_codes_end_the_challenge_and_each_is_counted(totp_app, engine, settings,
                                                                 clock):
    token = add_member(engine, "guessed-irb", "irb", now=clock.now)
    secret = _enroll(engine, settings, "guessed-irb", clock.now)
    right = pyotp.TOTP(secret).at(clock.now)
    web = TestClient(totp_app)
    post_login(web, token)
    for attempt in range(1, 6):
        answer = _code_step(web, _wrong(right))
        assert answer.status_code == 401
        assert ('id="code"' in answer.text) == (attempt < 5)  # the 5th: the token page again
    over = _code_step(web, right)  # even the right code: the challenge is spent
    assert over.status_code == 401 and 'id="token"' in over.text
    assert "log in again with your staff token" in over.text
    assert STAFF_COOKIE not in web.cookies
    assert len(actions(engine, "staff.login_failed")) == 1  # ledgered once this minute ...
    with Session(engine) as s:  # ... and every attempt counted
        counted = s.exec(select(StaffLoginFailure).where(
            StaffLoginFailure.channel == "totp")).one()
    assert counted.attempts == 6


def test_a_challenge_lasts_five_minutes(totp_app, engine, settings, clock):
    token = add_member(engine, "slow-irb", "irb", now=clock.now)
    secret = _enroll(engine, settings, "slow-irb", clock.now)
    web = TestClient(totp_app)
    post_login(web, token)
    clock.advance(minutes=5, seconds=1)
    late = _code_step(web, pyotp.TOTP(secret).at(clock.now))
    assert late.status_code == 401 and 'id="token"' in late.text
    assert actions(engine, "staff.login_failed")[-1].details["reason"] == "challenge_expired"
    no_cookie = _code_step(TestClient(totp_app), pyotp.TOTP(secret).at(clock.now))
    assert no_cookie.status_code == 401 and 'id="token"' in no_cookie.text


def test_a_member_revoked_between_token_and_code_does_not_get_in(totp_app, engine, settings,
                                                                 clock):
    token = add_member(engine, "revoked-midway", "irb", now=clock.now)
    secret = _enroll(engine, settings, "revoked-midway", clock.now)
    web = TestClient(totp_app)
    post_login(web, token)
    with Session(engine) as s:
        auth.revoke_staff(s, member(engine, "revoked-midway"), actor="cli", now=clock.now,
                          ttl=settings.staff_token_ttl)
        s.commit()
    answer = _code_step(web, pyotp.TOTP(secret).at(clock.now))
    assert answer.status_code == 401 and STAFF_COOKIE not in web.cookies


def test_a_role_that_needs_it_cannot_log_in_without_an_enrolled_factor(totp_app, engine,
                                                                       clock):
    token = add_member(engine, "unenrolled-irb", "irb", now=clock.now)
    refused = post_login(TestClient(totp_app), token)
    assert refused.status_code == 401 and "totp-enroll" in refused.text
    assert CHALLENGE_COOKIE not in refused.headers.get("set-cookie", "")
    row = actions(engine, "staff.login_failed")[-1]
    assert row.details["reason"] == "second_factor_not_enrolled"


def test_roles_not_listed_log_in_with_the_token_alone(totp_app, engine, clock):
    token = add_member(engine, "token-only", "researcher", now=clock.now)
    assert post_login(TestClient(totp_app), token).status_code == 303


def test_the_code_page_in_another_language(totp_app, engine, settings, clock):
    token = add_member(engine, "german-irb", "irb", now=clock.now)
    _enroll(engine, settings, "german-irb", clock.now)
    web = TestClient(totp_app, headers={"Accept-Language": "de"})
    page = post_login(web, token)
    assert page.status_code == 200 and "6-stelliger Code" in page.text


def test_the_secret_is_stored_encrypted_and_only_shown_at_enrollment(engine, settings, clock):
    add_member(engine, "sealed", "irb", now=clock.now)
    secret = _enroll(engine, settings, "sealed", clock.now)
    stored = member(engine, "sealed").totp_secret
    assert stored and secret not in stored
    assert totp.unseal(stored, settings.secret_key) == secret
    assert totp.unseal(stored, "another-secret-key-0123") is None  # the key is needed
    enrolled = actions(engine, "staff.totp_enroll")[-1]
    assert enrolled.details == {"name": "sealed", "replaced": False}
    assert secret not in json.dumps([r.model_dump(mode="json") for r in ledger(engine)])
    with Session(engine) as s:
        public = auth.list_staff(s, now=clock.now, ttl=settings.staff_token_ttl)
    assert secret not in str(public) and stored not in str(public)
    assert next(m for m in public if m.name == "sealed").second_factor is True


def test_an_admin_enrolls_a_member_on_the_page_and_through_the_api(app, client, engine, clock):
    admin_token = add_member(engine, "enrolling-admin", "admin", now=clock.now)
    add_member(engine, "to-enroll", "irb", now=clock.now)
    target = member(engine, "to-enroll")
    web = logged_in(app, admin_token)
    page = web.post(f"/staff/admin/staff/{target.id}/totp",
                    data={"csrf_token": csrf(web.get("/staff/admin/staff").text)})
    assert page.status_code == 200
    uri = re.search(r'<code id="totp-uri">([^<]+)</code>', page.text).group(1)  # type: ignore[union-attr]
    secret = pyotp.parse_uri(uri.replace("&amp;", "&")).secret
    assert secret not in web.get("/staff/admin/staff").text  # shown once
    api = client.post(f"/api/v1/staff/members/{target.id}/totp",
                      headers={"Authorization": f"Bearer {admin_token}"})
    assert api.status_code == 200 and api.json()["member"]["second_factor"] is True
    assert pyotp.parse_uri(api.json()["provisioning_uri"]).secret != secret  # replaced
    assert actions(engine, "staff.totp_enroll")[-1].details["replaced"] is True
    removed = client.delete(f"/api/v1/staff/members/{target.id}/totp",
                            headers={"Authorization": f"Bearer {admin_token}"})
    assert removed.status_code == 204 and member(engine, "to-enroll").totp_secret is None
    assert actions(engine, "staff.totp_remove")[-1].target == f"staff:{target.id}"

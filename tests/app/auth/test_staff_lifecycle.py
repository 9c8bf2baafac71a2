"""Staff tokens end: they expire (WELLPANEL_STAFF_TOKEN_TTL_DAYS), rotation replaces them,
revocation is final, and either ends the member's browser sessions at once. Admins manage staff
through /api/v1/staff/members (never leaving no admin); every change and every failed staff
login is in the ledger, failed logins once per client IP and minute."""

from __future__ import annotations

import json
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlmodel import Session, select

from app.auth import service as auth
from app.auth.models import StaffLoginFailure
from tests.support.staff import actions, add_member, ledger, logged_in, member, post_login

MEMBERS = "/api/v1/staff/members"


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _refused_with_error_body(response) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["www-authenticate"] == "Bearer"
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == "unauthorized"
    assert "not valid" in body["error"]["message"]


def test_a_token_expires_after_the_configured_days_and_rotation_renews_it(
        app, client, engine, clock):
    token = add_member(engine, "expiring-irb", "irb", now=clock.now)
    assert client.get("/api/v1/irb/audit/verify", headers=_bearer(token)).status_code == 200
    clock.advance(days=90, seconds=-1)
    assert client.get("/api/v1/irb/audit/verify", headers=_bearer(token)).status_code == 200
    clock.advance(seconds=1)
    _refused_with_error_body(client.get("/api/v1/irb/audit/verify", headers=_bearer(token)))
    failed = actions(engine, "staff.login_failed")[-1]
    assert failed.details["reason"] == "expired" and failed.details["channel"] == "api"
    assert failed.target == f"staff:{member(engine, 'expiring-irb').id}"
    assert token not in json.dumps([r.model_dump(mode="json") for r in ledger(engine)])

    with Session(engine) as s:  # `wellpanel staff rotate` renews it
        fresh = auth.rotate_staff_token(s, member(engine, "expiring-irb"), actor="cli",
                                        now=clock.now, ttl=timedelta(days=90))
        s.commit()
    assert client.get("/api/v1/irb/audit/verify", headers=_bearer(fresh)).status_code == 200
    assert client.get("/api/v1/irb/audit/verify", headers=_bearer(token)).status_code == 401
    rotated = actions(engine, "staff.rotate")[-1]
    assert rotated.details["status_before"] == "expired" and rotated.actor == "cli"


def test_the_ttl_is_a_setting_with_bounds(db_url):
    import pytest
    from pydantic import ValidationError

    from app.config import Settings

    assert Settings(database_url=db_url, environment="test").staff_token_ttl_days == 90
    assert Settings(database_url=db_url, environment="test",
                    staff_token_ttl_days=7).staff_token_ttl == timedelta(days=7)
    for bad in (0, 367):
        with pytest.raises(ValidationError):
            Settings(database_url=db_url, environment="test", staff_token_ttl_days=bad)


def test_expiry_ends_a_live_browser_session_at_once(app, engine, clock):
    # The token has an hour left; the 8-hour session would outlive it, but does not.
    token = add_member(engine, "hour-left", "researcher",
                       now=clock.now - timedelta(days=90) + timedelta(hours=1))
    web = logged_in(app, token)
    assert web.get("/staff/researcher/notifications").status_code == 200
    clock.advance(hours=1)
    response = web.get("/staff/researcher/notifications", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/staff/login"
    refused = post_login(TestClient(app), token)
    assert refused.status_code == 401 and "text/html" in refused.headers["content-type"]


def test_revoking_ends_the_token_and_every_session_at_once(app, client, engine, clock):
    admin = add_member(engine, "boss", "admin", now=clock.now)
    token = add_member(engine, "leaving", "irb", now=clock.now)
    first, second = logged_in(app, token), logged_in(app, token)
    assert first.get("/staff/irb/audit").status_code == 200
    target = member(engine, "leaving")
    revoked = client.post(f"{MEMBERS}/{target.id}/revoke", headers=_bearer(admin))
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    assert "token" not in revoked.json()
    for web in (first, second):  # both browsers, at once
        page = web.get("/staff/irb/audit", follow_redirects=False)
        assert page.status_code == 303 and page.headers["location"] == "/staff/login"
    _refused_with_error_body(client.get("/api/v1/irb/audit/verify", headers=_bearer(token)))
    login = post_login(TestClient(app), token)  # the login page again, not JSON, not a 500
    assert login.status_code == 401 and 'id="login-error"' in login.text
    assert member(engine, "leaving").revoked_at == clock.now
    row = actions(engine, "staff.revoke")[-1]
    assert row.actor == f"staff:{member(engine, 'boss').id}" and row.target == f"staff:{target.id}"
    assert row.old_value == {"revoked_at": None} and row.details["sessions_ended"] == 2
    again = client.post(f"{MEMBERS}/{target.id}/revoke", headers=_bearer(admin))
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_revoked"
    rotate = client.post(f"{MEMBERS}/{target.id}/rotate", headers=_bearer(admin))
    assert rotate.status_code == 409 and rotate.json()["error"]["code"] == "revoked"


def test_rotation_ends_the_old_token_and_its_sessions(app, client, engine, clock):
    admin = add_member(engine, "rotator", "admin", now=clock.now)
    token = add_member(engine, "rotated", "researcher", now=clock.now)
    web = logged_in(app, token)
    target = member(engine, "rotated")
    answer = client.post(f"{MEMBERS}/{target.id}/rotate", headers=_bearer(admin))
    assert answer.status_code == 200
    fresh = answer.json()["token"]
    assert fresh != token and answer.json()["member"]["status"] == "active"
    assert web.get("/staff", follow_redirects=False).status_code == 303
    assert post_login(TestClient(app), token).status_code == 401
    assert logged_in(app, fresh).get("/staff/researcher/notifications").status_code == 200
    listed = client.get(MEMBERS, headers=_bearer(admin)).text
    assert fresh not in listed and target.token_hash not in listed


def test_admin_api_lists_adds_and_changes_roles_and_audits_each(client, engine, clock):
    admin = add_member(engine, "chief", "admin", now=clock.now)
    chief = member(engine, "chief")
    added = client.post(MEMBERS, json={"name": "newcomer", "role": "researcher"},
                        headers=_bearer(admin))
    assert added.status_code == 201
    new_token, new_id = added.json()["token"], added.json()["member"]["id"]
    assert added.json()["member"]["expires_at"].startswith("2027-01-31")  # 90 days on
    listed = client.get(MEMBERS, headers=_bearer(admin))
    assert listed.status_code == 200
    assert {m["name"] for m in listed.json()} == {"chief", "newcomer"}
    assert all(set(m) == {"id", "name", "role", "status", "created_at", "expires_at",
                          "revoked_at", "last_used_at", "second_factor"} for m in listed.json())
    assert new_token not in listed.text
    assert next(m for m in listed.json() if m["name"] == "chief")["last_used_at"] is not None

    changed = client.patch(f"{MEMBERS}/{new_id}", json={"role": "irb"}, headers=_bearer(admin))
    assert changed.status_code == 200 and changed.json()["role"] == "irb"
    assert client.get("/api/v1/irb/audit/verify", headers=_bearer(new_token)).status_code == 200

    taken = client.post(MEMBERS, json={"name": "newcomer", "role": "irb"},
                        headers=_bearer(admin))
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "conflict"
    bad_role = client.patch(f"{MEMBERS}/{new_id}", json={"role": "king"},
                            headers=_bearer(admin))
    assert bad_role.status_code == 422 and bad_role.json()["error"]["code"] == "validation_failed"
    assert client.post(f"{MEMBERS}/999999/revoke", headers=_bearer(admin)).status_code == 404

    add_row = actions(engine, "staff.add")[-1]
    assert add_row.actor == f"staff:{chief.id}" and add_row.target == f"staff:{new_id}"
    assert add_row.new_value == {"name": "newcomer", "role": "researcher"}
    role_row = actions(engine, "staff.role_change")[-1]
    assert role_row.old_value == {"role": "researcher"} and role_row.new_value == {"role": "irb"}
    assert new_token not in json.dumps([r.model_dump(mode="json") for r in ledger(engine)])


def test_only_admins_manage_staff(client, engine, clock):
    for role in ("researcher", "irb"):
        token = add_member(engine, f"not-admin-{role}", role, now=clock.now)
        refused = client.post(MEMBERS, json={"name": "sneaky", "role": "admin"},
                              headers=_bearer(token))
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    assert client.get(MEMBERS).status_code == 401
    assert not [r for r in actions(engine, "staff.add") if r.new_value["name"] == "sneaky"]


def test_the_last_admin_cannot_be_revoked_or_demoted(client, engine, clock):
    admin = add_member(engine, "only-admin", "admin", now=clock.now)
    me = member(engine, "only-admin")
    rows = len(ledger(engine))
    for response in (client.post(f"{MEMBERS}/{me.id}/revoke", headers=_bearer(admin)),
                     client.patch(f"{MEMBERS}/{me.id}", json={"role": "researcher"},
                                  headers=_bearer(admin))):
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "last_admin"
        assert "last active admin" in response.json()["error"]["message"]
    assert member(engine, "only-admin").revoked_at is None
    assert member(engine, "only-admin").role == "admin"
    assert len(ledger(engine)) == rows
    # An expired admin does not count: it cannot manage anyone.
    add_member(engine, "stale-admin", "admin", now=clock.now - timedelta(days=91))
    assert client.post(f"{MEMBERS}/{me.id}/revoke",
                       headers=_bearer(admin)).json()["error"]["code"] == "last_admin"
    # With a second active admin, one may step down.
    add_member(engine, "second-admin", "admin", now=clock.now)
    demoted = client.patch(f"{MEMBERS}/{me.id}", json={"role": "irb"}, headers=_bearer(admin))
    assert demoted.status_code == 200 and demoted.json()["role"] == "irb"


def test_failed_api_logins_are_ledgered_once_per_ip_and_minute_and_counted(
        client, engine, clock):
    for i in range(5):
        assert client.get(MEMBERS, headers=_bearer(f"guess-{i}")).status_code == 401
    rows = actions(engine, "staff.login_failed")
    assert len(rows) == 1
    assert rows[0].details == {"channel": "api", "reason": "unknown_token", "ip": "testclient",
                               "minute": "2026-11-02T09:00:00+00:00",
                               "later_failures": "counted in staff_login_failures"}
    assert rows[0].actor == "unauthenticated" and rows[0].target is None
    assert "guess-" not in json.dumps([r.model_dump(mode="json") for r in ledger(engine)])
    with Session(engine) as s:
        counted = s.exec(select(StaffLoginFailure)).one()
    assert counted.attempts == 5 and counted.ledgered
    clock.advance(minutes=1)
    assert client.get(MEMBERS, headers=_bearer("guess-later")).status_code == 401
    assert len(actions(engine, "staff.login_failed")) == 2
    # No token at all is not a login attempt.
    assert client.get(MEMBERS).status_code == 401
    assert len(actions(engine, "staff.login_failed")) == 2


def test_failed_logins_from_many_addresses_fill_at_most_a_capped_number_of_rows(
        engine, clock):
    cap = auth.FAILED_LOGIN_LEDGER_ROWS_PER_MINUTE
    with Session(engine) as s:
        for i in range(cap + 10):
            auth.record_failed_login(s, ip=f"203.0.113.{i}", channel="web",
                                     check=auth.StaffCheck(None, "unknown_token"),
                                     now=clock.now)
            s.commit()
        counted = s.exec(select(StaffLoginFailure)).all()
    assert len(actions(engine, "staff.login_failed")) == cap
    assert len(counted) == cap + 10 and sum(1 for c in counted if c.ledgered) == cap


def test_last_use_is_recorded_for_api_and_login(app, client, engine, clock):
    token = add_member(engine, "user-of-api", "irb", now=clock.now)
    assert member(engine, "user-of-api").last_used_at is None
    client.get("/api/v1/irb/audit/verify", headers=_bearer(token))
    assert member(engine, "user-of-api").last_used_at == clock.now
    clock.advance(minutes=5)
    logged_in(app, token)
    assert member(engine, "user-of-api").last_used_at == clock.now


def test_failed_browser_logins_are_ledgered_without_the_token(app, engine, clock):
    token = add_member(engine, "browser-revoked", "irb", now=clock.now)
    with Session(engine) as s:
        auth.revoke_staff(s, member(engine, "browser-revoked"), actor="cli", now=clock.now,
                          ttl=timedelta(days=90))
        s.commit()
    web = TestClient(app)
    for guess in ("not-a-token", token, "another-guess"):
        refused = post_login(web, guess)
        assert refused.status_code == 401 and "text/html" in refused.headers["content-type"]
        assert 'aria-invalid="true"' in refused.text
    rows = actions(engine, "staff.login_failed")
    assert len(rows) == 1 and rows[0].details["channel"] == "web"
    assert rows[0].details["reason"] == "unknown_token" and rows[0].details["ip"] == "testclient"
    clock.advance(minutes=1)
    post_login(web, token)  # a new minute: the revoked member's token, named in the ledger
    latest = actions(engine, "staff.login_failed")[-1]
    assert latest.details["reason"] == "revoked"
    assert latest.target == f"staff:{member(engine, 'browser-revoked').id}"
    dump = json.dumps([r.model_dump(mode="json") for r in ledger(engine)])
    assert token not in dump and "not-a-token" not in dump

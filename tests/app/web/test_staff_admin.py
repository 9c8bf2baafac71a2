"""The admin's staff page (/staff/admin/staff): add a member and see the token once, revoke one
(their sessions end at once), change a role, issue a new token; never leave no admin; every
change in the ledger with the admin as actor; CSRF on every form; plain forms, no JavaScript."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from tests.support.staff import actions, add_member, csrf, ledger, logged_in, member, post_login

PAGE = "/staff/admin/staff"


def _admin(app, engine, clock, name: str = "page-admin") -> TestClient:  # type: ignore[no-untyped-def]
    return logged_in(app, add_member(engine, name, "admin", now=clock.now))


def _post(web: TestClient, path: str, **data: str):  # type: ignore[no-untyped-def]
    token = csrf(web.get(PAGE).text)
    return web.post(path, data={"csrf_token": token, **data}, follow_redirects=False)


def test_adding_a_member_shows_the_token_once_and_it_works(app, engine, clock):
    web = _admin(app, engine, clock)
    page = web.get(PAGE)
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    assert '<script' not in page.text  # plain forms
    assert 'action="/staff/admin/staff"' in page.text and 'name="csrf_token"' in page.text
    added = _post(web, PAGE, name="new-researcher", role="researcher")
    assert added.status_code == 201 and added.headers["cache-control"] == "no-store"
    token = re.search(r'<code id="new-token">([^<]+)</code>', added.text).group(1)  # type: ignore[union-attr]
    assert 'id="member-' in added.text and "new-researcher" in added.text
    again = web.get(PAGE).text
    assert token not in again and "new-researcher" in again  # shown once
    assert member(engine, "new-researcher").token_hash not in again
    newcomer = logged_in(app, token)
    assert newcomer.get("/staff/researcher/notifications").status_code == 200
    row = actions(engine, "staff.add")[-1]
    assert row.actor == f"staff:{member(engine, 'page-admin').id}"
    assert row.new_value == {"name": "new-researcher", "role": "researcher"}
    assert token not in str([r.model_dump() for r in ledger(engine)])


@pytest.mark.parametrize(("name", "role", "status", "field"), [
    ("", "researcher", 422, "new-name"),
    ("x" * 101, "researcher", 422, "new-name"),
    ("page-admin", "irb", 409, "new-name"),  # taken
    ("someone", "king", 422, "new-role"),
])
def test_a_refused_addition_says_why_beside_the_field(app, engine, clock, name, role, status,
                                                      field):
    web = _admin(app, engine, clock)
    rows = len(ledger(engine))
    refused = _post(web, PAGE, name=name, role=role)
    assert refused.status_code == status
    assert 'id="add-error"' in refused.text and 'id="new-token"' not in refused.text
    tag = re.search(rf'<(?:input|select) id="{field}"[^>]*>', refused.text).group(0)  # type: ignore[union-attr]
    assert 'aria-invalid="true"' in tag and 'aria-describedby="add-error"' in tag
    assert len(ledger(engine)) == rows


def test_revoking_on_the_page_ends_the_members_sessions_at_once(app, engine, clock):
    web = _admin(app, engine, clock)
    leaver_token = add_member(engine, "page-leaver", "irb", now=clock.now)
    leaver = logged_in(app, leaver_token)
    assert leaver.get("/staff/irb/audit").status_code == 200
    target = member(engine, "page-leaver")
    done = _post(web, f"{PAGE}/{target.id}/revoke")
    assert done.status_code == 303
    assert done.headers["location"] == f"{PAGE}?done=revoked&id={target.id}"
    note = web.get(done.headers["location"]).text
    assert "Revoked page-leaver" in note
    assert re.search(rf'id="member-{target.id}" data-status="revoked"', note)
    cut_off = leaver.get("/staff/irb/audit", follow_redirects=False)
    assert cut_off.status_code == 303 and cut_off.headers["location"] == "/staff/login"
    relogin = post_login(TestClient(app), leaver_token)
    assert relogin.status_code == 401 and "text/html" in relogin.headers["content-type"]
    assert 'id="login-error"' in relogin.text
    row = actions(engine, "staff.revoke")[-1]
    assert row.actor == f"staff:{member(engine, 'page-admin').id}"
    assert row.target == f"staff:{target.id}" and row.details["sessions_ended"] == 1


def test_changing_a_role_on_the_page_is_audited_with_old_and_new(app, engine, clock):
    web = _admin(app, engine, clock)
    token = add_member(engine, "page-promoted", "researcher", now=clock.now)
    target = member(engine, "page-promoted")
    done = _post(web, f"{PAGE}/{target.id}/role", role="irb")
    assert done.status_code == 303
    assert "page-promoted now has the role irb" in web.get(done.headers["location"]).text
    assert member(engine, "page-promoted").role == "irb"
    row = actions(engine, "staff.role_change")[-1]
    assert (row.old_value, row.new_value) == ({"role": "researcher"}, {"role": "irb"})
    assert logged_in(app, token).get("/staff/irb/audit").status_code == 200
    # The same role again changes nothing and writes nothing.
    rows = len(ledger(engine))
    assert _post(web, f"{PAGE}/{target.id}/role", role="irb").status_code == 303
    assert len(ledger(engine)) == rows


def test_the_last_admin_cannot_revoke_or_demote_themselves(app, engine, clock):
    web = _admin(app, engine, clock, name="sole-admin")
    me = member(engine, "sole-admin")
    rows = len(ledger(engine))
    for path, data in ((f"{PAGE}/{me.id}/revoke", {}), (f"{PAGE}/{me.id}/role",
                                                         {"role": "researcher"})):
        refused = _post(web, path, **data)
        assert refused.status_code == 409
        assert 'id="change-error"' in refused.text and "last active admin" in refused.text
    assert member(engine, "sole-admin").revoked_at is None
    assert member(engine, "sole-admin").role == "admin"
    assert len(ledger(engine)) == rows
    assert web.get(PAGE).status_code == 200  # still logged in


def test_a_new_token_from_the_page_replaces_the_old_one(app, engine, clock):
    web = _admin(app, engine, clock)
    old = add_member(engine, "page-rotated", "researcher", now=clock.now)
    session_before = logged_in(app, old)
    target = member(engine, "page-rotated")
    shown = _post(web, f"{PAGE}/{target.id}/rotate")
    assert shown.status_code == 200
    new = re.search(r'<code id="new-token">([^<]+)</code>', shown.text).group(1)  # type: ignore[union-attr]
    assert session_before.get("/staff", follow_redirects=False).status_code == 303
    assert post_login(TestClient(app), old).status_code == 401
    assert post_login(TestClient(app), new).status_code == 303
    assert actions(engine, "staff.rotate")[-1].actor == f"staff:{member(engine, 'page-admin').id}"


@pytest.mark.parametrize("role", ["researcher", "irb"])
def test_only_admins_open_the_staff_page(app, engine, clock, role):
    web = logged_in(app, add_member(engine, f"no-admin-{role}", role, now=clock.now))
    assert 'href="/staff/admin/staff"' not in web.get("/staff/irb/audit" if role == "irb"
                                                      else "/staff/researcher/notifications").text
    refused = web.get(PAGE)
    assert refused.status_code == 403 and f"The {role} role may not open this page" in refused.text
    victim = member(engine, f"no-admin-{role}")
    token = csrf(web.get("/staff/login").text)
    post = web.post(f"{PAGE}/{victim.id}/role", data={"csrf_token": token, "role": "admin"})
    assert post.status_code == 403 and member(engine, f"no-admin-{role}").role == role


def test_strangers_are_sent_to_the_login_page(app):
    response = TestClient(app).get(PAGE, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/staff/login"

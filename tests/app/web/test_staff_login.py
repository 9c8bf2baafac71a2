"""Staff login hardening: cookie flags, CSRF on every form, logout, expiry, forgery, roles."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, func, select

from app.audit.models import AuditEvent
from app.auth import service as auth
from app.auth.deps import STAFF_COOKIE
from app.main import create_app
from app.surveys.models import SafetyEvent
from tests.support.flows import fresh_link, joined_and_consented

PHQ9 = {f"phq9_{i}": 1 for i in range(1, 10)}


def _csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]


def _login(app, engine, role: str, name: str | None = None) -> TestClient:  # type: ignore[no-untyped-def]
    with Session(engine) as s:
        token = auth.add_staff(s, name or f"{role}-login", role)
    web = TestClient(app)
    page = web.get("/staff/login")
    response = web.post("/staff/login", data={"csrf_token": _csrf(page.text), "token": token},
                        follow_redirects=False)
    assert response.status_code == 303, response.text
    return web


def _audit_rows(engine) -> int:  # type: ignore[no-untyped-def]
    with Session(engine) as s:
        return s.exec(select(func.count()).select_from(AuditEvent)).one()


def _safety_event(client, smtp, email: str) -> None:  # type: ignore[no-untyped-def]
    person = joined_and_consented(client, smtp, email)
    listed = client.get("/api/v1/me/surveys", headers=person.headers).json()
    phq9 = next(s["id"] for s in listed if s["instrument"] == "phq9")
    answer = client.post(f"/api/v1/me/surveys/{phq9}/responses",
                         json={"answers": PHQ9 | {"phq9_9": 2}},
                         headers=person.headers | {"Idempotency-Key": "key-00000001"})
    assert answer.status_code in (200, 201) and answer.json()["show_crisis_resources"]


def test_session_cookie_is_httponly_strict_and_scoped_to_staff_pages(app, engine):
    with Session(engine) as s:
        token = auth.add_staff(s, "cookie-check", "researcher")
    web = TestClient(app)
    page = web.get("/staff/login")
    response = web.post("/staff/login", data={"csrf_token": _csrf(page.text), "token": token},
                        follow_redirects=False)
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{STAFF_COOKIE}=")
    assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
    assert "Path=/staff" in cookie
    assert "Secure" not in cookie  # environment=test: plain http is allowed


def test_session_cookie_is_secure_in_production(db_url, loaded_study, engine):  # type: ignore[no-untyped-def]
    from app.config import Settings

    prod = create_app(Settings(database_url=db_url, environment="production",
                               secret_key="production-secret-0123456789",
                               base_url="https://testserver"))  # (its Host is the only one served)
    with Session(engine) as s:
        token = auth.add_staff(s, "prod-check", "irb")
    web = TestClient(prod, base_url="https://testserver")
    page = web.get("/staff/login")
    response = web.post("/staff/login", data={"csrf_token": _csrf(page.text), "token": token},
                        follow_redirects=False)
    assert response.status_code == 303
    staff_cookie = [c for c in response.headers.get_list("set-cookie")
                    if c.startswith(f"{STAFF_COOKIE}=")][0]
    assert "Secure" in staff_cookie and "HttpOnly" in staff_cookie
    prod.state.engine.dispose()


@pytest.mark.parametrize("csrf", [None, "forged-token-value"])
def test_login_form_without_the_right_csrf_token_is_refused(app, engine, csrf):
    with Session(engine) as s:
        token = auth.add_staff(s, "csrf-login", "researcher")
    web = TestClient(app)
    web.get("/staff/login")
    data = {"token": token} | ({"csrf_token": csrf} if csrf else {})
    response = web.post("/staff/login", data=data, follow_redirects=False)
    assert response.status_code == 403 and "expired" in response.text
    assert STAFF_COOKIE not in response.headers.get("set-cookie", "")


@pytest.mark.parametrize("csrf", [None, "forged-token-value"])
def test_acknowledge_without_the_right_csrf_token_changes_nothing(app, client, smtp, engine,
                                                                  csrf):
    _safety_event(client, smtp, f"csrf-{csrf or 'none'}@example.org")
    web = _login(app, engine, "researcher")
    with Session(engine) as s:
        event_id = s.exec(select(SafetyEvent.id)).one()
    rows = _audit_rows(engine)
    data = {"note": "called"} | ({"csrf_token": csrf} if csrf else {})
    response = web.post(f"/staff/researcher/safety/{event_id}/acknowledge", data=data)
    assert response.status_code == 403 and 'role="alert"' in response.text
    with Session(engine) as s:
        assert s.get(SafetyEvent, event_id).acknowledged_at is None  # type: ignore[union-attr]
    assert _audit_rows(engine) == rows


def test_logout_needs_csrf_and_revokes_the_session_on_the_server(app, engine):
    web = _login(app, engine, "irb")
    stolen = web.cookies.get(STAFF_COOKIE)
    assert web.post("/staff/logout", data={}).status_code == 403  # no token: still logged in
    assert web.get("/staff/irb/audit").status_code == 200
    page = web.get("/staff")
    assert web.post("/staff/logout", data={"csrf_token": _csrf(page.text)},
                    follow_redirects=False).headers["location"] == "/staff/login"
    # A copy of the old cookie is worthless now, not merely forgotten by this browser.
    replay = TestClient(app, cookies={STAFF_COOKIE: stolen})
    response = replay.get("/staff/irb/audit", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/staff/login"


def test_expired_session_goes_back_to_the_login_page(app, engine, clock):
    web = _login(app, engine, "researcher")
    assert web.get("/staff/researcher/enrollment").status_code == 200
    clock.advance(hours=8, seconds=1)
    response = web.get("/staff/researcher/enrollment", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/staff/login"


@pytest.mark.parametrize("cookie", ["forged", "", "x" * 300])
def test_forged_session_goes_to_the_login_page(app, cookie):
    web = TestClient(app, cookies={STAFF_COOKIE: cookie})
    for path in ("/staff", "/staff/researcher/safety", "/staff/irb/consent-log"):
        response = web.get(path, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/staff/login"


def test_revoked_staff_member_is_logged_out(app, engine):
    from app.auth.models import StaffMember

    web = _login(app, engine, "researcher", name="leaver")
    with Session(engine) as s:
        member = s.exec(select(StaffMember).where(StaffMember.name == "leaver")).one()
        member.revoked_at = member.created_at
        s.add(member)
        s.commit()
    assert web.get("/staff", follow_redirects=False).status_code == 303


def test_navigation_shows_each_role_only_its_pages(app, engine):
    researcher = _login(app, engine, "researcher").get("/staff").text
    irb = _login(app, engine, "irb").get("/staff").text
    admin = _login(app, engine, "admin").get("/staff").text
    assert "/staff/researcher/safety" in researcher and "/staff/irb/" not in researcher
    assert "/staff/irb/audit" in irb and "/staff/researcher/" not in irb
    assert "/staff/protocol" in irb and "/staff/protocol" in researcher
    assert "/staff/irb/audit" in admin and "/staff/researcher/safety" in admin


@pytest.mark.parametrize(("role", "path"), [
    ("researcher", "/staff/irb/consent-log"),
    ("researcher", "/staff/irb/consent-log.csv"),
    ("researcher", "/staff/irb/audit"),
    ("researcher", "/staff/irb/safety-events"),
    ("irb", "/staff/researcher/enrollment"),
    ("irb", "/staff/researcher/safety"),
])
def test_a_role_opening_another_roles_page_gets_a_clear_403(app, engine, role, path):
    web = _login(app, engine, role)
    rows = _audit_rows(engine)
    response = web.get(path)
    assert response.status_code == 403
    assert f"The {role} role may not open this page" in response.text
    assert response.headers["content-type"].startswith("text/html")
    assert _audit_rows(engine) == rows  # refused before any access was logged


def test_irb_cannot_acknowledge_a_safety_event(app, client, smtp, engine):
    _safety_event(client, smtp, "irb-ack@example.org")
    web = _login(app, engine, "irb")
    with Session(engine) as s:
        event_id = s.exec(select(SafetyEvent.id)).one()
    page = web.get("/staff")
    response = web.post(f"/staff/researcher/safety/{event_id}/acknowledge",
                        data={"csrf_token": _csrf(page.text), "note": "looked"})
    assert response.status_code == 403
    with Session(engine) as s:
        assert s.get(SafetyEvent, event_id).acknowledged_at is None  # type: ignore[union-attr]


def test_participant_session_cookie_opens_no_staff_page(app, client, smtp):
    person = joined_and_consented(client, smtp, "nosy@example.org")
    web = TestClient(app)
    web.get(f"/p/login/{fresh_link(client, smtp, person)}")
    participant_cookie = dict(web.cookies)
    assert participant_cookie  # the participant is logged in
    for path in ("/staff", "/staff/researcher/enrollment", "/staff/researcher/safety",
                 "/staff/irb/audit"):
        assert web.get(path, follow_redirects=False).status_code == 303
    # Nor does the participant's token pass as a staff cookie.
    as_staff = TestClient(app, cookies={STAFF_COOKIE: person.token})
    assert as_staff.get("/staff/irb/audit", follow_redirects=False).status_code == 303


def _calls(dependant) -> set:  # type: ignore[no-untyped-def]
    found = {dependant.call}
    for sub in dependant.dependencies:
        found |= _calls(sub)
    return found


def _walk(routes, prefix: str = "") -> list:  # type: ignore[no-untyped-def]
    """(full path, route), inside included routers too (FastAPI keeps them nested, each with
    its own prefix in include_context)."""
    from fastapi.routing import APIRoute

    found = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append((prefix + route.path, route))
        elif hasattr(route, "original_router"):
            context = getattr(route, "include_context", None)
            found += _walk(route.original_router.routes,
                           prefix + (getattr(context, "prefix", "") or ""))
    return found


def _staff_routes(app):  # type: ignore[no-untyped-def]
    return [(method, path, _calls(route.dependant)) for path, route in _walk(app.routes)
            if path.startswith("/staff") for method in route.methods]


# Pages of more than one role, outside the roles' own folders.
SHARED_PAGES = {"/staff/protocol": {"researcher", "irb", "admin"}}


def test_every_staff_page_needs_a_session_and_role_pages_check_the_role(app):
    from app.web.console_common import web_staff

    routes = _staff_routes(app)
    assert len(routes) > 15
    for method, path, calls in routes:
        if path == "/staff/login" or (method, path) == ("POST", "/staff/logout"):
            continue
        assert web_staff in calls, (method, path)
        shared = SHARED_PAGES.get(path)
        if shared or path.startswith(("/staff/researcher", "/staff/irb", "/staff/admin")):
            allowed = shared or {path.split("/")[2], "admin"}
            if path.startswith("/staff/researcher/safety"):  # the safety role works the queue
                allowed.add("safety")
            checks = [c for c in calls if hasattr(c, "allowed_roles")]
            assert checks and all(c.allowed_roles == allowed for c in checks), path


def test_every_staff_form_refuses_a_post_without_the_csrf_token(app, engine):
    web = _login(app, engine, "admin")
    rows = _audit_rows(engine)
    posts = [path for method, path, _ in _staff_routes(app) if method == "POST"]
    assert {"/staff/login", "/staff/logout", "/staff/researcher/exports"} <= set(posts)
    for path in posts:
        url = (path.replace("{event_id}", "1").replace("{job_id}", "00000000-job")
               .replace("{member_id}", "1"))
        response = web.post(url, data={"note": "x", "token": "x"})
        assert response.status_code == 403, (path, response.status_code)
        assert "expired or did not come from this site" in response.text
    assert _audit_rows(engine) == rows
    assert web.get("/staff").status_code == 200  # and the session still works

"""Rate limits: enrollment (per IP and per address), magic links and staff login, API and forms."""

from __future__ import annotations

import re
import uuid

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlmodel import func, select

from app.config import Settings
from app.main import create_app
from app.participants.models import Participant
from tests.support.flows import ELIGIBLE, STUDY, fresh_link, join

ENROLL = f"/api/v1/studies/{STUDY}/enrollments"
GENEROUS = "1000/minute"


@pytest.fixture
def limited(settings, clock, loaded_study):  # type: ignore[no-untyped-def]
    """An app factory with tight limits for the rule under test and generous ones elsewhere."""
    apps = []

    def make(**limits: str):  # type: ignore[no-untyped-def]
        values = {"rate_limit_enroll_per_ip": GENEROUS, "rate_limit_enroll_per_email": GENEROUS,
                  "rate_limit_magic_link_per_ip": GENEROUS,
                  "rate_limit_staff_login_per_ip": GENEROUS,
                  "rate_limit_auth_failures_per_ip": GENEROUS} | limits
        application = create_app(Settings(**settings.model_dump() | values), clock=clock)
        apps.append(application)
        return application

    yield make
    for application in apps:
        application.state.engine.dispose()


def _address(name: str) -> str:
    """A fresh address: the SMTP sink lives for the whole run, across both databases."""
    return f"{name}-{uuid.uuid4().hex[:8]}@example.org"


def _enroll(client: TestClient, email: str):  # type: ignore[no-untyped-def]
    return client.post(ENROLL, json={"email": email, "screening": ELIGIBLE})


def _assert_limited(response, *, html: bool = False) -> int:  # type: ignore[no-untyped-def]
    assert response.status_code == 429, response.text
    retry = int(response.headers["retry-after"])
    assert retry >= 1
    if html:
        assert "text/html" in response.headers["content-type"]
        assert "Too many attempts" in response.text
    else:
        error = response.json()["error"]
        assert error["code"] == "rate_limited" and error["details"]["retry_after"] == retry
        assert "Too many attempts" in error["message"]
    return retry


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match
    return match.group(1)


def test_one_address_cannot_be_flooded_with_links(limited, smtp, session):
    app = limited(rate_limit_enroll_per_email="2/hour")
    with TestClient(app) as client:
        flood = _address("flood")
        assert _enroll(client, flood).status_code == 202
        assert _enroll(client, " " + flood.upper()).status_code == 202  # the same address
        sent = len(smtp.to(flood))
        _assert_limited(_enroll(client, flood))
        assert len(smtp.to(flood)) == sent  # no third message went out
        assert _enroll(client, _address("other")).status_code == 202
    session.rollback()
    assert session.exec(select(func.count()).select_from(Participant)).one() == 2


def test_one_client_cannot_probe_many_addresses(limited, smtp):
    app = limited(rate_limit_enroll_per_ip="3/minute")
    with TestClient(app) as client:
        for _ in range(3):
            assert _enroll(client, _address("probe")).status_code == 202
        last = _address("probe")
        _assert_limited(_enroll(client, last))
        assert smtp.to(last) == []
    with TestClient(app, client=("10.1.2.3", 5000)) as elsewhere:  # another client IP
        assert _enroll(elsewhere, last).status_code == 202


def test_the_join_form_shares_the_enrollment_limit(limited):
    app = limited(rate_limit_enroll_per_email="1/hour")
    with TestClient(app) as web:
        page = web.get(f"/join/{STUDY}")
        form = {"csrf_token": _csrf(page.text), "lang": "en", "email": _address("form"),
                "timezone": "Europe/Berlin", "screening_adult": "yes",
                "screening_uses_ai_chat": "yes"}
        assert web.post(f"/join/{STUDY}", data=form).status_code == 200
        _assert_limited(web.post(f"/join/{STUDY}", data=form), html=True)
        _assert_limited(_enroll(web, form["email"]))  # and the API counts the same


def test_magic_links_cannot_be_guessed(limited, smtp):
    app = limited(rate_limit_magic_link_per_ip="5/minute")
    with TestClient(app) as client:
        person = join(client, smtp, _address("guess"))  # exchanging its link was one try
        link = fresh_link(client, smtp, person)
        for i in range(4):
            response = client.get(f"/p/login/guess-{i:04d}", follow_redirects=False)
            assert response.status_code == 401
        # The limit is spent: every further guess waits, while the person's own emailed link
        # still opens (a live credential is never blocked; links are 256-bit random).
        _assert_limited(client.get("/p/login/guess-9999", follow_redirects=False), html=True)
        assert client.get(f"/p/login/{link}", follow_redirects=False).status_code == 303
        _assert_limited(client.get(f"/p/login/{link}", follow_redirects=False),
                        html=True)  # used up now: a guess like any other


def test_staff_login_attempts_are_limited(limited):
    app = limited(rate_limit_staff_login_per_ip="3/minute")
    with TestClient(app) as web:
        csrf = _csrf(web.get("/staff/login").text)
        for i in range(3):
            response = web.post("/staff/login", data={"csrf_token": csrf, "token": f"no{i}"})
            assert response.status_code == 401
        _assert_limited(web.post("/staff/login", data={"csrf_token": csrf, "token": "x"}),
                        html=True)
        assert web.get("/staff/login").status_code == 200  # only attempts are counted


def test_bearer_tokens_cannot_be_guessed_on_any_route(limited, smtp):
    app = limited(rate_limit_auth_failures_per_ip="3/minute")
    with TestClient(app) as client:
        person = join(client, smtp, _address("bearer"))
        assert client.get("/api/v1/me", headers=person.headers).status_code == 200
        for i in range(3):
            guess = {"Authorization": f"Bearer guess-{i:04d}"}
            assert client.get("/api/v1/me/surveys", headers=guess).status_code == 401
        _assert_limited(client.get("/api/v1/me", headers={"Authorization": "Bearer guess-9"}))
        # the person's own token still works from this address (tests/hostile/
        # test_failed_login_limit.py has the whole story)
        assert client.get("/api/v1/me", headers=person.headers).status_code == 200
        assert client.get("/healthz").status_code == 200  # probes are never limited
    with TestClient(app, client=("10.9.9.9", 5000)) as elsewhere:
        assert elsewhere.get("/api/v1/me", headers=person.headers).status_code == 200


def test_limits_can_be_switched_off(limited):
    app = limited(rate_limit_enroll_per_email="1/hour", rate_limits_enabled="false")
    with TestClient(app) as client:
        address = _address("off")
        assert [_enroll(client, address).status_code for _ in range(3)] == [202] * 3


@pytest.mark.parametrize("notation", ["often", "5 per fortnight", "/minute"])
def test_a_bad_limit_setting_is_refused(notation):
    with pytest.raises(ValidationError, match="N/period"):
        Settings(environment="test", rate_limit_enroll_per_ip=notation)

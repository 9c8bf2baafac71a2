"""Failed sign-ups do not lock a person out of their own address: only a sign-up that sends a
message counts against the address's limit (5/hour by default), so mistakes on the join form, or
someone else typing the address wrongly, cost nothing, while links to one address stay limited."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.support.flows import ELIGIBLE, STUDY
from tests.support.pages import csrf_of, fresh_address, join_form

GENEROUS = "1000/minute"
ENROLL = f"/api/v1/studies/{STUDY}/enrollments"


@pytest.fixture
def default_limits(settings, clock, loaded_study):  # type: ignore[no-untyped-def]
    """The shipped per-address limit; the per-IP ones generous, so only it is under test."""
    values = {"rate_limit_enroll_per_ip": GENEROUS,
              "rate_limit_enroll_per_email": Settings.model_fields[
                  "rate_limit_enroll_per_email"].default,
              "rate_limit_magic_link_per_ip": GENEROUS}
    assert values["rate_limit_enroll_per_email"] == "5/hour;20/day"
    application = create_app(Settings(**settings.model_dump() | values), clock=clock)
    yield application
    application.state.engine.dispose()


def _failed_attempts(web: TestClient, email: str) -> list[int]:
    """Six ways to get the join form wrong with this address: none sends a message."""
    page = web.get(f"/join/{STUDY}")
    assert page.status_code == 200
    csrf = csrf_of(page)
    form = {"csrf_token": csrf, "email": email, "timezone": "Europe/Berlin",
            "screening_adult": "yes", "screening_uses_ai_chat": "yes"}
    attempts = [
        form | {"screening_adult": ""},  # a question left out
        form | {"timezone": "Nowhere/Land"},  # a time zone that does not exist
        {k: v for k, v in form.items() if k != "screening_uses_ai_chat"},
        form | {"csrf_token": "stale"},  # an old tab
        form | {"screening_adult": "no"},  # ineligible (a slip of the finger)
        form | {"timezone": "Moon/Base"},
    ]
    return [web.post(f"/join/{STUDY}", data=data).status_code for data in attempts]


def test_failed_sign_ups_do_not_lock_the_address(default_limits, smtp):
    web = TestClient(default_limits)
    email = fresh_address("mistakes")
    assert _failed_attempts(web, email) == [422, 422, 422, 403, 200, 422]
    assert smtp.to(email) == []
    joined = join_form(web, email)
    assert joined.status_code == 200 and 'id="check-email"' in joined.text
    assert "/p/login/" in smtp.wait_for(email)[-1].link()  # the link reached the mail server

    # the same through the API: six refused bodies, then the link
    other = fresh_address("api-mistakes")
    for screening in ({}, {"adult": True}, {"adult": "maybe"}, {"nope": True},
                      {"adult": True, "uses_ai_chat": True, "extra": True}, {"adult": None}):
        refused = web.post(ENROLL, json={"email": other, "screening": screening})
        assert refused.status_code == 422, refused.text
    assert web.post(ENROLL, json={"email": other, "screening": ELIGIBLE}).status_code == 202
    assert len(smtp.wait_for(other)) == 1


def test_links_to_one_address_stay_limited(default_limits, smtp, clock):
    web = TestClient(default_limits)
    email = fresh_address("flooded")
    answers = []
    for _ in range(5):
        answers.append(join_form(web, email).status_code)
        clock.advance(minutes=1)  # (the app's clock: a later "already enrolled" message is new)
    assert answers == [200] * 5
    smtp.wait_for(email, count=5)
    flood = join_form(web, email)
    assert flood.status_code == 429 and int(flood.headers["retry-after"]) > 60 * 50
    api = web.post(ENROLL, json={"email": email.upper(), "screening": ELIGIBLE})
    assert api.status_code == 429  # the API and the form share the address's count
    assert len(smtp.to(email)) == 5
    # another address from the same browser is unaffected
    assert join_form(web, fresh_address("neighbour")).status_code == 200

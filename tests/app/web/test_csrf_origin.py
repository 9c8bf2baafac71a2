"""Web hardening (#13 part 5): CSRF tokens bound to the session (an HMAC under the app's key,
not a cookie an attacker can set), and the JSON API taking the session cookie only from this
site's own pages (Origin / Sec-Fetch-Site); bearer tokens are not affected."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from sqlmodel import Session

from app.auth import service as auth
from app.web.common import PRESESSION_COOKIE
from tests.support.flows import STUDY, joined_and_consented
from tests.support.pages import csrf_of, fresh_address, join_form, signed_in_browser

SITE = "http://testserver"  # the test settings' base URL


def _status(web: TestClient) -> str:
    return web.get("/api/v1/me").json()["status"]


def _pause(web: TestClient, token: str):  # type: ignore[no-untyped-def]
    return web.post("/p/settings/pause", data={"csrf_token": token, "action": "pause"},
                    follow_redirects=False)


def test_a_form_token_is_bound_to_its_session(app, smtp):
    alice, bob = signed_in_browser(app, smtp, "en"), signed_in_browser(app, smtp, "de")
    alices, bobs = csrf_of(alice.get("/p/settings")), csrf_of(bob.get("/p/settings"))
    assert alices != bobs
    assert alices not in alice.cookies.values()  # derived (HMAC), not a copy of a cookie
    refused = _pause(bob, alices)  # Alice's token in Bob's browser
    assert refused.status_code == 403 and 'data-code="csrf_failed"' in refused.text
    assert _status(bob) == "active"
    assert _pause(bob, bobs).status_code == 303 and _status(bob) == "paused"
    # the token stays the same for the whole session, on every page
    assert csrf_of(alice.get("/p")) == csrf_of(alice.get("/help")) == alices


def test_a_cookie_an_attacker_can_set_does_not_make_a_token(app, smtp):
    """The old double-submit check compared the form field with a cookie: whoever could set
    the cookie (a sibling subdomain, a man in the middle on http) chose the token."""
    stranger = TestClient(app)
    for cookie in ("wp_csrf", PRESESSION_COOKIE):
        stranger.cookies.set(cookie, "attacker-chosen-value-0123456789")
        answer = join_form(stranger, fresh_address("forged"), csrf_token="attacker-chosen-"
                           "value-0123456789")
        assert answer.status_code == 403 and 'data-code="csrf_failed"' in answer.text
    # Nor can the attacker plant their own genuine pre-session pair in a signed-in browser:
    attacker = TestClient(app)
    attackers_token = csrf_of(attacker.get(f"/join/{STUDY}"))
    victim = signed_in_browser(app, smtp, "en")
    victim.cookies.set(PRESESSION_COOKIE, attacker.cookies[PRESESSION_COOKIE])
    assert _pause(victim, attackers_token).status_code == 403
    assert _status(victim) == "active"


def test_signing_in_and_out_moves_the_binding(app, smtp):
    """Before sign-in the join form's token is bound to a random pre-session id; the session
    replaces it, and a page that ends the session binds its forms to a new pre-session id."""
    web = signed_in_browser(app, smtp, "en", consented=True)
    before_sign_in = TestClient(app)
    join_token = csrf_of(before_sign_in.get(f"/join/{STUDY}"))
    assert before_sign_in.cookies.get(PRESESSION_COOKIE)
    web.cookies.set(PRESESSION_COOKIE, before_sign_in.cookies[PRESESSION_COOKIE])
    assert _pause(web, join_token).status_code == 403  # the session decides, not the id
    choose = web.post("/p/withdraw", data={"csrf_token": csrf_of(web.get("/p/withdraw")),
                                           "scope": "stop_contact"})
    fields = {name: choose.text.split(f'name="{name}" value="', 1)[1].split('"', 1)[0]
              for name in ("withdrawal_id", "confirm_token")}
    done = web.post("/p/withdraw/confirm", data={"csrf_token": csrf_of(choose), **fields})
    assert done.status_code == 200 and "wp_session" not in web.cookies
    # the withdrawal page's own forms (the language switch) still work without the session
    switched = web.post("/p/language", data={"csrf_token": csrf_of(done), "language": "de",
                                             "next": "/help"}, follow_redirects=False)
    assert switched.status_code == 303


def _staff_browser(app, engine, name: str) -> TestClient:  # type: ignore[no-untyped-def]
    with Session(engine) as s:
        token = auth.add_staff(s, name, "researcher")
    web = TestClient(app)
    login_token = csrf_of(web.get("/staff/login"))
    signed = web.post("/staff/login", data={"csrf_token": login_token, "token": token},
                      follow_redirects=False)
    assert signed.status_code == 303
    assert csrf_of(web.get("/staff")) != login_token  # now bound to the staff session
    return web


def test_staff_form_tokens_are_bound_to_the_staff_session(app, engine):
    ann, ben = _staff_browser(app, engine, "csrf-ann"), _staff_browser(app, engine, "csrf-ben")
    anns = csrf_of(ann.get("/staff"))
    refused = ben.post("/staff/logout", data={"csrf_token": anns}, follow_redirects=False)
    assert refused.status_code == 403
    assert ben.get("/staff", follow_redirects=False).status_code == 200  # still signed in
    out = ben.post("/staff/logout", data={"csrf_token": csrf_of(ben.get("/staff"))},
                   follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/staff/login"
    # staff pages switch language with ?lang= (no form to /p/language, which never receives
    # the staff cookie): every CSRF field on a staff page carries the staff-bound token
    page = ann.get("/staff")
    assert 'action="/p/language"' not in page.text
    assert set(re.findall(r'name="csrf_token" value="([^"]+)"', page.text)) == {
        anns}


# ---- the JSON API and the session cookie -------------------------------------------------------
def test_the_api_takes_the_cookie_only_from_this_sites_pages(app, smtp):
    web = signed_in_browser(app, smtp, "en")
    refusals = [
        web.post("/api/v1/me/pause", headers={"Origin": "https://evil.example"}),
        web.post("/api/v1/me/pause", headers={"Origin": "null"}),  # a sandboxed frame
        web.post("/api/v1/me/pause"),  # neither Origin nor Sec-Fetch-Site: a script, a form
        web.post("/api/v1/me/pause", headers={"Sec-Fetch-Site": "cross-site"}),
        web.post("/api/v1/me/pause", headers={"Sec-Fetch-Site": "same-site"}),
        web.post("/api/v1/me/pause", headers={"Sec-Fetch-Site": "none"}),
        web.get("/api/v1/me", headers={"Origin": "https://evil.example"}),
        web.get("/api/v1/me", headers={"Sec-Fetch-Site": "cross-site"}),
        web.post("/api/v1/me/sign-out-everywhere", headers={"Origin": f"{SITE}.evil.example"}),
    ]
    for answer in refusals:
        assert answer.status_code == 403, (answer.request.method, answer.request.headers)
        assert answer.json() == {"error": {
            "code": "cross_site_request", "message": answer.json()["error"]["message"],
            "details": {"header": "Origin"}}}
    assert _status(web) == "active"  # nothing changed (and a plain read works)
    same_site = {"Origin": SITE}
    assert web.post("/api/v1/me/pause", headers=same_site).json()["status"] == "paused"
    assert web.post("/api/v1/me/resume", headers={"Sec-Fetch-Site": "same-origin"}
                    ).json()["status"] == "active"
    assert web.get("/api/v1/me", headers={"Sec-Fetch-Site": "none"}).status_code == 200


def test_bearer_tokens_and_pages_are_not_affected(app, client, smtp):
    person = joined_and_consented(client, smtp, "origin-bearer@example.org")
    answer = client.post("/api/v1/me/pause", headers=person.headers | {
        "Origin": "https://another-client.example", "Sec-Fetch-Site": "cross-site"})
    assert answer.status_code == 200 and answer.json()["status"] == "paused"
    # a page opened from a link in an email (cross-site navigation) still opens
    web = signed_in_browser(app, smtp, "en")
    assert web.get("/p", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 200
    # public API routes do not read the cookie, so a stray one changes nothing
    enrolled = web.post(f"/api/v1/studies/{STUDY}/enrollments", json={
        "email": fresh_address("public"), "screening": {"adult": True, "uses_ai_chat": True}})
    assert enrolled.status_code == 202

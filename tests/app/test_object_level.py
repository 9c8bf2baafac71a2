"""Two participants: every participant route with one's ids and the other's credentials."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.app.test_route_guards import _api_routes
from tests.support.flows import fresh_link, joined_and_consented
from tests.support.pages import csrf_of


def _alice_ids(client, alice):  # type: ignore[no-untyped-def]
    record_id = client.get("/api/v1/me/consent/records", headers=alice.headers).json()[0]["id"]
    instance_id = client.get("/api/v1/me/surveys", headers=alice.headers).json()[0]["id"]
    withdrawal = client.post("/api/v1/me/withdrawal", json={"scope": "stop_contact"},
                             headers=alice.headers).json()
    token_id = client.post("/api/v1/me/api-tokens", headers=alice.headers).json()["id"]
    return {"record_id": record_id, "instance_id": instance_id, "token_id": token_id,
            "withdrawal_id": withdrawal["withdrawal_id"],
            "confirm_token": withdrawal["confirm_token"]}


def test_every_route_with_an_id_refuses_the_other_participant(app, client, smtp):
    alice = joined_and_consented(client, smtp, "alice@example.org")
    bob = joined_and_consented(client, smtp, "bob@example.org")
    ids = _alice_ids(client, alice)
    answers = {"answers": {f"who5_{i}": 3 for i in range(1, 6)}}
    calls = {
        ("GET", "/api/v1/me/consent/records/{record_id}"): None,
        ("GET", "/api/v1/me/consent/records/{record_id}/copy.pdf"): None,
        ("POST", "/api/v1/me/consent/records/{record_id}/email"): None,
        ("POST", "/api/v1/me/withdrawal/{withdrawal_id}/confirm"):
            {"confirm_token": ids["confirm_token"]},
        ("GET", "/api/v1/me/surveys/{instance_id}"): None,
        ("POST", "/api/v1/me/surveys/{instance_id}/responses"): answers,
        ("GET", "/p/consent/records/{record_id}"): None,
        ("POST", "/p/consent/records/{record_id}/email"): {},
        ("GET", "/p/surveys/{instance_id}"): None,
        ("GET", "/p/surveys/{instance_id}/thanks"): None,
        ("POST", "/p/surveys/{instance_id}"): {"who5_1": "3"},
        ("DELETE", "/api/v1/me/api-tokens/{token_id}"): None,
    }
    with_ids = {(m, r.path) for r in _api_routes(app.routes) for m in r.methods
                if "{" in r.path and r.path.startswith(("/api/v1/me", "/p/"))
                and "{token}" not in r.path}
    assert with_ids <= set(calls), f"add these routes to the test: {with_ids - set(calls)}"
    web = TestClient(app)
    web.get(f"/p/login/{fresh_link(client, smtp, bob)}")  # Bob's browser session
    csrf = csrf_of(web.get("/p"))  # Bob's own token passes: the object check must refuse
    for (method, template), body in calls.items():
        path = template.format(**ids)
        if template.startswith("/p/"):
            form = None if body is None else body | {"csrf_token": csrf}
            response = web.request(method, path, data=form, follow_redirects=False)
        else:
            headers = bob.headers | ({"Idempotency-Key": "steal-attempt-1"} if body else {})
            response = client.request(method, path, json=body, headers=headers)
        assert response.status_code == 404, (method, path, response.status_code)
    # Alice is untouched: still active, her survey still open, her withdrawal still pending.
    me = client.get("/api/v1/me", headers=alice.headers).json()
    assert me["status"] == "active"
    survey = client.get(f"/api/v1/me/surveys/{ids['instance_id']}", headers=alice.headers)
    assert survey.status_code == 200
    tokens = client.get("/api/v1/me/api-tokens", headers=alice.headers).json()
    assert [t["id"] for t in tokens] == [ids["token_id"]]


def test_tokens_are_not_interchangeable_between_people(client, smtp):
    alice = joined_and_consented(client, smtp, "a2@example.org")
    bob = joined_and_consented(client, smtp, "b2@example.org")
    assert alice.token != bob.token
    mine = client.get("/api/v1/me/consent/records", headers=bob.headers).json()
    theirs = client.get("/api/v1/me/consent/records", headers=alice.headers).json()
    assert {r["id"] for r in mine}.isdisjoint({r["id"] for r in theirs})

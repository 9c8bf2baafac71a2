"""Malformed, oversized, unknown and out-of-range input: a clear 4xx, the error body, no write."""

from __future__ import annotations

import pytest
from sqlmodel import func, select

from app.audit.models import AuditEvent
from app.participants.models import Participant

ENROLL = "/api/v1/studies/keep4o-panel/enrollments"
GOOD = {"email": "ok@example.org", "screening": {"adult": True, "uses_ai_chat": True}}


def _error(response, status: int) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and {"code", "message", "details"} <= set(body["error"])
    assert body["error"]["message"]
    return body["error"]


def _rows(session) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    session.rollback()
    return (session.exec(select(func.count()).select_from(Participant)).one(),
            session.exec(select(func.count()).select_from(AuditEvent)).one())


@pytest.mark.parametrize(("content", "headers", "status"), [
    (b"{not json", {"content-type": "application/json"}, 422),
    (b'{"email": "\xff\xfe"}', {"content-type": "application/json"}, 400),
    (b"[1, 2, 3]", {"content-type": "application/json"}, 422),
    (b"[" * 5000 + b"]" * 5000, {"content-type": "application/json"}, 400),
    (b'{"email": 1e999999}', {"content-type": "application/json"}, 422),
    (b"x" * 70_000, {"content-type": "application/json"}, 413),
])
def test_malformed_bodies(client, session, content, headers, status):
    before = _rows(session)
    error = _error(client.post(ENROLL, content=content, headers=headers), status)
    if status == 400:
        assert error["code"] == "invalid_body" and "JSON" in error["message"]
    assert _rows(session) == before


def test_a_lying_content_length_is_refused(client):
    response = client.post(ENROLL, content=b"{}", headers={"content-length": "99999999",
                                                           "content-type": "application/json"})
    assert response.status_code == 413


@pytest.mark.parametrize(("change", "field"), [
    ({"unexpected": 1}, "unexpected"),
    ({"email": "not-an-address"}, "email"),
    ({"timezone": "Europe/Atlantis"}, "timezone"),
    ({"language": "klingon"}, "language"),
    ({"screening": {"adult": True}}, "screening.uses_ai_chat"),
    ({"screening": {"adult": True, "uses_ai_chat": True, "extra": True}}, "screening.extra"),
    ({"screening": {"adult": "perhaps", "uses_ai_chat": True}}, "screening.adult"),
])
def test_invalid_enrollment_fields_are_named(client, session, change, field):
    before = _rows(session)
    error = _error(client.post(ENROLL, json=GOOD | change), 422)
    assert field in error["message"]
    assert _rows(session) == before


def test_unknown_study_and_routes(client):
    assert _error(client.post("/api/v1/studies/nope/enrollments", json=GOOD), 404)[
        "code"] == "not_found"
    assert _error(client.get("/api/v1/nothing-here"), 404)["code"] == "not_found"
    assert _error(client.delete("/api/v1/me"), 405)["code"] == "method_not_allowed"


def test_garbage_tokens_and_header_injection(client):
    for token in ("x", "a" * 5000, "abc\r\nX-Injected: 1", "' OR 1=1 --"):
        try:
            response = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
        except ValueError:  # the HTTP client itself refuses CR/LF in headers
            continue
        assert _error(response, 401)["code"] == "unauthorized"
        assert "X-Injected" not in response.headers

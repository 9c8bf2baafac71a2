"""Hostile input against participant, researcher and irb routes: a clear 4xx with the error
body, never a 500, never a write.

The JSON routes are discovered from the OpenAPI schema, so a route added later is covered too.
Each gets valid credentials for its kind, so the hostile part is what is judged, not a missing
token.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import pytest
from sqlmodel import Session, func, select

from app.audit.models import AuditEvent
from app.auth import service as auth
from app.surveys.models import SurveyResponse
from tests.support.aio import run_async
from tests.support.flows import STUDY, joined_and_consented

JSON = {"content-type": "application/json"}
DEEP = b'{"a":' * 5000 + b"1" + b"}" * 5000
HUGE_INT = b"1" + b"0" * 1000  # 10**1000 as an int literal
HUGER_INT = b"1" + b"0" * 5000  # past Python's int-from-string digit limit
BODIES: dict[str, tuple[bytes, dict[str, str], set[int]]] = {
    "oversized": (b'{"x": "' + b"a" * 70_000 + b'"}', JSON, {413}),
    "deeply nested": (DEEP, JSON, {400}),
    "deep array": (b"[" * 100_000 + b"]" * 100_000, JSON, {413}),
    "invalid utf-8": (b'{"answers": {"a": "\xff\xfe\xc3\x28"}}', JSON, {400}),
    # JSON's own detection reads UTF-16, so this is judged as a (wrong) JSON value.
    "utf-16": ('"x@example.org"'.encode("utf-16"), JSON, {400, 422}),
    "lone surrogate": (b'{"email": "\\ud800@example.org", "answers": {"a": "\\udfff"}}', JSON,
                       {404, 409, 422}),
    "1e400": (b'{"answers": {"who5_1": 1e400}, "email": 1e400, "version": 1e400}', JSON,
              {422}),
    "10**1000": (b'{"answers": {"who5_1": ' + HUGE_INT + b'}, "email": ' + HUGE_INT + b"}",
                 JSON, {422}),
    "10**5000": (b'{"answers": {"who5_1": ' + HUGER_INT + b"}}", JSON, {400}),
    "NaN": (b'{"answers": {"who5_1": NaN}, "email": NaN, "version": NaN}', JSON, {422}),
    "Infinity": (b'{"answers": {"who5_1": Infinity, "who5_2": -Infinity}}', JSON, {422}),
    "null": (b"null", JSON, {422}),
    "array": (b"[1, 2]", JSON, {422}),
    "string": (b'"hello"', JSON, {422}),
    "truncated": (b'{"answers": {', JSON, {422}),
    "empty": (b"", JSON, {422}),
    "form instead of JSON": (b"email=a%40b.org", {"content-type":
                                                  "application/x-www-form-urlencoded"}, {415}),
    "text instead of JSON": (b'{"email": "a@b.org"}', {"content-type": "text/plain"}, {415}),
    "no content type": (b'{"email": "a@b.org"}', {}, {415}),
    "multipart": (b"--x\r\n\r\n--x--", {"content-type": "multipart/form-data; boundary=x"},
                  {415}),
    "lying length": (b"{}", JSON | {"content-length": "99999999999999999999"}, {413}),
    "negative length": (b"{}", JSON | {"content-length": "-5"}, {400}),
    "text length": (b"{}", JSON | {"content-length": "lots"}, {400}),
}


def _error(response: Any, allowed: set[int]) -> dict[str, Any]:
    assert response.status_code in allowed, (response.status_code, response.text[:300])
    body = response.json()
    assert set(body) == {"error"}, body
    assert {"code", "message", "details"} <= set(body["error"])
    assert body["error"]["message"] and body["error"]["code"]
    return body["error"]


def _count(session: Session, model: Any) -> int:
    session.rollback()
    return session.exec(select(func.count()).select_from(model)).one()


@pytest.fixture
def actors(client, smtp, engine):  # type: ignore[no-untyped-def]
    """Credentials for each kind of route, and an open survey to aim at."""
    person = joined_and_consented(client, smtp, f"hostile-{id(client)}@example.org")
    surveys = client.get("/api/v1/me/surveys", headers=person.headers).json()
    with Session(engine) as s:
        researcher = auth.add_staff(s, "hostile-researcher", "researcher")
        irb = auth.add_staff(s, "hostile-irb", "irb")
        admin = auth.add_staff(s, "hostile-admin", "admin")
    return {"participant": person.headers,
            "staff": {"Authorization": f"Bearer {admin}"},
            "researcher": {"Authorization": f"Bearer {researcher}"},
            "irb": {"Authorization": f"Bearer {irb}"},
            "instance_id": next(s["id"] for s in surveys if s["instrument"] == "who5")}


def _auth_for(path: str, actors: dict[str, Any]) -> dict[str, str]:
    for kind in ("researcher", "irb", "staff"):
        if path.startswith(f"/api/v1/{kind}/"):
            return actors[kind]
    return actors["participant"]


def _concrete(path: str, actors: dict[str, Any]) -> str:
    return (path.replace("{instance_id}", actors["instance_id"]).replace("{key}", STUDY)
            .replace("{", "").replace("}", ""))


def _operations(app: Any, *, with_body: bool) -> list[tuple[str, str, dict[str, Any]]]:
    found = []
    for path, item in app.openapi()["paths"].items():
        for method, operation in item.items():
            if ("requestBody" in operation) == with_body and path.startswith("/api/v1/"):
                found.append((method.upper(), path, operation))
    return found


def test_every_json_route_refuses_hostile_bodies(app, client, actors, session):
    operations = _operations(app, with_body=True)
    kinds = {p.split("/")[3] for _, p, _ in operations}
    assert {"me", "studies", "researcher"} <= kinds, kinds  # participant and staff routes
    before = (_count(session, SurveyResponse), _count(session, AuditEvent))
    for method, path, _ in operations:
        url = _concrete(path, actors)
        for name, (content, headers, statuses) in BODIES.items():
            response = client.request(method, url, content=content,
                                      headers=_auth_for(path, actors) | headers)
            assert response.status_code < 500, (method, path, name, response.text[:300])
            try:
                _error(response, statuses)
            except AssertionError as exc:
                raise AssertionError(f"{method} {path} {name}: {exc}") from exc
    assert (_count(session, SurveyResponse), _count(session, AuditEvent)) == before


@pytest.mark.parametrize("value", [
    b"1e400", HUGE_INT, b"-" + HUGE_INT, b"NaN", b"Infinity", b"-Infinity", b"1.5",
    b'"3"', b"true", b"[3]", b'{"value": 3}', b'"' + b"\\u0000" * 10 + b'"',
])
def test_survey_answers_refuse_odd_numbers(client, actors, session, value):
    before = _count(session, SurveyResponse)
    body = b'{"answers": {"who5_1": ' + value + b', "who5_2": 3, "who5_3": 3, "who5_4": 3, ' \
        b'"who5_5": 3}}'
    response = client.post(f"/api/v1/me/surveys/{actors['instance_id']}/responses",
                           content=body, headers=actors["participant"] | JSON |
                           {"Idempotency-Key": "odd-number-0001"})
    if value in (b'"3"',):  # a numeric string is how form posts arrive: accepted as 3
        assert response.status_code == 201, response.text
        return
    error = _error(response, {400, 422})
    assert "who5_1" in error["message"] or error["code"] == "invalid_body"
    assert _count(session, SurveyResponse) == before


QUERY_VALUES = ["1e400", "9" * 5000, "NaN", "-Infinity", "\x00", "%ff%fe", "😀" * 500,
                "' OR 1=1 --", "2026-13-45", "../../etc/passwd"]


def test_every_api_query_and_path_parameter_survives_hostile_values(app, client, actors):
    for method, path, operation in _operations(app, with_body=False):
        if method != "GET":
            continue
        params = [p for p in operation.get("parameters", []) if p["in"] in ("query", "path")]
        for value in QUERY_VALUES:
            url = path
            query = {}
            for p in params:
                if p["in"] == "path":
                    raw = value if value.startswith("%") else quote(value, safe="")
                    url = url.replace("{" + p["name"] + "}", raw)
                else:
                    query[p["name"]] = value
            response = client.get(url, params=query, headers=_auth_for(path, actors))
            assert response.status_code < 500, (path, value[:20], response.text[:300])
            if response.status_code >= 400:
                _error(response, set(range(400, 500)))


def _raw_asgi(app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]],
              body: bytes = b"") -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Call the app directly with header bytes no HTTP client would send."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": b"", "root_path": "", "headers": headers,
             "client": ("203.0.113.9", 1234), "server": ("testserver", 80)}
    sent: list[dict[str, Any]] = []
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if delivered:
            await asyncio.sleep(3600)
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    run_async(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    content = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], start.get("headers", []), content


@pytest.mark.parametrize("authorization", [
    b"Bearer abc\r\nX-Injected: 1", b"Bearer abc\nSet-Cookie: p=1", b"Bearer \xff\xfe\x00",
    b"Bearer " + b"a" * 16_000, b"Basic Zm9vOmJhcg==", b"bearer", b"",
])
def test_header_injection_in_credentials(app, client, authorization):
    status, headers, content = _raw_asgi(app, "GET", "/api/v1/me",
                                         [(b"host", b"testserver"),
                                          (b"authorization", authorization)])
    assert status == 401, content[:300]
    names = {name.lower() for name, _ in headers}
    assert b"x-injected" not in names and b"set-cookie" not in names
    assert all(b"\r" not in v and b"\n" not in v for _, v in headers)
    assert b'"code":"unauthorized"' in content


@pytest.mark.parametrize("header", [
    (b"content-type", b"application/json\r\nX-Injected: 1"),
    (b"content-type", b"application/json; charset=\xff"),
    (b"idempotency-key", b"key\r\nX-Injected: 1"),
    (b"idempotency-key", b"k" * 10_000),
    (b"accept-language", b"\xff\xfe;q=NaN, *;q=1e400"),
    (b"cookie", b"wp_session=\xff\r\n; csrf=" + b"x" * 8000),
])
def test_odd_header_values_on_a_submission(app, client, actors, session, header):
    before = _count(session, SurveyResponse)
    auth_header = actors["participant"]["Authorization"].encode()
    body = b'{"answers": {"who5_1": 3}}'  # incomplete: must not be stored either way
    status, _, content = _raw_asgi(
        app, "POST", f"/api/v1/me/surveys/{actors['instance_id']}/responses",
        [(b"host", b"testserver"), (b"authorization", auth_header),
         (b"content-length", str(len(body)).encode())]
        + ([(b"content-type", b"application/json")] if header[0] != b"content-type" else [])
        + [header], body)
    assert 400 <= status < 500, content[:300]
    assert b'"error"' in content
    assert _count(session, SurveyResponse) == before


@pytest.mark.parametrize("header", [
    (b"accept-language", b"\xff\xfe;q=NaN, zz-ZZ;q=1e400, " + b"en," * 3000),
    (b"cookie", b"wp_presession=\xff\x00; lang=../../etc"),
    (b"content-type", b"application/x-www-form-urlencoded; charset=\xff"),
])
def test_odd_headers_on_the_participant_pages(app, client, header):
    status, _, content = _raw_asgi(app, "GET", f"/join/{STUDY}",
                                   [(b"host", b"testserver"), header])
    assert status == 200, content[:300]
    status, _, content = _raw_asgi(app, "POST", f"/join/{STUDY}",
                                   [(b"host", b"testserver"), header,
                                    (b"content-length", b"12")], b"email=%ff%fe")
    assert 400 <= status < 500, content[:300]


@pytest.mark.parametrize("path", [f"/join/{STUDY}", "/staff/login", "/p/consent",
                                  "/p/withdraw", "/p/settings/email"])
def test_web_forms_refuse_hostile_bodies(client, path):
    for content, content_type in (
            (b"%ff%fe=%00&email=" + b"a" * 70_000, "application/x-www-form-urlencoded"),
            (b"email=%ZZ%&csrf_token=%00", "application/x-www-form-urlencoded"),
            (b"\xff\xfe" * 100, "application/x-www-form-urlencoded"),
            (b"&" * 5000, "application/x-www-form-urlencoded"),
            (b'{"email": NaN}', "application/json"),
            (b"--x\r\nContent-Disposition: form-data; name=\"email\"\r\n\r\n\xff\r\n--x",
             "multipart/form-data; boundary=x")):
        response = client.post(path, content=content, headers={"content-type": content_type},
                               follow_redirects=False)
        assert 300 <= response.status_code < 500, (path, content[:30], response.text[:300])


def test_a_nul_character_in_free_text_is_refused_not_a_500(client, actors, session):
    """PostgreSQL text cannot hold NUL; SQLite can. Either way: no 500, no half-stored row."""
    surveys = client.get("/api/v1/me/surveys", headers=actors["participant"]).json()
    usage = next(s["id"] for s in surveys if s["instrument"] == "ai_usage")
    before = _count(session, SurveyResponse)
    response = client.post(
        f"/api/v1/me/surveys/{usage}/responses", headers=actors["participant"] | {
            "Idempotency-Key": "nul-text-0001"},
        json={"answers": {"used_models": ["other"], "other_model_name": "bad\x00name",
                          "hours_other": 2, "purposes": ["work"], "ai_framing": 1,
                          "lost_access": "no"}})
    assert response.status_code in (201, 400, 422), response.text
    if response.status_code != 201:
        _error(response, {400, 422})
        assert _count(session, SurveyResponse) == before
    else:
        assert _count(session, SurveyResponse) == before + 1

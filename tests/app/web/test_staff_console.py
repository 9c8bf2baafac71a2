"""The research console: enrollment funnel, safety queue (page and API), notifications."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from fastapi.testclient import TestClient
from sqlmodel import Session, select

from app.audit.models import AuditEvent
from app.auth import service as auth
from app.notify.models import OutboxMessage
from app.surveys.models import SafetyEvent
from tests.support.flows import ELIGIBLE, enroll, join, joined_and_consented

PHQ9 = {f"phq9_{i}": 1 for i in range(1, 10)}
SVG_NS = "{http://www.w3.org/2000/svg}"


def _csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]


def _staff(app, engine, role: str = "researcher") -> tuple[TestClient, str]:  # type: ignore[no-untyped-def]
    with Session(engine) as s:
        token = auth.add_staff(s, f"{role}-console", role)
    web = TestClient(app)
    page = web.get("/staff/login")
    assert web.post("/staff/login", data={"csrf_token": _csrf(page.text), "token": token},
                    follow_redirects=False).status_code == 303
    return web, token


def _risky_answer(client, smtp, email: str):  # type: ignore[no-untyped-def]
    person = joined_and_consented(client, smtp, email)
    listed = client.get("/api/v1/me/surveys", headers=person.headers).json()
    phq9 = next(s["id"] for s in listed if s["instrument"] == "phq9")
    answer = client.post(f"/api/v1/me/surveys/{phq9}/responses",
                         json={"answers": PHQ9 | {"phq9_9": 1}},
                         headers=person.headers | {"Idempotency-Key": "key-00000001"})
    assert answer.status_code in (200, 201)
    return person


def _events(engine) -> list[SafetyEvent]:  # type: ignore[no-untyped-def]
    with Session(engine) as s:
        return list(s.exec(select(SafetyEvent).order_by(SafetyEvent.id)).all())


def _actions(engine) -> list[str]:  # type: ignore[no-untyped-def]
    with Session(engine) as s:
        return [e.action for e in s.exec(select(AuditEvent).order_by(AuditEvent.id)).all()]


def _funnel(html: str) -> dict[str, str]:
    return dict(re.findall(r'data-stage="(\w+)"><td>[^<]*</td><td class="num">([^<]*)</td>',
                           html))


def test_enrollment_funnel_counts_each_stage(app, client, smtp, engine):
    joined_and_consented(client, smtp, "one@example.org")
    joined_and_consented(client, smtp, "two@example.org")
    join(client, smtp, "three@example.org")  # joined, not consented
    enroll(client, "four@example.org", screening=ELIGIBLE | {"adult": False})
    web, _ = _staff(app, engine)
    page = web.get("/staff/researcher/enrollment")
    assert page.status_code == 200
    assert _funnel(page.text) == {
        "visited": "—", "screened": "4", "eligible": "3", "consented": "2",
        "active": "2", "paused": "0", "withdrawn": "0", "completed": "0"}
    assert "Not tracked" in page.text
    svg = re.search(r"<svg.*?</svg>", page.text, re.S).group(0)  # type: ignore[union-attr]
    bars = [e for e in ET.fromstring(svg).iter(f"{SVG_NS}rect") if e.get("class") == "bar"]
    assert len(bars) == 7  # every measured stage; 'visited' is not drawn
    assert "@example.org" not in page.text


def test_researcher_acknowledges_a_safety_event_with_a_note(app, client, smtp, engine):
    _risky_answer(client, smtp, "risk@example.org")
    web, _ = _staff(app, engine)
    queue = web.get("/staff/researcher/safety")
    event_id = _events(engine)[0].id
    assert f'id="event-{event_id}"' in queue.text and "suicidal_ideation" in queue.text
    assert "risk@example.org" not in queue.text
    done = web.post(f"/staff/researcher/safety/{event_id}/acknowledge",
                    data={"csrf_token": _csrf(queue.text), "note": "Called per protocol."})
    assert done.status_code == 200 and 'id="ack-done"' in done.text
    assert 'id="queue-empty"' in done.text and "Called per protocol." in done.text
    event = _events(engine)[0]
    assert event.acknowledged_at is not None and event.note == "Called per protocol."
    assert "safety.acknowledge" in _actions(engine)
    again = web.post(f"/staff/researcher/safety/{event_id}/acknowledge",
                     data={"csrf_token": _csrf(queue.text), "note": "twice"})
    assert again.status_code == 409 and "already acknowledged" in again.text
    assert _events(engine)[0].note == "Called per protocol."


def test_acknowledge_form_refuses_an_empty_or_long_note(app, client, smtp, engine):
    _risky_answer(client, smtp, "notes@example.org")
    web, _ = _staff(app, engine)
    page = web.get("/staff/researcher/safety")
    event_id = _events(engine)[0].id
    for note in ("   ", "x" * 2001):
        response = web.post(f"/staff/researcher/safety/{event_id}/acknowledge",
                            data={"csrf_token": _csrf(page.text), "note": note})
        assert response.status_code == 422 and 'id="ack-error"' in response.text
    assert _events(engine)[0].acknowledged_at is None
    missing = web.post("/staff/researcher/safety/999999/acknowledge",
                       data={"csrf_token": _csrf(page.text), "note": "ok"})
    assert missing.status_code == 404


def test_acknowledge_api(app, client, smtp, engine):
    person = _risky_answer(client, smtp, "api@example.org")
    _, token = _staff(app, engine)
    with Session(engine) as s:
        irb = auth.add_staff(s, "irb-api", "irb")
    event_id = _events(engine)[0].id
    url = f"/api/v1/researcher/safety-events/{event_id}/acknowledge"
    bearer = {"Authorization": f"Bearer {token}"}

    bad = client.post(url, json={"note": ""}, headers=bearer)
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "validation_failed"
    assert "note" in str(bad.json()["error"])
    assert client.post(url, json={"note": "x" * 2001}, headers=bearer).status_code == 422
    assert client.post(url, json={"note": "ok", "extra": 1}, headers=bearer).status_code == 422
    assert client.post(url, json={"note": "ok"}, headers={"Authorization": f"Bearer {irb}"}
                       ).status_code == 403
    assert client.post(url, json={"note": "ok"}, headers=person.headers).status_code == 401
    assert _events(engine)[0].acknowledged_at is None

    ok = client.post(url, json={"note": "Reached by phone."}, headers=bearer)
    assert ok.status_code == 200
    body = ok.json()
    assert body["id"] == event_id and body["note"] == "Reached by phone."
    assert body["acknowledged_at"] is not None and len(body["pseudonym"]) == 16
    again = client.post(url, json={"note": "again"}, headers=bearer)
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_acknowledged"
    unknown = client.post("/api/v1/researcher/safety-events/424242/acknowledge",
                          json={"note": "x"}, headers=bearer)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
    assert _actions(engine).count("safety.acknowledge") == 1
    listed = client.get("/api/v1/researcher/safety-events?open_only=true", headers=bearer)
    assert listed.json() == []


def test_irb_reads_safety_events_but_has_no_acknowledge_form(app, client, smtp, engine):
    _risky_answer(client, smtp, "irbview@example.org")
    web, _ = _staff(app, engine, "irb")
    page = web.get("/staff/irb/safety-events")
    assert page.status_code == 200 and "suicidal_ideation" in page.text and "waiting" in page.text
    assert "/acknowledge" not in page.text


def test_notifications_page_shows_failures_without_addresses(app, client, smtp, engine, clock):
    joined_and_consented(client, smtp, "bounce@example.org")
    with Session(engine) as s:
        message = s.exec(select(OutboxMessage)).first()
        assert message is not None
        message.status, message.attempts = "failed", 6
        message.last_error = "SMTPRecipientsRefused: bounce@example.org rejected"
        s.add(message)
        s.commit()
    web, _ = _staff(app, engine)
    page = web.get("/staff/researcher/notifications")
    assert page.status_code == 200 and 'id="failures"' in page.text
    assert "gave up" in page.text and "&lt;address&gt; rejected" in page.text
    assert "bounce@example.org" not in page.text
    assert "<svg" in page.text and 'class="bar"' in page.text


def test_researcher_home_shows_waiting_events_and_the_funnel(app, client, smtp, engine):
    _risky_answer(client, smtp, "glance@example.org")
    web, _ = _staff(app, engine)
    home = web.get("/staff")
    assert re.search(r'id="waiting-events">1<', home.text)
    assert "Consented: <strong>1</strong>" in home.text
    irb, _ = _staff(app, engine, "irb")
    assert 'id="at-a-glance"' not in irb.get("/staff").text  # counts are for researchers

"""Safety events followed up (issue 13, part 4): on-call alerts by real email at once, escalation
after the study file's deadline, Prometheus gauges, the queue's details, and the audited reveal
of a participant's contact, on SQLite and PostgreSQL with the real SMTP server and test clock."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
import yaml
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from app.audit import service as audit
from app.audit.models import AuditEvent
from app.auth import service as auth
from app.consent.service import irb_pseudonym
from app.db import utcnow
from app.notify.channels import SMTPChannel
from app.notify.models import StaffAlert
from app.participants import service as participants
from app.scheduling.dispatcher import tick
from app.studies import service as studies
from app.studies.service import StudyLoadError
from app.surveys.models import SafetyEvent, SurveyResponse
from tests.support.flows import Person, joined_and_consented
from tests.support.pg import free_port
from tests.support.smtp import SMTPServer
from tests.support.studyfiles import StudyCopy

ON_CALL = ("oncall@example.org", "oncall-deputy@example.org")
ESCALATION = "pi@example.org"
TOKEN = "metrics-token-for-safety-tests"
# PHQ-9 items 1-8 at 1 ("Several days") and item 9 at 2 ("More than half the days"): total 10
RISKY = {f"phq9_{i}": 1 for i in range(1, 9)} | {"phq9_9": 2}


# ---- helpers -------------------------------------------------------------------------------

def _answer_phq9(client: TestClient, person: Person, answers: dict[str, int] = RISKY,
                 key: str = "safety-0001"):  # type: ignore[no-untyped-def]
    listed = client.get("/api/v1/me/surveys", headers=person.headers).json()
    phq9 = next(s["id"] for s in listed if s["instrument"] == "phq9")
    return client.post(f"/api/v1/me/surveys/{phq9}/responses", json={"answers": answers},
                       headers=person.headers | {"Idempotency-Key": key})


def _risky(client: TestClient, smtp: SMTPServer, email: str, *, smtp_down: bool = False
           ) -> Person:
    """A participant who answers PHQ-9 item 9 above 0 (with SMTP down at that moment)."""
    person = joined_and_consented(client, smtp, email)
    if smtp_down:
        app = client.app
        app.state.channel = _broken_channel(app.state.settings)  # type: ignore[attr-defined]
    answered = _answer_phq9(client, person)
    assert answered.status_code == 201 and answered.json()["show_crisis_resources"] is True
    return person


def _counts(smtp: SMTPServer) -> dict[str, int]:
    return {a: len(smtp.to(a)) for a in (*ON_CALL, ESCALATION)}


def _events(engine) -> list[SafetyEvent]:  # type: ignore[no-untyped-def]
    with Session(engine) as s:
        return list(s.exec(select(SafetyEvent).order_by(SafetyEvent.id)).all())


def _ledger(engine, action: str) -> list[AuditEvent]:  # type: ignore[no-untyped-def]
    with Session(engine) as s:
        return list(s.exec(select(AuditEvent).where(AuditEvent.action == action)
                           .order_by(AuditEvent.id)).all())


def _alerts(engine) -> list[StaffAlert]:  # type: ignore[no-untyped-def]
    with Session(engine) as s:
        return list(s.exec(select(StaffAlert).order_by(StaffAlert.id)).all())


def _csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]


def _staff(app, engine, clock, role: str, name: str) -> tuple[TestClient, str]:  # type: ignore[no-untyped-def]
    with Session(engine) as s:
        token = auth.add_staff(s, name, role, now=clock())
    web = TestClient(app)
    page = web.get("/staff/login")
    assert web.post("/staff/login", data={"csrf_token": _csrf(page.text), "token": token},
                    follow_redirects=False).status_code == 303
    return web, token


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in the metrics")


def _scrape(app, client: TestClient) -> str:  # type: ignore[no-untyped-def]
    app.state.settings = app.state.settings.model_copy(update={"metrics_token": TOKEN})
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    return response.text


def _broken_channel(settings) -> SMTPChannel:  # type: ignore[no-untyped-def]
    """SMTP down: nothing listens on this port."""
    return SMTPChannel(settings.model_copy(update={"smtp_port": free_port()}))


# ---- alerting ------------------------------------------------------------------------------

def test_each_on_call_address_gets_one_alert_at_once_with_no_contact_and_no_answers(
        app, client, smtp, engine, settings, clock):
    before = _counts(smtp)
    person = _risky(client, smtp, "alert-once@example.org")
    # sent right after the answer (the API's background task), before any scheduler tick
    for address in ON_CALL:
        assert len(smtp.wait_for(address, before[address] + 1)) == before[address] + 1
    event = _events(engine)[0]
    pseudonym = irb_pseudonym(settings.secret_key, event.participant_id)
    for address in ON_CALL:
        mail = smtp.to(address)[-1]
        text = mail.body + str(mail.message["Subject"]) + str(mail.message["To"])
        assert f"Safety event {event.id}" in str(mail.message["Subject"])
        assert pseudonym in mail.body and f"Event: {event.id}" in mail.body
        assert f"http://testserver/staff/researcher/safety#event-{event.id}" in mail.body
        assert "2026-11-02 09:00 UTC" in mail.body  # raised, on the app's clock
        assert "Acknowledge by: 2026-11-02 10:00 UTC" in mail.body
        # nothing of the participant: no address, no answer, no item, no internal id
        assert person.email not in text and "phq9" not in text.lower()
        assert "More than half" not in text and "suicid" not in text.lower()
        assert event.participant_id not in text
    # the participant's app retries the same submission: the stored answer, no second alert
    with Session(engine) as s:
        instance_id = s.exec(select(SurveyResponse.instance_id)).one()
    replay = client.post(f"/api/v1/me/surveys/{instance_id}/responses",
                         json={"answers": RISKY},
                         headers=person.headers | {"Idempotency-Key": "safety-0001"})
    assert replay.status_code == 201 and replay.json()["replayed"] is True
    # the scheduler's ticks find nothing left to send: one alert per address, ever
    for minutes in (0, 1, 30):
        tick(engine, settings, app.state.channel, now=clock() + timedelta(minutes=minutes))
    after = _counts(smtp)
    assert [after[a] - before[a] for a in ON_CALL] == [1, 1]
    assert after[ESCALATION] == before[ESCALATION]
    sent = _ledger(engine, "safety.alert_sent")
    assert sorted(row.details["to"] for row in sent) == [
        "Deputy on-call clinician (placeholder)", "On-call clinician (placeholder)"]
    assert all(row.target == f"safety_event:{event.id}" for row in sent)
    assert all(a.status == "sent" and a.attempts == 1 for a in _alerts(engine))


def test_an_alert_whose_immediate_send_failed_leaves_with_the_next_tick(
        app, client, smtp, engine, settings, clock):
    before = _counts(smtp)
    _risky(client, smtp, "next-tick@example.org", smtp_down=True)
    assert _counts(smtp) == before
    assert [(a.status, a.attempts) for a in _alerts(engine)] == [("pending", 1)] * 2
    app.state.channel = SMTPChannel(settings)  # SMTP answers again
    clock.advance(seconds=30)  # the scheduler's next tick (60 s interval: at most a minute)
    assert tick(engine, settings, app.state.channel, now=clock()).safety_alerts_sent == 2
    for address in ON_CALL:
        smtp.wait_for(address, before[address] + 1)
    tick(engine, settings, app.state.channel, now=clock() + timedelta(minutes=1))
    after = _counts(smtp)
    assert [after[a] - before[a] for a in ON_CALL] == [1, 1]


def test_an_alert_waits_out_a_long_smtp_outage_and_is_sent_once(
        app, client, smtp, engine, settings, clock):
    before = _counts(smtp)
    _risky(client, smtp, "smtp-down@example.org", smtp_down=True)
    alerts = _alerts(engine)
    assert len(alerts) == 2 and all(a.status == "pending" and a.attempts == 1 for a in alerts)
    assert all(a.last_error and "@" not in a.last_error for a in alerts)
    assert _metric(_scrape(app, client), "wellpanel_safety_alerts_retrying") == 2
    # still down at the next ticks: kept and tried again, further apart (never given up)
    for seconds, attempts in ((30, 2), (60, 2), (90, 3), (180, 3), (210, 4)):
        tick(engine, settings, app.state.channel, now=clock() + timedelta(seconds=seconds))
        assert [a.attempts for a in _alerts(engine)] == [attempts] * 2, seconds
    assert _counts(smtp) == before
    assert {a.status for a in _alerts(engine)} == {"pending"}
    # SMTP is back: the first tick once the retry is due sends each alert once
    app.state.channel = SMTPChannel(settings)
    clock.advance(minutes=10)
    report = tick(engine, settings, app.state.channel, now=clock())
    assert report.safety_alerts_sent == 2
    for address in ON_CALL:
        smtp.wait_for(address, before[address] + 1)
    clock.advance(minutes=1)
    tick(engine, settings, app.state.channel, now=clock())
    after = _counts(smtp)
    assert [after[a] - before[a] for a in ON_CALL] == [1, 1]
    assert _metric(_scrape(app, client), "wellpanel_safety_alerts_retrying") == 0
    assert all(a.status == "sent" and a.attempts == 5 for a in _alerts(engine))


def test_an_alert_left_sending_by_a_crash_is_sent_again_later_never_lost(
        app, client, smtp, engine, settings, clock):
    from sqlmodel import update

    before = _counts(smtp)
    _risky(client, smtp, "crash@example.org", smtp_down=True)
    assert len(_alerts(engine)) == 2
    wall = utcnow()  # leases are on the real clock: they time processes, not the study
    with Session(engine) as s:  # a deliverer claimed both, then its process died mid-send
        s.exec(update(StaffAlert).values(  # type: ignore[call-overload]
            status="sending", claimed_at=wall, claim_token="d" * 32,
            lease_until=wall + timedelta(hours=1)))
        s.commit()
    app.state.channel = SMTPChannel(settings)
    tick(engine, settings, app.state.channel, now=clock() + timedelta(minutes=5))
    assert _counts(smtp) == before  # maybe still being sent by its holder: not sent twice
    with Session(engine) as s:  # the dead holder's lease runs out (brought forward, not slept)
        s.exec(update(StaffAlert).values(  # type: ignore[call-overload]
            lease_until=utcnow() - timedelta(seconds=1)))
        s.commit()
    tick(engine, settings, app.state.channel, now=clock() + timedelta(minutes=10))
    after = _counts(smtp)
    assert [after[a] - before[a] for a in ON_CALL] == [1, 1]
    assert {a.status for a in _alerts(engine)} == {"sent"}


def test_an_answer_through_the_survey_page_alerts_too(app, client, smtp, engine, settings):
    from tests.support.pages import csrf_of, signed_in_browser

    before = _counts(smtp)
    web = signed_in_browser(app, smtp, "en")
    phq9 = next(s["id"] for s in web.get("/api/v1/me/surveys").json()
                if s["instrument"] == "phq9")
    page = web.get(f"/p/surveys/{phq9}")
    answered = web.post(f"/p/surveys/{phq9}", data={"csrf_token": csrf_of(page),
                                                    **{k: str(v) for k, v in RISKY.items()}})
    assert answered.status_code == 200  # the crisis page
    for address in ON_CALL:
        assert len(smtp.wait_for(address, before[address] + 1)) == before[address] + 1


# ---- escalation ----------------------------------------------------------------------------

def test_an_unacknowledged_event_escalates_once_after_the_deadline(
        app, client, smtp, engine, settings, clock):
    before = _counts(smtp)
    _risky(client, smtp, "escalate@example.org")  # 09:00
    clock.advance(minutes=10)
    handled = joined_and_consented(client, smtp, "handled@example.org")
    assert _answer_phq9(client, handled).status_code == 201  # 09:10
    first, second = _events(engine)
    _, token = _staff(app, engine, clock, "safety", "dr-escalation")
    clock.advance(minutes=20)  # 09:30: the second one is acknowledged in time
    assert client.post(f"/api/v1/researcher/safety-events/{second.id}/acknowledge",
                       json={"note": "Called, safe."},
                       headers={"Authorization": f"Bearer {token}"}).status_code == 200
    channel = app.state.channel
    clock.advance(minutes=29, seconds=59)  # 09:59:59, a second before the deadline
    assert tick(engine, settings, channel, now=clock()).safety_escalated == 0
    assert _counts(smtp)[ESCALATION] == before[ESCALATION]
    clock.advance(seconds=1)  # 10:00:00
    assert tick(engine, settings, channel, now=clock()).safety_escalated == 1
    escalation = smtp.wait_for(ESCALATION, before[ESCALATION] + 1)[-1]
    assert f"safety event {first.id} not acknowledged" in str(escalation.message["Subject"])
    assert "within 60 minutes" in escalation.body
    assert "escalate@example.org" not in escalation.body and "phq9" not in escalation.body
    for minutes in (1, 30, 24 * 60):  # later ticks, and one past the second event's deadline
        tick(engine, settings, channel, now=clock() + timedelta(minutes=minutes))
    assert _counts(smtp)[ESCALATION] == before[ESCALATION] + 1
    escalated = _ledger(engine, "safety.escalate")
    assert [row.target for row in escalated] == [f"safety_event:{first.id}"]
    assert escalated[0].details == {"deadline_minutes": 60, "waited_seconds": 3600,
                                    "contact": "Principal investigator (placeholder)"}
    first, second = _events(engine)
    assert first.escalated_at == clock() and second.escalated_at is None
    # on-call staff were alerted once each for each event, not again by the escalation
    after = _counts(smtp)
    assert [after[a] - before[a] for a in ON_CALL] == [2, 2]


def test_two_schedulers_escalate_an_event_only_once(app, client, smtp, engine, settings, clock):
    from app.safety import service as safety

    _risky(client, smtp, "twice@example.org")
    late = clock() + timedelta(hours=2)
    with Session(engine) as one, Session(engine) as two:
        assert safety.escalate_overdue(one, now=late) == 1
        assert safety.escalate_overdue(two, now=late) == 0
    assert len(_ledger(engine, "safety.escalate")) == 1
    assert [a.kind for a in _alerts(engine)].count("safety_escalation") == 1


# ---- gauges --------------------------------------------------------------------------------

def test_gauges_count_unacknowledged_events_and_the_oldest_ones_age(
        app, client, smtp, engine, clock):
    metrics = _scrape(app, client)
    assert _metric(metrics, "wellpanel_safety_events_unacknowledged") == 0
    assert _metric(metrics, "wellpanel_safety_oldest_unacknowledged_age_seconds") == 0
    _risky(client, smtp, "gauge-1@example.org")  # 09:00
    clock.advance(minutes=30)
    _risky(client, smtp, "gauge-2@example.org")  # 09:30
    clock.advance(minutes=30)  # 10:00
    metrics = _scrape(app, client)
    assert _metric(metrics, "wellpanel_safety_events_unacknowledged") == 2
    assert _metric(metrics, "wellpanel_safety_oldest_unacknowledged_age_seconds") == 3600
    _, token = _staff(app, engine, clock, "researcher", "gauge-researcher")
    oldest = _events(engine)[0]
    assert client.post(f"/api/v1/researcher/safety-events/{oldest.id}/acknowledge",
                       json={"note": "Reached."},
                       headers={"Authorization": f"Bearer {token}"}).status_code == 200
    metrics = _scrape(app, client)
    assert _metric(metrics, "wellpanel_safety_events_unacknowledged") == 1
    assert _metric(metrics, "wellpanel_safety_oldest_unacknowledged_age_seconds") == 1800


# ---- the queue -----------------------------------------------------------------------------

def test_the_queue_shows_item_value_score_band_waiting_and_who_acknowledged(
        app, client, smtp, engine, settings, clock):
    _risky(client, smtp, "queue@example.org")
    event = _events(engine)[0]
    web, token = _staff(app, engine, clock, "safety", "dr-queue")
    clock.advance(hours=2, minutes=5, seconds=12)
    page = web.get("/staff/researcher/safety")
    assert page.status_code == 200
    section = re.search(rf'<section class="safety-event" id="event-{event.id}".*?</section>',
                        page.text, re.S).group(0)  # type: ignore[union-attr]
    assert "<code>phq9_9</code> = 2 (More than half the days)" in section
    assert "10 · Moderate (10-14)" in section
    assert '<time datetime="PT7512S"' in section and "2 hours" in section
    assert "(2 h 05 min 12 s)" in section
    assert "On call: On-call clinician (placeholder) — sent 09:00 UTC" in section
    assert "queue@example.org" not in page.text
    assert 'id="placeholder-warning"' in page.text  # the shipped file's example.org rota
    # the API lists the same details
    listed = client.get("/api/v1/researcher/safety-events?open_only=true",
                        headers={"Authorization": f"Bearer {token}"}).json()
    assert listed[0] | {"pseudonym": "-"} == listed[0] | {
        "pseudonym": "-", "id": event.id, "trigger_item": "phq9_9", "trigger_value": 2,
        "trigger_label": "More than half the days", "score_name": "total", "score": 10,
        "band": "moderate", "band_label": "Moderate (10-14)", "waiting_seconds": 7512,
        "acknowledged_by": None, "study": "keep4o-panel", "escalated_at": None,
        "participant_status": "active"}
    # acknowledged: who, when, the note and how long it waited
    done = web.post(f"/staff/researcher/safety/{event.id}/acknowledge",
                    data={"csrf_token": _csrf(page.text), "note": "Phoned; safety plan made."})
    row = re.search(rf'<tr id="done-{event.id}">.*?</tr>', done.text, re.S).group(0)  # type: ignore[union-attr]
    assert "dr-queue" in row and "Phoned; safety plan made." in row
    assert "2026-11-02 11:05" in row and "(2 h 05 min 12 s)" in row
    clock.advance(days=3)  # an acknowledged event's waiting time stops at its acknowledgement
    again = client.get("/api/v1/irb/safety-events", headers={
        "Authorization": f"Bearer {token}"}).json()[0]
    assert again["waiting_seconds"] == 7512 and again["acknowledged_by"] == "dr-queue"
    irb, _ = _staff(app, engine, clock, "irb", "irb-queue")
    review = irb.get("/staff/irb/safety-events").text
    assert "dr-queue" in review and "(2 h 05 min 12 s)" in review


def test_the_safety_role_works_the_queue_and_nothing_else(app, engine, clock):
    web, _ = _staff(app, engine, clock, "safety", "dr-only-safety")
    assert web.get("/staff/researcher/safety").status_code == 200
    nav = web.get("/staff").text
    assert "/staff/researcher/safety" in nav and "/staff/researcher/exports" not in nav
    for path in ("/staff/researcher/enrollment", "/staff/researcher/exports",
                 "/staff/irb/consent-log"):
        assert web.get(path).status_code == 403, path


# ---- revealing the contact -----------------------------------------------------------------

def test_an_allowed_role_reveals_the_contact_with_a_reason_and_it_is_audited(
        app, client, smtp, engine, clock, log_stream):
    email = "reveal.me@example.org"
    _risky(client, smtp, email)
    event = _events(engine)[0]
    web, token = _staff(app, engine, clock, "safety", "dr-reveal")
    page = web.get("/staff/researcher/safety")
    assert f'action="/staff/researcher/safety/{event.id}/contact"' in page.text
    assert email not in page.text  # not before asking
    shown = web.post(f"/staff/researcher/safety/{event.id}/contact",
                     data={"csrf_token": _csrf(page.text),
                           "reason": "Follow-up call per the safety protocol"})
    assert shown.status_code == 200 and f"<code>{email}</code>" in shown.text
    assert shown.headers["cache-control"] == "no-store"
    assert "by dr-reveal (revealed): Follow-up call per the safety protocol" in shown.text
    api = client.post(f"/api/v1/researcher/safety-events/{event.id}/contact",
                      json={"reason": "Second attempt to reach them"},
                      headers={"Authorization": f"Bearer {token}"})
    assert api.status_code == 200 and api.headers["cache-control"] == "no-store"
    assert api.json() | {"pseudonym": "-", "message": "-"} == {
        "event_id": event.id, "pseudonym": "-", "outcome": "revealed", "email": email,
        "message": "-"}
    reveals = _ledger(engine, "safety.reveal_contact")
    assert [(r.actor.startswith("staff:"), r.target, r.details["reason"], r.details["via"])
            for r in reveals] == [
        (True, f"safety_event:{event.id}", "Follow-up call per the safety protocol", "console"),
        (True, f"safety_event:{event.id}", "Second attempt to reach them", "api")]
    # the address is in no ledger row and no log line
    with Session(engine) as s:
        ledger = json.dumps([r.model_dump(mode="json") for r in s.exec(select(AuditEvent))])
        assert audit.verify(s).ok
    assert email not in ledger and "reveal.me" not in ledger
    assert "reveal.me" not in log_stream.getvalue()


def test_others_are_refused_and_the_refusal_is_audited(app, client, smtp, engine, clock):
    email = "refused@example.org"
    _risky(client, smtp, email)
    event = _events(engine)[0]
    web, token = _staff(app, engine, clock, "researcher", "not-listed-researcher")
    page = web.get("/staff/researcher/safety")
    assert "/contact" not in page.text  # the form is not offered
    refused = web.post(f"/staff/researcher/safety/{event.id}/contact",
                       data={"csrf_token": _csrf(page.text), "reason": "I would like to call"})
    assert refused.status_code == 403 and email not in refused.text
    api = client.post(f"/api/v1/researcher/safety-events/{event.id}/contact",
                      json={"reason": "I would like to call"},
                      headers={"Authorization": f"Bearer {token}"})
    assert api.status_code == 403 and api.json()["error"]["code"] == "reveal_not_allowed"
    assert email not in api.text
    with Session(engine) as s:
        admin = auth.add_staff(s, "admin-not-listed", "admin", now=clock())
        irb = auth.add_staff(s, "irb-not-listed", "irb", now=clock())
    for bearer, code in ((admin, 403), (irb, 403)):  # admin is not implied; irb has no access
        response = client.post(f"/api/v1/researcher/safety-events/{event.id}/contact",
                               json={"reason": "I would like to call"},
                               headers={"Authorization": f"Bearer {bearer}"})
        assert response.status_code == code and email not in response.text
    refusals = _ledger(engine, "safety.reveal_contact_refused")
    assert [(r.details["role"], r.details["via"]) for r in refusals] == [
        ("researcher", "console"), ("researcher", "api"), ("admin", "api")]
    assert _ledger(engine, "safety.reveal_contact") == []


def test_the_reason_is_required_and_limited(app, client, smtp, engine, clock):
    _risky(client, smtp, "reasons@example.org")
    event = _events(engine)[0]
    web, token = _staff(app, engine, clock, "safety", "dr-reasons")
    url = f"/api/v1/researcher/safety-events/{event.id}/contact"
    bearer = {"Authorization": f"Bearer {token}"}
    for body in ({}, {"reason": ""}, {"reason": "short"}, {"reason": "x" * 501},
                 {"reason": "Call them at someone@example.org please"},
                 {"reason": "A fine reason here", "extra": 1}):
        response = client.post(url, json=body, headers=bearer)
        assert response.status_code == 422, body
        assert response.json()["error"]["code"] == "validation_failed"
        assert "reasons@example.org" not in response.text
    page = web.get("/staff/researcher/safety")
    blank = web.post(f"/staff/researcher/safety/{event.id}/contact",
                     data={"csrf_token": _csrf(page.text), "reason": "   "})
    assert blank.status_code == 422 and 'id="ack-error"' in blank.text
    assert "reasons@example.org" not in blank.text
    assert client.post("/api/v1/researcher/safety-events/424242/contact",
                       json={"reason": "A fine reason here"}, headers=bearer).status_code == 404
    assert _ledger(engine, "safety.reveal_contact") == []


def test_a_named_clinician_in_the_study_file_may_reveal(app, client, smtp, engine, clock,
                                                         tmp_path):
    copy = StudyCopy(tmp_path)
    data = copy.read()
    data["safety"] = data["safety"] | {
        "reveal_contact_roles": [], "reveal_contact_staff": ["Dr. Named Clinician"],
        "on_call": [{"name": "Ward on call", "email": "ward-oncall@clinic.example-hospital.de"}],
        "escalation_contact": {"name": "PI", "email": "pi@clinic.example-hospital.de"}}
    copy.write(data)
    with Session(engine) as s:
        studies.load_study(s, copy.file, copy.surveys, actor="test", now=clock())
    _risky(client, smtp, "named@example.org")
    event = _events(engine)[0]
    smtp.wait_for("ward-oncall@clinic.example-hospital.de")
    _, named = _staff(app, engine, clock, "researcher", "Dr. Named Clinician")
    web, safety_role = _staff(app, engine, clock, "safety", "safety-not-named")
    url = f"/api/v1/researcher/safety-events/{event.id}/contact"
    ok = client.post(url, json={"reason": "Named clinician follow-up"},
                     headers={"Authorization": f"Bearer {named}"})
    assert ok.status_code == 200 and ok.json()["email"] == "named@example.org"
    no = client.post(url, json={"reason": "Named clinician follow-up"},
                     headers={"Authorization": f"Bearer {safety_role}"})
    assert no.status_code == 403  # the role is no longer listed
    assert 'id="placeholder-warning"' not in web.get("/staff/researcher/safety").text


def test_withdrawn_or_erased_participants_show_that_there_is_no_contact(
        app, client, smtp, engine, clock):
    withdrawn = _risky(client, smtp, "gone@example.org")
    started = client.post("/api/v1/me/withdrawal", json={"scope": "stop_contact"},
                          headers=withdrawn.headers).json()
    assert client.post(f"/api/v1/me/withdrawal/{started['withdrawal_id']}/confirm",
                       json={"confirm_token": started["confirm_token"]},
                       headers=withdrawn.headers).status_code == 200
    clock.advance(minutes=1)
    expired = _risky(client, smtp, "retention@example.org")
    first, second = _events(engine)
    with Session(engine) as s:  # as the retention job does after the last survey closed
        participants.forget_contact(s, second.participant_id)
        s.commit()
    web, token = _staff(app, engine, clock, "safety", "dr-nocontact")
    bearer = {"Authorization": f"Bearer {token}"}
    url = "/api/v1/researcher/safety-events/{}/contact"
    gone = client.post(url.format(first.id), json={"reason": "Follow-up call"}, headers=bearer)
    assert gone.status_code == 200
    assert gone.json()["outcome"] == "withdrawn" and gone.json()["email"] is None
    assert "must not be contacted" in gone.json()["message"]
    erased = client.post(url.format(second.id), json={"reason": "Follow-up call"},
                         headers=bearer)
    assert erased.json()["outcome"] == "no_contact" and erased.json()["email"] is None
    page = web.get("/staff/researcher/safety")
    section = re.search(rf'id="event-{first.id}".*?</section>', page.text, re.S).group(0)  # type: ignore[union-attr]
    assert "withdrew: not to be contacted" in section
    shown = web.post(f"/staff/researcher/safety/{first.id}/contact",
                     data={"csrf_token": _csrf(page.text), "reason": "Follow-up call"})
    assert "withdrew from the study and must not be contacted" in shown.text
    assert "gone@example.org" not in shown.text and expired.email not in shown.text
    outcomes = [r.details["outcome"] for r in _ledger(engine, "safety.reveal_contact")]
    assert outcomes == ["withdrawn", "no_contact", "withdrawn"]


# ---- withdrawal and erasure ----------------------------------------------------------------

def test_no_alert_or_escalation_for_an_event_erased_by_a_delete_data_withdrawal(
        app, client, smtp, engine, settings, clock):
    before = _counts(smtp)
    person = _risky(client, smtp, "erased@example.org", smtp_down=True)  # alerts wait
    app.state.channel = SMTPChannel(settings)  # (the withdrawal confirmation needs no email)
    started = client.post("/api/v1/me/withdrawal", json={"scope": "delete_data"},
                          headers=person.headers).json()
    assert client.post(f"/api/v1/me/withdrawal/{started['withdrawal_id']}/confirm",
                       json={"confirm_token": started["confirm_token"]},
                       headers=person.headers).status_code == 200
    assert _events(engine) == []
    assert {a.status for a in _alerts(engine)} == {"cancelled"}
    for hours in (1, 2, 48):
        tick(engine, settings, app.state.channel, now=clock() + timedelta(hours=hours))
    assert _counts(smtp) == before
    assert _ledger(engine, "safety.escalate") == []
    metrics = _scrape(app, client)
    assert _metric(metrics, "wellpanel_safety_events_unacknowledged") == 0
    assert len(_ledger(engine, "safety.flag")) == 1  # the ledger keeps that it existed


def test_a_withdrawn_person_raises_no_new_event_or_alert(app, client, smtp, engine, clock):
    person = joined_and_consented(client, smtp, "withdrawn-first@example.org")
    started = client.post("/api/v1/me/withdrawal", json={"scope": "stop_contact"},
                          headers=person.headers).json()
    client.post(f"/api/v1/me/withdrawal/{started['withdrawal_id']}/confirm",
                json={"confirm_token": started["confirm_token"]}, headers=person.headers)
    before = _counts(smtp)
    assert client.post("/api/v1/me/surveys/x/responses", json={"answers": RISKY},
                       headers=person.headers | {"Idempotency-Key": "late-0001"}
                       ).status_code == 401
    assert _events(engine) == [] and _alerts(engine) == [] and _counts(smtp) == before


# ---- the study file ------------------------------------------------------------------------

@pytest.mark.parametrize(("change", "where"), [
    (lambda s: s.pop("safety"), "(top level)"),
    (lambda s: s["safety"].update(on_call=[]), "safety/on_call"),
    (lambda s: s["safety"]["on_call"][0].update(email="not an address"),
     "safety/on_call/0/email"),
    (lambda s: s["safety"].update(acknowledge_within_minutes=0),
     "safety/acknowledge_within_minutes"),
    (lambda s: s["safety"].update(reveal_contact_roles=["clinician"]),
     "safety/reveal_contact_roles/0"),
    (lambda s: s["safety"]["escalation_contact"].update(email="oncall@example.org"),
     "safety/escalation_contact/email"),
    (lambda s: s["safety"]["on_call"].append(dict(s["safety"]["on_call"][0])),
     "safety/on_call"),
])
def test_study_load_refuses_a_bad_safety_block(tmp_path, change, where):
    copy = StudyCopy(tmp_path)
    data = copy.read()
    change(data)
    copy.write(data)
    with pytest.raises(StudyLoadError) as refused:
        studies.read_study_file(copy.file, copy.surveys)
    assert where in str(refused.value.message) or where in json.dumps(refused.value.details)


def test_the_shipped_study_marks_its_alert_addresses_as_placeholders():
    from app.config import PROJECT_ROOT
    from app.safety.config import from_study

    text = (PROJECT_ROOT / "surveys" / "studies" / "keep4o-panel.yaml").read_text("utf-8")
    assert "PLACEHOLDERS TO REPLACE" in text
    config = from_study(yaml.safe_load(text))
    assert config is not None and len(config.placeholders()) == 3
    assert config.may_reveal("safety", "anyone") and not config.may_reveal("admin", "root")
    assert config.acknowledge_within_minutes == 60


# ---- simulated participants ----------------------------------------------------------------

def test_simulated_safety_events_alert_and_escalate_to_nobody(engine, settings, smtp):
    from datetime import UTC, datetime

    from app.notify.channels import make_channel
    from app.safety.service import SIMULATED_NOTE
    from app.simulate.service import SimulateOptions, simulate
    from tests.conftest import SURVEYS_DIR

    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    before = _counts(smtp)
    result = simulate(engine, SimulateOptions(participants=40, waves=3, seed=3),
                      surveys_dir=SURVEYS_DIR, now=now)
    events = _events(engine)
    assert result.safety_events > 0 and events  # the draw raised some
    assert all(e.acknowledged_at is not None and e.note == SIMULATED_NOTE for e in events)
    assert _alerts(engine) and {a.status for a in _alerts(engine)} == {"cancelled"}
    tick(engine, settings, make_channel(settings), now=now + timedelta(days=2))
    assert _counts(smtp) == before and _ledger(engine, "safety.escalate") == []

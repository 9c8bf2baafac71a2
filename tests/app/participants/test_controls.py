from __future__ import annotations

from datetime import UTC, datetime

from sqlmodel import select

from app.audit.models import AuditEvent
from tests.support.flows import joined_and_consented


def test_upcoming_surveys_follow_local_time_and_a_new_zone(client, smtp, session):
    person = joined_and_consented(client, smtp, "tz@example.org", timezone="Europe/Berlin")
    upcoming = client.get("/api/v1/me/upcoming", headers=person.headers).json()
    biweekly = [u for u in upcoming if u["schedule_entry"] == "biweekly"]
    assert biweekly and all(u["local_time"].endswith("T18:00") for u in biweekly)
    first = min(biweekly, key=lambda u: u["opens_at"])
    # 2026-11-16 18:00 in Berlin (CET, UTC+1) is 17:00 UTC.
    assert first["local_time"] == "2026-11-16T18:00"
    assert datetime.fromisoformat(first["opens_at"]) == datetime(2026, 11, 16, 17, 0, tzinfo=UTC)
    moved = client.patch("/api/v1/me/settings", json={"timezone": "Asia/Shanghai"},
                         headers=person.headers)
    assert moved.status_code == 200 and moved.json()["timezone"] == "Asia/Shanghai"
    after = client.get("/api/v1/me/upcoming", headers=person.headers).json()
    first_after = min((u for u in after if u["schedule_entry"] == "biweekly"),
                      key=lambda u: u["opens_at"])
    assert first_after["timezone"] == "Asia/Shanghai"
    assert datetime.fromisoformat(first_after["opens_at"]) == datetime(2026, 11, 16, 10, 0,
                                                                       tzinfo=UTC)
    baseline = [u for u in after if u["schedule_entry"] == "baseline"]
    assert baseline and all(u["timezone"] == "Europe/Berlin" for u in baseline)  # already open
    session.rollback()
    change = [e for e in session.exec(select(AuditEvent)).all()
              if e.action == "participant.settings"]
    assert change[0].old_value["timezone"] == "Europe/Berlin"
    assert change[0].new_value["timezone"] == "Asia/Shanghai"


def test_pause_and_resume_are_audited(client, smtp, session):
    person = joined_and_consented(client, smtp, "pause@example.org")
    assert client.post("/api/v1/me/pause", headers=person.headers).json()["status"] == "paused"
    assert client.post("/api/v1/me/resume", headers=person.headers).json()["status"] == "active"
    bad = client.patch("/api/v1/me/settings", json={"timezone": "Moon/Base"},
                       headers=person.headers)
    assert bad.status_code == 422 and "timezone" in bad.json()["error"]["message"]
    session.rollback()
    actions = [e.action for e in session.exec(select(AuditEvent)).all()]
    assert actions.count("participant.pause") == 1 and actions.count("participant.resume") == 1

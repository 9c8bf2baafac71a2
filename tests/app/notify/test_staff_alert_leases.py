"""Staff alerts (app/notify/staff_alerts.py) are claimed under a lease on the real clock, like
the participant outbox: an alert whose holder died goes out once after the lease, a holder whose
lease ran out sends nothing, and a live lease holds however far the study clock moves."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import Session, select

from app.notify import staff_alerts
from app.notify.channels import Message, SMTPChannel
from app.notify.models import StaffAlert

HOUR = timedelta(hours=1)


def _render(session, alert, settings, now) -> Message:  # type: ignore[no-untyped-def]
    return Message(to=alert.recipient, subject=f"alert {alert.id}", body="see the console",
                   language="en")


def _queue(engine, clock, key: str) -> int:  # type: ignore[no-untyped-def]
    with Session(engine) as s:
        assert staff_alerts.queue(s, kind="safety_event", subject_ref=f"safety_event:{key}",
                                  recipient_name="On call", recipient=f"{key}@example.org",
                                  dedupe_key=f"alert:{key}", now=clock())
        s.commit()
        return s.exec(select(StaffAlert.id)).one()


def _send(engine, settings, alert_id: int, clock, token: str) -> str:  # type: ignore[no-untyped-def]
    return staff_alerts._deliver_one(engine, settings, SMTPChannel(settings), _render, None,
                                     alert_id, clock(), token, HOUR)


def test_a_dead_holders_alert_goes_out_once_and_the_late_holder_sends_nothing(
        engine, settings, clock, smtp, loaded_study):  # type: ignore[no-untyped-def]
    alert_id = _queue(engine, clock, "dead")
    smtp.clear()
    with Session(engine) as s:
        first = staff_alerts.claim_due(s, clock(), 10, token="a" * 32, lease=-HOUR)  # ran out
        again = staff_alerts.claim_due(s, clock(), 10, token="b" * 32, lease=HOUR)
    assert first == again == [alert_id]
    assert _send(engine, settings, alert_id, clock, "a" * 32) == "lost"
    assert smtp.received == []
    assert _send(engine, settings, alert_id, clock, "b" * 32) == "sent"
    assert len(smtp.to("dead@example.org")) == 1
    with Session(engine) as s:
        alert = s.get(StaffAlert, alert_id)
        assert alert is not None and alert.status == "sent" and alert.attempts == 2
        assert alert.claim_token is None and alert.lease_until is None


def test_a_live_lease_holds_whatever_the_study_clock_says(engine, settings, clock, smtp,
                                                          loaded_study):  # type: ignore[no-untyped-def]
    alert_id = _queue(engine, clock, "live")
    smtp.clear()
    with Session(engine) as s:
        assert staff_alerts.claim_due(s, clock(), 10, token="a" * 32, lease=HOUR) == [alert_id]
        clock.advance(days=2)  # the old rule took a `sending` row back after 10 study minutes
        assert staff_alerts.claim_due(s, clock(), 10, token="b" * 32, lease=HOUR) == []
    assert staff_alerts.deliver_due(engine, settings, SMTPChannel(settings), _render,
                                    now=clock())["sent"] == 0
    assert _send(engine, settings, alert_id, clock, "a" * 32) == "sent"
    assert len(smtp.to("live@example.org")) == 1

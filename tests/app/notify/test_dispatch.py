"""The dispatcher: invitations and reminders exactly once, over a real SMTP server."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from sqlmodel import Session, select

from app.scheduling.dispatcher import tick
from app.surveys.models import SurveyInstance
from tests.support.factory import consented_participants

# core_study (tests/app/notify/conftest.py): participants enrolled at 10:00 Berlin time get
# their core surveys the next day at 10:00, with reminders after 24 and 72 hours.


def _tick(app, clock):  # type: ignore[no-untyped-def]
    return tick(app.state.engine, app.state.settings, app.state.channel, now=clock())


def test_invitation_once_reminders_until_answered_then_expiry(app, client, smtp, session,
                                                              clock, core_study):
    smtp.clear()
    people = consented_participants(session, 2, now=clock(), prefix="inv")
    first = _tick(app, clock)
    assert (first.planned, first.opened) == (4, 0)  # planned from the schedule, not due yet
    clock.advance(days=1)
    report = _tick(app, clock)
    assert (report.opened, report.invitations, report.sent) == (4, 2, 2)
    assert len(smtp.to("inv0@example.org")) == 1
    assert "/p/login/" in smtp.to("inv0@example.org")[0].body
    assert _tick(app, clock).sent == 0  # nothing twice
    # inv0 answers everything; only inv1 gets the 24-hour reminder.
    with Session(app.state.engine) as s:
        for instance in s.exec(select(SurveyInstance).where(
                SurveyInstance.participant_id == people[0].id,
                SurveyInstance.schedule_entry == "core")).all():
            instance.status = "completed"
            s.add(instance)
        s.commit()
    clock.advance(hours=24)
    report = _tick(app, clock)
    assert (report.reminders, report.sent) == (1, 1)  # answered occasions get none
    assert len(smtp.to("inv1@example.org")) == 2 and len(smtp.to("inv0@example.org")) == 1
    assert "Reminder" in smtp.to("inv1@example.org")[-1].message["Subject"]
    clock.advance(hours=72)
    assert _tick(app, clock).expired == 2  # inv1's two surveys closed unanswered


def test_paused_and_withdrawn_people_receive_nothing(app, smtp, session, clock, core_study):
    smtp.clear()
    people = consented_participants(session, 3, now=clock(), prefix="quiet")
    people[0].status = "paused"
    people[1].status = "withdrawn"
    session.add_all(people[:2])
    session.commit()
    _tick(app, clock)
    clock.advance(days=1)
    _tick(app, clock)
    clock.advance(hours=30)
    _tick(app, clock)
    assert smtp.to("quiet0@example.org") == [] and smtp.to("quiet1@example.org") == []
    assert len(smtp.to("quiet2@example.org")) == 2  # invitation and one reminder


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_two_dispatchers_at_once_send_each_invitation_exactly_once(app, smtp, session, clock,
                                                                   core_study):
    smtp.clear()
    consented_participants(session, 600, now=clock(), prefix="many")
    clock.advance(days=1)  # both dispatchers plan, open and invite at once
    errors: list[BaseException] = []

    def dispatcher() -> None:
        try:
            for _ in range(3):
                _tick(app, clock)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=dispatcher) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    per_address = Counter(r for m in smtp.received for r in m.rcpt_tos)
    assert len(per_address) == 600 and set(per_address.values()) == {1}
    session.rollback()
    statuses = Counter(i.status for i in session.exec(select(SurveyInstance).where(
        SurveyInstance.schedule_entry == "core")).all())
    assert statuses == {"open": 1200}

"""Protocol amendments re-plan only future surveys that were not sent; nothing is sent twice,
answers are untouched, time zones are kept, withdrawn people get nothing (real SMTP)."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import Session, col, select

from app.audit.models import AuditEvent
from app.consent import service as consent
from app.scheduling.dispatcher import tick
from app.studies import service as studies
from app.surveys.models import SurveyInstance
from tests.support.factory import consented_participants
from tests.support.studyfiles import StudyCopy

# Day 1, 15 and 29 after enrollment at 10:00 local. Planned 28 days ahead: waves 0 and 1 at
# enrollment, wave 2 too a day later (its 10:00 falls inside the horizon, its 18:00 does not).
CORE = {"name": "core", "instruments": ["who5"], "cadence": {"offsets_days": [1, 15, 29]},
        "local_time": "10:00", "open_for_hours": 48}


@pytest.fixture
def study_copy(tmp_path, session, loaded_study) -> StudyCopy:  # type: ignore[no-untyped-def]
    copy = StudyCopy(tmp_path)
    _set_core(copy, "10:00")
    studies.load_study(session, copy.file, copy.surveys, actor="test")
    return copy


def _set_core(copy: StudyCopy, local_time: str) -> None:
    data = copy.read()
    data["schedule"]["entries"] = [dict(CORE, local_time=local_time)]
    copy.write(data)


def _tick(app, clock):  # type: ignore[no-untyped-def]
    return tick(app.state.engine, app.state.settings, app.state.channel, now=clock())


def _instances(app, pid: str) -> list[SurveyInstance]:  # type: ignore[no-untyped-def]
    with Session(app.state.engine) as s:
        return list(s.exec(select(SurveyInstance).where(SurveyInstance.participant_id == pid)
                           .order_by(col(SurveyInstance.wave),
                                     col(SurveyInstance.protocol_version))).all())


def _withdraw(session: Session, participant, now: datetime) -> None:  # type: ignore[no-untyped-def]
    withdrawal, token = consent.start_withdrawal(session, participant, "stop_contact", now=now)
    consent.confirm_withdrawal(session, participant, withdrawal.id, token,  # type: ignore[arg-type]
                               delete_allowed=True, now=now)
    session.commit()


def test_amendment_moves_unsent_future_surveys_only(app, smtp, session, clock, study_copy):
    smtp.clear()
    done, unanswered, leaving = consented_participants(session, 3, now=clock(), prefix="amd")
    [east] = consented_participants(session, 1, now=clock(), prefix="amd-east",
                                    timezone="Asia/Shanghai")
    _tick(app, clock)  # plans waves 0 and 1
    _withdraw(session, leaving, clock())
    clock.advance(minutes=30 + 24 * 60)  # 2026-11-03 09:30 UTC: every wave 0 is due
    assert _tick(app, clock).sent == 3
    with Session(app.state.engine) as s:  # one person answers
        answered = s.exec(select(SurveyInstance).where(
            SurveyInstance.participant_id == done.id, SurveyInstance.wave == 0)).one()
        answered.status, answered.completed_at = "completed", clock()
        s.add(answered)
        s.commit()
    before = {p.id: [(i.id, i.status, i.protocol_version, i.scheduled_at, i.completed_at)
                     for i in _instances(app, p.id) if i.wave == 0]
              for p in (done, unanswered, east)}
    sent_before = Counter(r for m in smtp.received for r in m.rcpt_tos)

    _set_core(study_copy, "18:00")
    result = studies.load_study(session, study_copy.file, study_copy.surveys, actor="test",
                                now=clock())
    assert result.created
    new = result.protocol_version

    for person, zone, utc_hour in ((done, "Europe/Berlin", 17), (unanswered, "Europe/Berlin", 17),
                                   (east, "Asia/Shanghai", 10)):
        rows = _instances(app, person.id)
        assert [(i.id, i.status, i.protocol_version, i.scheduled_at, i.completed_at)
                for i in rows if i.wave == 0] == before[person.id]  # sent or answered: kept
        [wave1] = [i for i in rows if i.wave == 1]  # the old planned wave 1 is gone
        assert [i.wave for i in rows] == [0, 1]
        assert (wave1.protocol_version, wave1.status, wave1.timezone) == (new, "planned", zone)
        assert wave1.local_time == "2026-11-17T18:00"
        assert wave1.scheduled_at == datetime(2026, 11, 17, utc_hour, tzinfo=UTC)
    assert [i.status for i in _instances(app, leaving.id)] == ["cancelled", "cancelled"]
    session.rollback()
    audit = [e for e in session.exec(select(AuditEvent)).all()
             if e.action == "protocol.amendment"][-1]  # (the fixture's load made one too)
    # Replaced: waves 1 and 2 of three people; planned: wave 1 (wave 2 at 18:00 is beyond the
    # horizon and comes with a later tick).
    assert audit.details == {"version": new, "participants": 3, "replaced": 6, "planned": 3}
    assert audit.actor == "test"  # whoever loaded the amended file

    # Ticks after the amendment: nothing is sent again, wave 0 is not planned again.
    assert _tick(app, clock).sent == 0
    for person in (done, unanswered, east):
        assert [i.wave for i in _instances(app, person.id)] == [0, 1]  # no wave 0 again
    clock.now = datetime(2026, 11, 17, 17, 30, tzinfo=UTC)
    assert _tick(app, clock).sent == 3
    sent_after = Counter(r for m in smtp.received for r in m.rcpt_tos)
    assert sent_after - sent_before == Counter(
        {"amd0@example.org": 1, "amd1@example.org": 1, "amd-east0@example.org": 1})
    assert sent_after["amd2@example.org"] == 0  # withdrawn: never contacted
    assert [(i.wave, i.protocol_version) for i in _instances(app, east.id)] == [
        (0, new - 1), (1, new), (2, new)]
    assert [i.status for i in _instances(app, leaving.id)] == ["cancelled", "cancelled"]


def test_an_occasion_already_invited_is_not_invited_again_under_a_new_version(
        app, smtp, session, clock, study_copy):
    """The invitation dedupe key is participant, entry and wave: no protocol version in it."""
    smtp.clear()
    [person] = consented_participants(session, 1, now=clock(), prefix="dedupe")
    _tick(app, clock)
    clock.advance(days=1, minutes=30)
    assert _tick(app, clock).sent == 1
    _set_core(study_copy, "18:00")
    new = studies.load_study(session, study_copy.file, study_copy.surveys, actor="test",
                             now=clock()).protocol_version
    with Session(app.state.engine) as s:  # the same occasion, opened under the new version
        old = s.exec(select(SurveyInstance).where(SurveyInstance.participant_id == person.id,
                                                  SurveyInstance.wave == 0)).one()
        s.add(SurveyInstance(
            id=str(uuid.uuid4()), participant_id=person.id, protocol_version=new,
            schedule_entry="core", instrument_key="who5", instrument_version=old.instrument_version,
            wave=0, position=0, status="planned", scheduled_at=clock() - timedelta(minutes=1),
            local_time=old.local_time, timezone=old.timezone,
            closes_at=clock() + timedelta(hours=2), created_at=clock()))
        s.commit()
    report = _tick(app, clock)
    assert report.opened == 1 and report.invitations == 0 and report.sent == 0
    assert len(smtp.to("dedupe0@example.org")) == 1


def test_paused_people_are_replanned_and_nothing_moves_without_changes(
        app, session, clock, study_copy):
    [paused] = consented_participants(session, 1, now=clock(), prefix="amd-paused")
    _tick(app, clock)
    paused.status = "paused"
    session.add(paused)
    session.commit()
    same = studies.load_study(session, study_copy.file, study_copy.surveys, actor="test",
                              now=clock())
    assert not same.created  # the same content is no amendment
    _set_core(study_copy, "08:00")
    studies.load_study(session, study_copy.file, study_copy.surveys, actor="test", now=clock())
    rows = _instances(app, paused.id)
    assert [(i.wave, i.local_time[-5:]) for i in rows] == [(0, "08:00"), (1, "08:00")]


def test_after_an_amendment_past_occasions_are_never_planned_again(
        app, session, clock, study_copy):
    """A participant whose remaining schedule is empty gets no new-version copies of the past."""
    [veteran] = consented_participants(session, 1, now=clock() - timedelta(days=40),
                                       prefix="amd-veteran")
    _tick(app, clock)  # the three waves lie in the past: planned and expired at once
    old = [(i.wave, i.status) for i in _instances(app, veteran.id)]
    assert old == [(0, "expired"), (1, "expired"), (2, "expired")]
    _set_core(study_copy, "18:00")
    studies.load_study(session, study_copy.file, study_copy.surveys, actor="test", now=clock())
    _tick(app, clock)
    assert [(i.wave, i.status) for i in _instances(app, veteran.id)] == old

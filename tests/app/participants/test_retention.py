"""Contact details are erased once a participant's last survey closed plus the study's
retention period (data_policy.contact_retention_days: 30), audited once and without the address;
their schedule having ended, active or paused participants become completed."""

from __future__ import annotations

import json
from datetime import timedelta

from sqlmodel import Session, func, select
from typer.testing import CliRunner

from app.audit import service as audit
from app.audit.models import AuditEvent
from app.consent import service as consent
from app.participants import erasure
from app.participants.models import Contact, Participant
from app.scheduling.dispatcher import tick
from app.scheduling.ends import schedule_end
from app.studies import service as studies
from tests.support.factory import consented_participants
from tests.support.flows import consent_body, join

runner = CliRunner()


def _erasures(session: Session) -> list[AuditEvent]:
    """Erasures for retention (the decliner's own erasure happened when they declined)."""
    return [e for e in session.exec(select(AuditEvent).where(
        AuditEvent.action == "participant.contact_erased")).all()
        if e.details.get("reason") != "declined"]


def _ledger_size(session: Session) -> int:
    return session.exec(select(func.count()).select_from(AuditEvent)).one()


def _has_contact(session: Session, participant: Participant) -> bool:
    return session.get(Contact, participant.id) is not None


def test_study_file_sets_thirty_days(session, loaded_study):
    study = studies.get_study(session, loaded_study)
    protocol = studies.current_protocol(session, study.id)  # type: ignore[arg-type]
    assert protocol["data_policy"]["contact_retention_days"] == 30


def test_contacts_are_erased_thirty_days_after_the_last_survey_closed(
        app, client, smtp, session, clock, cli):
    active, paused = consented_participants(session, 2, now=clock(), prefix="ret")
    paused.status = "paused"
    session.add(paused)
    session.commit()
    leaving = consented_participants(session, 1, now=clock(), prefix="ret-leaving")[0]
    withdrawal, token = consent.start_withdrawal(session, leaving, "stop_contact", now=clock())
    consent.confirm_withdrawal(session, leaving, withdrawal.id, token,  # type: ignore[arg-type]
                               delete_allowed=True, now=clock())
    session.commit()
    declining = join(client, smtp, "ret-declines@example.org")
    client.post("/api/v1/me/consent", headers=declining.headers, json=consent_body(
        decision="decline", signature_name=None, statements=[]))
    end = schedule_end(session, active)
    assert end is not None and end == schedule_end(session, paused)
    # Enrolled 60 days later: surveys still ahead when the others' period is over.
    clock.advance(days=60)
    [later] = consented_participants(session, 1, now=clock(), prefix="ret-later")

    clock.now = end - timedelta(minutes=1)  # the last survey still open: nothing happens
    assert erasure.erase_expired_contacts(session, now=clock()) == erasure.RetentionReport()

    clock.now = end + timedelta(days=29)
    report = erasure.erase_expired_contacts(session, now=clock())
    assert report == erasure.RetentionReport(completed=2, contacts_erased=0)
    session.rollback()
    assert (active.status, paused.status, later.status) == ("completed", "completed", "active")
    assert _has_contact(session, active) and _has_contact(session, paused)
    assert _erasures(session) == []

    clock.now = end + timedelta(days=31)
    done = tick(app.state.engine, app.state.settings, app.state.channel, now=clock())
    assert (done.completed, done.contacts_erased) == (0, 2)  # the scheduler's periodic work
    session.rollback()
    assert not _has_contact(session, active) and not _has_contact(session, paused)
    assert _has_contact(session, later) and later.status == "active"
    rows = _erasures(session)
    assert sorted(r.target for r in rows) == sorted(
        f"participant:{p.id}" for p in (active, paused))
    assert all(r.actor == "system" and r.details == {"reason": "retention"} for r in rows)
    assert "@" not in json.dumps([[r.details, r.old_value, r.new_value] for r in rows])

    # Again (the command, then the function): nothing more erased, no second ledger row.
    size = _ledger_size(session)
    result = runner.invoke(cli, ["participants", "erase-expired-contacts", "--now",
                                 (clock() + timedelta(hours=1)).isoformat()])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1]) | {"now": None} == {
        "now": None, "completed": 0, "contacts_erased": 0}
    assert erasure.erase_expired_contacts(session, now=clock()) == erasure.RetentionReport()
    session.rollback()
    assert _ledger_size(session) == size
    # Withdrawn and declined people were never touched by retention: nothing of theirs held.
    assert {r.details["reason"] for r in session.exec(select(AuditEvent).where(
        AuditEvent.action == "participant.contact_erased")).all()} == {"retention", "declined"}
    statuses = {p.status for p in session.exec(select(Participant)).all()}
    assert statuses == {"completed", "active", "withdrawn", "declined"}
    assert audit.verify(session).ok


def test_cli_erases_and_refuses_a_time_without_zone(session, clock, cli, loaded_study):
    [person] = consented_participants(session, 1, now=clock(), prefix="ret-cli")
    end = schedule_end(session, person)
    assert end is not None
    naive = runner.invoke(cli, ["participants", "erase-expired-contacts", "--now",
                                "2028-01-01T00:00"])
    assert naive.exit_code == 2 and "time zone offset" in naive.output
    result = runner.invoke(cli, ["participants", "erase-expired-contacts", "--now",
                                 (end + timedelta(days=31)).isoformat()])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output.strip().splitlines()[-1])
    assert (answer["completed"], answer["contacts_erased"]) == (1, 1)
    session.rollback()
    assert session.get(Contact, person.id) is None
    assert session.get(Participant, person.id).status == "completed"  # type: ignore[union-attr]

from __future__ import annotations

from sqlmodel import select

from app.audit import service as audit
from app.consent import service as consent
from app.consent.models import Withdrawal
from app.notify import service as notify
from app.notify.models import OutboxMessage
from app.participants.models import Contact, Participant
from tests.support.flows import enroll, joined_and_consented


def _withdraw(client, person, scope):  # type: ignore[no-untyped-def]
    started = client.post("/api/v1/me/withdrawal", json={"scope": scope}, headers=person.headers)
    assert started.status_code == 201
    return started.json()


def test_two_steps_with_a_wrong_confirmation_changing_nothing(client, smtp, session):
    person = joined_and_consented(client, smtp, "w@example.org")
    started = _withdraw(client, person, "stop_contact")
    assert "never be contacted" in started["what_happens"]
    wrong = client.post(f"/api/v1/me/withdrawal/{started['withdrawal_id']}/confirm",
                        json={"confirm_token": "x" * 43}, headers=person.headers)
    assert wrong.status_code == 403 and wrong.json()["error"]["code"] == "bad_confirmation"
    assert session.exec(select(Participant)).one().status == "active"
    done = client.post(f"/api/v1/me/withdrawal/{started['withdrawal_id']}/confirm",
                       json={"confirm_token": started["confirm_token"]}, headers=person.headers)
    assert done.status_code == 200
    assert done.json()["scope"] == "stop_contact" and done.json()["data_deleted"] is False
    session.rollback()
    participant = session.exec(select(Participant)).one()
    assert participant.status == "withdrawn" and participant.withdrawn_at is not None
    assert session.exec(select(Contact)).all() == []  # the address is gone
    # every credential ended with the withdrawal: the old session opens nothing any more
    me = client.get("/api/v1/me", headers=person.headers)
    assert me.status_code == 401
    again = client.post("/api/v1/me/withdrawal", json={"scope": "delete_data"},
                        headers=person.headers)
    assert again.status_code == 401
    assert session.exec(select(Withdrawal)).one().scope == "stop_contact"


def test_withdrawn_person_is_never_contacted_again(client, smtp, session, clock, app):
    person = joined_and_consented(client, smtp, "quiet@example.org")
    participant = session.exec(select(Participant)).one()
    # A message queued before withdrawal (an invitation, say) must never go out.
    notify.queue(session, participant.id, "magic_link", dedupe_key="later", now=clock())
    session.commit()
    started = _withdraw(client, person, "delete_data")
    client.post(f"/api/v1/me/withdrawal/{started['withdrawal_id']}/confirm",
                json={"confirm_token": started["confirm_token"]}, headers=person.headers)
    sent_before = len(smtp.to("quiet@example.org"))
    clock.advance(days=1)
    counts = notify.deliver_due(app.state.engine, app.state.settings, app.state.channel,
                                now=clock())
    assert counts["sent"] == 0
    assert len(smtp.to("quiet@example.org")) == sent_before
    session.rollback()
    statuses = {m.dedupe_key: m.status for m in session.exec(select(OutboxMessage)).all()}
    assert statuses["later"] == "cancelled"
    # Joining again with the old address creates a new, separate participant.
    enroll(client, "quiet@example.org")
    session.rollback()
    assert len(session.exec(select(Participant)).all()) == 2
    assert audit.verify(session).ok


def test_withdrawn_person_is_refused_by_the_gate(client, smtp, session):
    person = joined_and_consented(client, smtp, "gate@example.org")
    started = _withdraw(client, person, "stop_contact")
    client.post(f"/api/v1/me/withdrawal/{started['withdrawal_id']}/confirm",
                json={"confirm_token": started["confirm_token"]}, headers=person.headers)
    session.rollback()
    participant = session.exec(select(Participant)).one()
    try:
        consent.check_gate(session, participant)
        raised = None
    except consent.Forbidden as exc:
        raised = exc.code
    assert raised == "withdrawn"
    signed = client.post("/api/v1/me/consent", headers=person.headers, json={
        "version": "1.0", "language": "en", "signature_name": "X",
        "statements": ["read_information", "voluntary", "data_use", "adult_confirmed"]})
    assert signed.status_code == 401  # and the session that could have asked has ended


def test_withdrawal_appears_in_the_consent_log(client, smtp, session, settings):
    person = joined_and_consented(client, smtp, "log@example.org")
    started = _withdraw(client, person, "delete_data")
    client.post(f"/api/v1/me/withdrawal/{started['withdrawal_id']}/confirm",
                json={"confirm_token": started["confirm_token"]}, headers=person.headers)
    session.rollback()
    log = consent.consent_log(session, settings.secret_key)
    assert [e.action for e in log] == ["consent", "withdraw"]
    assert log[1].scope == "delete_data" and log[1].data_deleted is True
    assert log[0].pseudonym == log[1].pseudonym


def _answer_who5(client, person):  # type: ignore[no-untyped-def]
    surveys = {s["instrument"]: s["id"] for s in
               client.get("/api/v1/me/surveys", headers=person.headers).json()}
    response = client.post(f"/api/v1/me/surveys/{surveys['who5']}/responses",
                           json={"answers": {f"who5_{i}": 2 for i in range(1, 6)}},
                           headers=person.headers | {"Idempotency-Key": "withdraw-test-1"})
    assert response.status_code == 201


def _confirm(client, person, scope):  # type: ignore[no-untyped-def]
    started = _withdraw(client, person, scope)
    done = client.post(f"/api/v1/me/withdrawal/{started['withdrawal_id']}/confirm",
                       json={"confirm_token": started["confirm_token"]}, headers=person.headers)
    assert done.status_code == 200
    return done.json()


def test_delete_data_erases_answers(client, smtp, session):
    from app.surveys.models import ResponseScore, SurveyInstance, SurveyResponse

    person = joined_and_consented(client, smtp, "erase@example.org")
    _answer_who5(client, person)
    assert _confirm(client, person, "delete_data")["data_deleted"] is True
    session.rollback()
    for model in (SurveyResponse, ResponseScore, SurveyInstance):
        assert session.exec(select(model)).all() == [], model.__name__
    assert audit.verify(session).ok


def test_stop_contact_keeps_answers_and_closes_open_surveys(client, smtp, session):
    from app.surveys.models import SurveyInstance, SurveyResponse

    person = joined_and_consented(client, smtp, "keepdata@example.org")
    _answer_who5(client, person)
    assert _confirm(client, person, "stop_contact")["data_deleted"] is False
    session.rollback()
    assert len(session.exec(select(SurveyResponse)).all()) == 1
    statuses = {i.status for i in session.exec(select(SurveyInstance)).all()}
    assert statuses == {"completed", "cancelled"}

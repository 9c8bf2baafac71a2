from __future__ import annotations

from sqlmodel import select

from app.participants.models import Contact, Participant, ScreeningTally
from tests.support.flows import ELIGIBLE, STUDY, enroll, join


def test_eligible_person_gets_a_magic_link_by_real_smtp(client, smtp, session):
    person = join(client, smtp, "ana@example.org")
    me = client.get("/api/v1/me", headers=person.headers)
    assert me.status_code == 200
    assert me.json()["status"] == "enrolled"
    assert me.json()["needs_consent"] is True
    contact = session.exec(select(Contact)).one()
    assert contact.email == "ana@example.org"
    assert contact.verified_at is not None  # using the link confirmed the address


def test_ineligible_person_is_told_kindly_and_only_counted(client, smtp, session):
    answer = enroll(client, "minor@example.org", screening={"adult": False, "uses_ai_chat": True})
    assert answer["eligible"] is False
    assert "cannot take part" in answer["message"]
    assert session.exec(select(Participant)).all() == []
    assert session.exec(select(Contact)).all() == []
    assert not smtp.to("minor@example.org")
    tally = {t.outcome: t.count for t in session.exec(select(ScreeningTally)).all()}
    assert tally == {"ineligible": 1}


def test_known_address_gets_the_same_answer_and_no_second_participant(client, smtp, session):
    first = client.post(f"/api/v1/studies/{STUDY}/enrollments", json={
        "email": "bo@example.org", "screening": ELIGIBLE})
    second = client.post(f"/api/v1/studies/{STUDY}/enrollments", json={
        "email": "Bo@Example.org ", "screening": ELIGIBLE})
    assert first.status_code == second.status_code == 202
    assert first.json() == second.json()
    assert len(session.exec(select(Participant)).all()) == 1
    assert len(smtp.to("bo@example.org")) >= 2  # the second mail carries a fresh link


def test_timezone_and_language_are_validated(client):
    bad_tz = client.post(f"/api/v1/studies/{STUDY}/enrollments", json={
        "email": "c@example.org", "timezone": "Mars/Olympus", "screening": ELIGIBLE})
    assert bad_tz.status_code == 422
    assert bad_tz.json()["error"]["code"] == "validation_failed"
    assert "timezone" in bad_tz.json()["error"]["message"]
    bad_lang = client.post(f"/api/v1/studies/{STUDY}/enrollments", json={
        "email": "c@example.org", "language": "xx", "screening": ELIGIBLE})
    assert bad_lang.status_code == 422
    assert "language" in bad_lang.json()["error"]["message"]

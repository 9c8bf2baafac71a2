from __future__ import annotations

import threading

from fastapi.testclient import TestClient
from sqlmodel import func, select

from app.audit import service as audit
from app.audit.models import AuditEvent
from app.surveys.models import ResponseScore, SafetyEvent, SurveyInstance, SurveyResponse
from tests.support.flows import CONSENT_VERSION, join, joined_and_consented, sign_in_again

BASELINE = ["baseline", "who5", "phq9", "gad7", "ucla3", "swls", "social_contact", "ai_usage",
            "ai_dependence"]
PHQ9_NO_RISK = {f"phq9_{i}": 1 for i in range(1, 10)} | {"phq9_9": 0}


def _open(client, person):  # type: ignore[no-untyped-def]
    listed = client.get("/api/v1/me/surveys", headers=person.headers)
    assert listed.status_code == 200
    return {s["instrument"]: s["id"] for s in listed.json()}


def _post(client, person, instance_id, answers, key="key-00000001"):  # type: ignore[no-untyped-def]
    return client.post(f"/api/v1/me/surveys/{instance_id}/responses",
                       json={"answers": answers},
                       headers=person.headers | {"Idempotency-Key": key})


def _count(session, model) -> int:  # type: ignore[no-untyped-def]
    session.rollback()
    return session.exec(select(func.count()).select_from(model)).one()


def test_consent_creates_the_baseline_surveys(client, smtp):
    person = join(client, smtp, "b@example.org")
    gated = client.get("/api/v1/me/surveys", headers=person.headers)
    assert gated.status_code == 403 and gated.json()["error"]["code"] == "consent_required"
    client.post("/api/v1/me/consent", headers=person.headers, json={
        "version": CONSENT_VERSION, "language": "en", "signature_name": "B",
        "statements": ["read_information", "voluntary", "data_use", "adult_confirmed"]})
    assert sorted(_open(client, person)) == sorted(BASELINE)


def test_instrument_comes_in_the_participants_language(client, smtp):
    person = joined_and_consented(client, smtp, "de@example.org", language="de")
    survey = client.get(f"/api/v1/me/surveys/{_open(client, person)['who5']}",
                        headers=person.headers).json()
    assert survey["language"] == "de"
    assert survey["translation_status"] == "study"
    assert len(survey["items"]) == 5 and survey["items"][0]["options"]


def test_submission_is_scored_and_a_retry_returns_the_same_result(client, smtp, session):
    person = joined_and_consented(client, smtp, "s@example.org")
    who5 = _open(client, person)["who5"]
    answers = {f"who5_{i}": 3 for i in range(1, 6)}
    first = _post(client, person, who5, answers)
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["scores"]["raw"] == 15 and body["scores"]["primary"] == 60
    assert body["show_crisis_resources"] is False and body["replayed"] is False
    retry = _post(client, person, who5, answers)
    assert retry.status_code == 201
    assert retry.json() | {"replayed": False} == body and retry.json()["replayed"] is True
    changed = _post(client, person, who5, answers | {"who5_1": 5})
    assert changed.status_code == 422
    assert changed.json()["error"]["code"] == "idempotency_key_reused"
    again = _post(client, person, who5, answers, key="another-key-1")
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_completed"
    assert _count(session, SurveyResponse) == 1 and _count(session, ResponseScore) == 1


def test_item_9_shows_crisis_resources_and_records_a_safety_event(client, smtp, session):
    person = joined_and_consented(client, smtp, "risk@example.org")
    surveys = _open(client, person)
    baseline = {"age_band": "age_25_34", "gender": "woman", "country": "de",
                "living_situation": "alone", "ai_use_since": "year_2024",
                "ai_personal_use_since": "year_2024", "gpt4o_before_retirement": "daily",
                "gpt4o_after_retirement": "never"}
    assert _post(client, person, surveys["baseline"], baseline, "k-baseline").status_code == 201
    risky = _post(client, person, surveys["phq9"], PHQ9_NO_RISK | {"phq9_9": 2}, "key-phq9-1")
    assert risky.status_code == 201
    result = risky.json()
    assert result["show_crisis_resources"] is True
    assert result["crisis_resources"][0]["phone"] == "0800 111 0 111"  # Germany first
    assert result["scores"]["primary"] == 10 and result["scores"]["band"] == "moderate"
    session.rollback()
    event = session.exec(select(SafetyEvent)).one()
    assert event.flag == "suicidal_ideation" and event.acknowledged_at is None
    assert "safety.flag" in [e.action for e in session.exec(select(AuditEvent)).all()]
    assert audit.verify(session).ok


def test_item_9_at_zero_raises_nothing(client, smtp, session):
    person = joined_and_consented(client, smtp, "calm@example.org")
    result = _post(client, person, _open(client, person)["phq9"], PHQ9_NO_RISK).json()
    assert result["show_crisis_resources"] is False and result["crisis_resources"] == []
    assert _count(session, SafetyEvent) == 0


def test_bad_answers_name_the_item_and_store_nothing(client, smtp, session):
    person = joined_and_consented(client, smtp, "bad@example.org")
    phq9 = _open(client, person)["phq9"]
    cases = [
        (PHQ9_NO_RISK | {"phq9_1": 7}, "phq9_1", "invalid_option"),
        (PHQ9_NO_RISK | {"phq9_99": 1}, "phq9_99", "unknown_item"),
        ({k: v for k, v in PHQ9_NO_RISK.items() if k != "phq9_4"}, "phq9_4", "required"),
        (PHQ9_NO_RISK | {"phq9_2": True}, "phq9_2", "wrong_type"),
        (PHQ9_NO_RISK | {"phq9_3": "lots"}, "phq9_3", "wrong_type"),
    ]
    for i, (answers, item, code) in enumerate(cases):
        response = _post(client, person, phq9, answers, key=f"bad-key-{i:04d}")
        assert response.status_code == 422, (item, response.text)
        details = response.json()["error"]["details"]
        assert any(d["item"] == item and d["code"] == code for d in details), details
    assert _count(session, SurveyResponse) == 0


def test_missing_idempotency_key_and_other_peoples_surveys(client, smtp):
    alice = joined_and_consented(client, smtp, "alice@example.org")
    bob = joined_and_consented(client, smtp, "bob@example.org")
    alice_who5 = _open(client, alice)["who5"]
    answers = {f"who5_{i}": 3 for i in range(1, 6)}
    no_key = client.post(f"/api/v1/me/surveys/{alice_who5}/responses",
                         json={"answers": answers}, headers=alice.headers)
    assert no_key.status_code == 422
    assert no_key.json()["error"]["code"] == "idempotency_key_required"
    assert client.get(f"/api/v1/me/surveys/{alice_who5}", headers=bob.headers).status_code == 404
    assert _post(client, bob, alice_who5, answers).status_code == 404


def test_expired_survey_is_refused(client, smtp, clock):
    person = joined_and_consented(client, smtp, "late@example.org")
    who5 = _open(client, person)["who5"]
    clock.advance(days=15)
    sign_in_again(client, smtp, person)  # the first session has ended by now too
    late = _post(client, person, who5, {f"who5_{i}": 3 for i in range(1, 6)})
    assert late.status_code == 409 and late.json()["error"]["code"] == "survey_expired"


def test_concurrent_duplicates_store_one_response(app, smtp, session):
    with TestClient(app) as setup:
        person = joined_and_consented(setup, smtp, "race@example.org")
        who5 = _open(setup, person)["who5"]
    answers = {f"who5_{i}": 2 for i in range(1, 6)}
    outcomes: list[tuple[str, int, int | None]] = []

    def submit(key: str) -> None:
        with TestClient(app) as c:
            response = _post(c, person, who5, answers, key=key)
            outcomes.append((key, response.status_code,
                             response.json().get("response_id")))

    keys = ["same-key-0001"] * 6 + [f"other-key-{i:04d}" for i in range(4)]
    threads = [threading.Thread(target=submit, args=(k,)) for k in keys]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {status for _, status, _ in outcomes} <= {201, 409}
    winners = [(key, rid) for key, status, rid in outcomes if status == 201]
    # One key won; every request with that key got the same stored result, the rest a 409.
    assert len({key for key, _ in winners}) == 1 and len({rid for _, rid in winners}) == 1
    winning_key = winners[0][0]
    assert all(status == 201 for key, status, _ in outcomes if key == winning_key)
    assert _count(session, SurveyResponse) == 1
    session.rollback()
    assert session.exec(select(SurveyInstance).where(SurveyInstance.id == who5)).one().status \
        == "completed"


def test_safety_events_are_visible_to_researchers_and_irb(client, smtp, engine):
    from sqlmodel import Session

    from app.auth import service as auth

    person = joined_and_consented(client, smtp, "seen@example.org")
    _post(client, person, _open(client, person)["phq9"], PHQ9_NO_RISK | {"phq9_9": 1})
    with Session(engine) as s:
        tokens = {r: auth.add_staff(s, f"{r}-safety", r) for r in ("researcher", "irb")}
    for role, path in (("researcher", "/api/v1/researcher/safety-events"),
                       ("irb", "/api/v1/irb/safety-events")):
        events = client.get(path, headers={"Authorization": f"Bearer {tokens[role]}"}).json()
        assert [(e["flag"], e["instrument"]) for e in events] == [("suicidal_ideation", "phq9")]
        assert "seen@example.org" not in str(events)
    assert client.get("/api/v1/researcher/safety-events", headers=person.headers
                      ).status_code == 401


def test_text_over_its_limit_and_hidden_items_are_refused(client, smtp, session):
    person = joined_and_consented(client, smtp, "limits@example.org")
    usage = _open(client, person)["ai_usage"]
    base = {"used_models": ["other"], "purposes": ["work"], "ai_framing": 1, "lost_access": "no",
            "hours_other": 2}
    too_long = _post(client, person, usage, base | {"other_model_name": "x" * 101}, "limit-key-1")
    assert too_long.status_code == 422
    assert {"item": "other_model_name", "code": "too_long"}.items() <= \
        too_long.json()["error"]["details"][0].items()
    hidden = _post(client, person, usage, base | {"hours_claude": 3}, "limit-key-2")
    assert hidden.status_code == 422
    assert any(d["item"] == "hours_claude" and d["code"] == "hidden_item"
               for d in hidden.json()["error"]["details"])
    assert _count(session, SurveyResponse) == 0

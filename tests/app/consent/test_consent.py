from __future__ import annotations

import pytest
from sqlmodel import Session, func, select

from app.audit import service as audit
from app.audit.models import AuditEvent
from app.consent import service as consent
from app.consent.models import ConsentRecord
from app.participants.models import Participant
from app.studies import service as studies
from app.studies.models import Study
from tests.support.flows import (
    CONSENT_VERSION,
    STATEMENTS,
    consent_body,
    join,
    joined_and_consented,
)
from tests.support.studyfiles import StudyCopy


def _count(session: Session, model) -> int:  # type: ignore[no-untyped-def]
    return session.exec(select(func.count()).select_from(model)).one()


def test_signing_records_everything_an_irb_asks_for(client, smtp, session):
    person = join(client, smtp, "ana@example.org")
    doc = client.get("/api/v1/me/consent/document?lang=de", headers=person.headers).json()
    assert doc["language"] == "de" and doc["version"] == CONSENT_VERSION
    assert len(doc["sha256"]) == 64 and "<h1>" in doc["body_html"]
    body = consent_body(language="de", signature_name="Ana Beispiel")
    response = client.post("/api/v1/me/consent", json=body, headers=person.headers)
    assert response.status_code == 201
    record = response.json()
    assert record["document_sha256"] == doc["sha256"]
    assert record["signature_name"] == "Ana Beispiel"
    assert record["signature_meaning"].startswith("Mit der Eingabe meines Namens")
    assert record["statements"] == sorted(STATEMENTS)
    assert record["identity_method"] == "email_magic_link"
    assert record["identity_verified_at"] is not None
    assert record["decided_at"].endswith(("Z", "+00:00"))
    me = client.get("/api/v1/me", headers=person.headers).json()
    assert me["status"] == "active" and me["consent_version"] == CONSENT_VERSION
    actions = [e.action for e in session.exec(select(AuditEvent)).all()]
    assert actions.count("consent.sign") == 1


def test_document_says_when_a_language_is_missing(client, smtp):
    person = join(client, smtp, "li@example.org", language="zh-CN")
    doc = client.get("/api/v1/me/consent/document", headers=person.headers).json()
    assert doc["requested_language_available"] is True and doc["language"] == "zh-CN"
    missing = client.get("/api/v1/me/consent/document?lang=ja", headers=person.headers).json()
    assert missing["requested_language_available"] is False
    assert missing["language"] == "zh-CN"  # the participant's own language, not the default
    assert missing["available_languages"] == ["de", "en", "pt-BR", "zh-CN"]


@pytest.mark.parametrize(("override", "code", "field"), [
    ({"statements": STATEMENTS[:-1]}, "statement_missing", "statements"),
    ({"signature_name": "   "}, "signature_required", "signature_name"),
    ({"signature_name": None}, "signature_required", "signature_name"),
    ({"statements": [*STATEMENTS, "made_up"]}, "validation_failed", "statements"),
    ({"language": "ja"}, "validation_failed", "language"),
])
def test_incomplete_consent_is_refused_and_nothing_written(client, smtp, session, override,
                                                           code, field):
    person = join(client, smtp, "x@example.org")
    ledger_before = _count(session, AuditEvent)
    response = client.post("/api/v1/me/consent", json=consent_body(**override),
                           headers=person.headers)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == code
    assert error["details"]["field"] == field
    assert _count(session, ConsentRecord) == 0
    assert _count(session, AuditEvent) == ledger_before


def test_unknown_version_and_unknown_fields_are_refused(client, smtp, session):
    person = join(client, smtp, "y@example.org")
    unknown = client.post("/api/v1/me/consent", json=consent_body(version="9.9"),
                          headers=person.headers)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "unknown_consent_version"
    extra = client.post("/api/v1/me/consent", json={**consent_body(), "admin": True},
                        headers=person.headers)
    assert extra.status_code == 422 and "admin" in extra.json()["error"]["message"]
    assert _count(session, ConsentRecord) == 0


def test_decline_is_recorded(client, smtp, session):
    person = join(client, smtp, "no@example.org")
    response = client.post("/api/v1/me/consent", headers=person.headers, json={
        "version": CONSENT_VERSION, "language": "en", "decision": "decline"})
    assert response.status_code == 201
    assert response.json()["decision"] == "decline"
    assert session.exec(select(Participant)).one().status == "declined"
    assert "consent.decline" in [e.action for e in session.exec(select(AuditEvent)).all()]


def test_copy_as_pdf(client, smtp):
    person = joined_and_consented(client, smtp, "pdf@example.org")
    record_id = client.get("/api/v1/me/consent/records", headers=person.headers).json()[0]["id"]
    pdf = client.get(f"/api/v1/me/consent/records/{record_id}/copy.pdf", headers=person.headers)
    assert pdf.status_code == 200
    assert pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF") and len(pdf.content) > 2000


def test_changed_text_under_a_published_version_is_refused(tmp_path, session):
    copy = StudyCopy(tmp_path)
    studies.load_study(session, copy.file, copy.surveys, actor="test")
    doc = copy.consent_doc("1.0", "en")
    doc.write_text(doc.read_text("utf-8") + "\nA sneaky extra sentence.\n", "utf-8")
    with pytest.raises(consent.ConsentVersionImmutable, match="en document"):
        studies.load_study(session, copy.file, copy.surveys, actor="test")
    session.rollback()
    assert studies.protocol_count(session, 1) == 1


def test_loading_is_idempotent_and_changes_make_new_versions(tmp_path, session):
    copy = StudyCopy(tmp_path)
    first = studies.load_study(session, copy.file, copy.surveys, actor="test")
    again = studies.load_study(session, copy.file, copy.surveys, actor="test")
    assert (first.protocol_version, first.created) == (1, True)
    assert (again.protocol_version, again.created) == (1, False)
    data = copy.read()
    data["description"]["en"] += " Amended."
    copy.write(data)
    changed = studies.load_study(session, copy.file, copy.surveys, actor="test")
    assert (changed.protocol_version, changed.created) == (2, True)
    assert studies.protocol_count(session, 1) == 2
    loads = [e for e in session.exec(select(AuditEvent)).all() if e.action == "protocol.load"]
    assert [e.new_value["version"] for e in loads] == [1, 2]


def test_invalid_study_file_names_the_place(tmp_path, session):
    copy = StudyCopy(tmp_path)
    data = copy.read()
    data["eligibility"][0]["eligible_if"] = "maybe"
    copy.write(data)
    with pytest.raises(studies.StudyLoadError, match=r"eligibility/0/eligible_if"):
        studies.load_study(session, copy.file, copy.surveys, actor="test")


def test_reconsent_blocks_until_the_new_version_is_signed(client, smtp, session, tmp_path):
    person = joined_and_consented(client, smtp, "re@example.org")
    participant = session.exec(select(Participant)).one()
    consent.check_gate(session, participant)  # passes on the current version
    copy = StudyCopy(tmp_path)
    copy.add_consent_version("2.0", requires_reconsent=True)
    studies.load_study(session, copy.file, copy.surveys, actor="test")
    with pytest.raises(consent.Forbidden) as blocked:
        consent.check_gate(session, participant)
    assert blocked.value.code == "reconsent_required"
    me = client.get("/api/v1/me", headers=person.headers).json()
    assert me["needs_reconsent"] is True
    old = client.post("/api/v1/me/consent", json=consent_body(), headers=person.headers)
    assert old.status_code == 422
    assert old.json()["error"]["code"] == "consent_version_not_current"
    new = client.post("/api/v1/me/consent", json=consent_body(version="2.0"),
                      headers=person.headers)
    assert new.status_code == 201
    session.rollback()  # end the test's read snapshot
    consent.check_gate(session, participant)  # passes again


def test_amendment_without_reconsent_keeps_people_going(client, smtp, session, tmp_path):
    joined_and_consented(client, smtp, "keep@example.org")
    copy = StudyCopy(tmp_path)
    copy.add_consent_version("1.2", requires_reconsent=False)
    studies.load_study(session, copy.file, copy.surveys, actor="test")
    participant = session.exec(select(Participant)).one()
    consent.check_gate(session, participant)
    assert audit.verify(session).ok


def test_invalid_instrument_is_refused_naming_file_and_place(tmp_path, session):
    copy = StudyCopy(tmp_path)
    who5 = copy.surveys / "instruments" / "who5.yaml"
    who5.write_text(who5.read_text("utf-8").replace("recall_period_days: 14",
                                                    "recall_period_days: soon"), "utf-8")
    with pytest.raises(studies.StudyLoadError, match=r"who5\.yaml.*recall_period_days"):
        studies.load_study(session, copy.file, copy.surveys, actor="test")
    session.rollback()
    assert session.exec(select(Study)).all() == []  # nothing half-loaded

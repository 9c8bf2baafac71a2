"""Data under the chain: `audit verify --deep` recomputes stored answers, consent documents and
the frozen signed copies against the hashes the ledger recorded; consent documents are
append-only; a participant's copy is served from its snapshot only when it matches the ledger.
Tampering is done with the app's database credentials, in SQL, triggers switched off."""

from __future__ import annotations

import pytest
from sqlalchemy import text, update
from sqlalchemy.exc import DBAPIError
from sqlmodel import select

from app.audit import deep
from app.audit.models import AuditEvent
from app.consent.models import ConsentDocument
from app.core.security import sha256_text
from app.surveys.models import SurveyResponse
from tests.support import tamper
from tests.support.flows import joined_and_consented
from tests.support.pdftext import pdf_text

CLAUSE = "The study may share your answers with advertisers."


def _answer(client, person, instrument: str, answers: dict) -> None:  # type: ignore[no-untyped-def]
    surveys = client.get("/api/v1/me/surveys", headers=person.headers).json()
    instance = next(s["id"] for s in surveys if s["instrument"] == instrument)
    done = client.post(f"/api/v1/me/surveys/{instance}/responses", json={"answers": answers},
                       headers=person.headers | {"Idempotency-Key": f"deep-{instance}"})
    assert done.status_code == 201, done.text


@pytest.fixture
def study_with_data(client, smtp):  # type: ignore[no-untyped-def]
    person = joined_and_consented(client, smtp, f"deep-{id(client)}@example.org")
    _answer(client, person, "phq9", {f"phq9_{i}": 0 for i in range(1, 10)})
    record = client.get("/api/v1/me/consent/records", headers=person.headers).json()[-1]
    return person, record["id"]


def test_intact_data_verifies(study_with_data, session):
    report = deep.verify_data(session)
    assert report.ok, report.problems
    assert report.answers_checked == 1 and report.copies_checked == 1
    assert report.records_checked == 1 and report.documents_checked >= 4


def test_an_edited_answer_is_named(study_with_data, session):
    row = session.exec(select(SurveyResponse)).one()
    answers = dict(row.answers) | {"phq9_9": 3}  # "not at all" becomes "nearly every day"
    session.execute(update(SurveyResponse.__table__).values(answers=answers))  # type: ignore[attr-defined]
    session.commit()
    report = deep.verify_data(session)
    assert not report.ok
    [problem] = report.problems
    assert problem.kind == "answers_changed"
    assert problem.target == f"survey_instance:{row.instance_id}"


def test_a_deleted_answer_is_named_unless_erasure_was_asked(study_with_data, session):
    row = session.exec(select(SurveyResponse)).one()
    session.execute(text("DELETE FROM response_scores"))
    session.execute(text("DELETE FROM safety_events"))
    session.execute(text("DELETE FROM survey_responses"))
    session.commit()
    [problem] = deep.verify_data(session).problems
    assert problem.kind == "answers_missing"
    assert problem.target == f"survey_instance:{row.instance_id}"


def test_consent_documents_are_append_only(study_with_data, session):
    with pytest.raises(DBAPIError, match="append-only"):
        session.execute(text("UPDATE consent_documents SET body_md = body_md || 'x'"))
    session.rollback()
    with pytest.raises(DBAPIError, match="append-only"):
        session.execute(text("DELETE FROM consent_documents"))
    session.rollback()
    with pytest.raises(DBAPIError, match="append-only"):
        session.execute(text("DELETE FROM consent_copies"))
    session.rollback()


def test_an_edited_consent_text_is_named_and_the_copy_keeps_what_was_signed(
        study_with_data, client, session):
    person, record_id = study_with_data
    tamper.unprotect(session, "consent_documents")
    doc = session.exec(select(ConsentDocument).where(ConsentDocument.language == "en")
                       .order_by(ConsentDocument.id.desc())).first()  # type: ignore[attr-defined]
    edited = doc.body_md + "\n\n" + CLAUSE
    # the clause, and the stored hash made to fit it: only the ledger still knows better
    session.execute(text("UPDATE consent_documents SET body_md = :b, sha256 = :h WHERE id = :i"),
                    {"b": edited, "h": sha256_text(edited), "i": doc.id})
    session.commit()
    report = deep.verify_data(session)
    assert [p.kind for p in report.problems] == ["document_changed"]
    assert report.problems[0].target.endswith("/en")
    pdf = client.get(f"/api/v1/me/consent/records/{record_id}/copy.pdf", headers=person.headers)
    assert pdf.status_code == 200
    assert "advertisers" not in pdf_text(pdf.content)  # the snapshot, not the edited table


def test_an_edited_copy_is_refused_and_reported(study_with_data, client, session):
    person, record_id = study_with_data
    tamper.unprotect(session, "consent_copies")
    session.execute(text("UPDATE consent_copies SET content = replace(content, :a, :b)"),
                    {"a": "## ", "b": f"{CLAUSE}\n\n## "})
    session.commit()
    for path in (f"/api/v1/me/consent/records/{record_id}",
                 f"/api/v1/me/consent/records/{record_id}/copy.pdf"):
        refused = client.get(path, headers=person.headers)
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["code"] == "consent_copy_mismatch"
    session.rollback()
    reported = session.exec(select(AuditEvent).where(
        AuditEvent.action == "consent.copy_refused")).all()
    assert reported and reported[0].target == f"consent_record:{record_id}"
    assert "does not match its own hash" in " ".join(reported[0].details["problems"])
    assert [p.kind for p in deep.verify_data(session).problems] == ["copy_changed"]


def test_a_copy_whose_hash_was_refitted_is_still_refused(study_with_data, client, session):
    person, record_id = study_with_data
    tamper.unprotect(session, "consent_copies")
    content = session.execute(text("SELECT content FROM consent_copies")).scalar()
    forged = content.replace("## ", f"{CLAUSE}\n\n## ", 1)
    session.execute(text("UPDATE consent_copies SET content = :c, sha256 = :h"),
                    {"c": forged, "h": sha256_text(forged)})
    session.commit()
    refused = client.get(f"/api/v1/me/consent/records/{record_id}", headers=person.headers)
    assert refused.status_code == 409
    assert [p.kind for p in deep.verify_data(session).problems] == ["copy_changed"]


def test_older_rows_without_hashes_are_counted_not_failed(study_with_data, session):
    """A ledger from before response_sha256 and stored copies: the answers cannot be checked
    (counted), the copy is re-rendered only after the document's hash is checked."""
    tamper.unprotect(session)
    tamper.unprotect(session, "consent_copies")
    for action, key in (("response.store", "response_sha256"), ("consent.sign", "copy_sha256")):
        row = session.exec(select(AuditEvent).where(AuditEvent.action == action)).one()
        details = {k: v for k, v in row.details.items() if k != key}
        session.execute(update(AuditEvent.__table__).where(  # type: ignore[attr-defined]
            AuditEvent.__table__.c.id == row.id).values(details=details))  # type: ignore[attr-defined]
        session.commit()
        tamper.rehash_from(session, row.id)
    session.execute(text("DELETE FROM consent_copies"))
    session.commit()
    report = deep.verify_data(session)
    assert report.ok and report.answers_without_hash == 1 and report.copies_checked == 0


def test_an_old_copy_from_an_edited_document_is_refused(study_with_data, client, session):
    person, record_id = study_with_data
    tamper.unprotect(session)
    tamper.unprotect(session, "consent_copies")
    tamper.unprotect(session, "consent_documents")
    row = session.exec(select(AuditEvent).where(AuditEvent.action == "consent.sign")).one()
    details = {k: v for k, v in row.details.items() if k != "copy_sha256"}
    session.execute(update(AuditEvent.__table__).where(  # type: ignore[attr-defined]
        AuditEvent.__table__.c.id == row.id).values(details=details))  # type: ignore[attr-defined]
    session.commit()
    tamper.rehash_from(session, row.id)
    session.execute(text("DELETE FROM consent_copies"))
    session.commit()
    served = client.get(f"/api/v1/me/consent/records/{record_id}", headers=person.headers)
    assert served.status_code == 200  # re-rendered: the document still has the signed hash
    session.execute(text("UPDATE consent_documents SET body_md = body_md || :c"), {"c": CLAUSE})
    session.commit()
    refused = client.get(f"/api/v1/me/consent/records/{record_id}", headers=person.headers)
    assert refused.status_code == 409


def test_verify_deep_command_exits_1_naming_the_changed_answer(study_with_data, session,
                                                               settings, db_url):
    from typer.testing import CliRunner

    from app.cli import app as cli_app
    from app.config import get_settings

    def run() -> tuple[int, str]:
        get_settings.cache_clear()
        try:
            result = CliRunner().invoke(cli_app, ["audit", "verify", "--deep"], env={
                "WELLPANEL_DATABASE_URL": db_url, "WELLPANEL_ENVIRONMENT": "test",
                "WELLPANEL_SECRET_KEY": settings.secret_key,
                "WELLPANEL_LEDGER_DIR": str(settings.ledger_dir)})
        finally:
            get_settings.cache_clear()
        return result.exit_code, result.stdout + result.stderr

    code, out = run()
    assert code == 0 and "data under the ledger intact" in out, out
    row = session.exec(select(SurveyResponse)).one()
    session.execute(update(SurveyResponse.__table__).values(  # type: ignore[attr-defined]
        answers=dict(row.answers) | {"phq9_9": 3}))
    session.commit()
    code, out = run()
    assert code == 1 and "audit ledger intact" in out  # the chain is fine ...
    assert f"answers_changed: survey_instance:{row.instance_id}" in out  # ... the data is not

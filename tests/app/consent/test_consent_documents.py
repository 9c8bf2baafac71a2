"""Consent documents: required elements mapped to sections in every language, checked at study
load; language versions marked original / study translation, approved or not."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
import yaml
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from app.auth import service as auth
from app.config import PROJECT_ROOT
from app.consent import service as consent
from app.consent.document import render_markdown, sections
from app.consent.models import ConsentSubmit, ConsentVersion
from app.participants import service as participants
from app.participants.models import EnrollmentCreate
from app.studies import service as studies
from app.studies.models import Study
from tests.support.flows import CONSENT_VERSION, STATEMENTS, STUDY, joined_and_consented
from tests.support.studyfiles import StudyCopy

LANGUAGES = ["en", "de", "pt-BR", "zh-CN"]


def _load(copy: StudyCopy, session: Session):  # type: ignore[no-untyped-def]
    return studies.load_study(session, copy.file, copy.surveys, actor="test")


def _refused(copy: StudyCopy, session: Session, *fragments: str) -> str:
    """Loading is refused with a message naming every fragment, and nothing is stored."""
    with pytest.raises(studies.StudyLoadError) as refused:
        _load(copy, session)
    session.rollback()
    message = refused.value.message
    for fragment in fragments:
        assert fragment in message, message
    assert session.exec(select(Study)).all() == []
    return message


def test_the_shipped_study_maps_every_required_element_in_every_language():
    data = yaml.safe_load((PROJECT_ROOT / "surveys" / "studies" / f"{STUDY}.yaml").read_text(
        "utf-8"))
    current = next(v for v in data["consent"]["versions"] if v["version"] == CONSENT_VERSION)
    elements = {e["id"]: e for e in data["consent"]["required_elements"]}
    # the Common Rule's basic elements and GDPR Art. 13 as the issue lists them
    assert {"purpose", "procedures_duration", "risks", "benefits", "confidentiality", "contacts",
            "voluntariness", "controller", "legal_basis", "recipients", "retention", "rights",
            "complaint", "compensation", "future_use"} <= set(elements)
    assert all(e["regulations"] for e in elements.values())
    assert set(current["sections"]) == set(elements)
    assert set(current["languages"]) == set(data["languages"])
    assert current["languages"]["zh-CN"] == {"status": "study_translation", "approved": False}
    assert current["languages"]["en"] == {"status": "original", "approved": True}
    root = PROJECT_ROOT / "surveys" / "consent" / STUDY
    for lang in LANGUAGES:
        found = sections((root / CONSENT_VERSION / f"{lang}.md").read_text("utf-8"))
        for element, section_id in current["sections"].items():
            assert found[section_id].text, (lang, element)
        assert "30" in found["retention"].text  # contact details: 30 days (data_policy)
        assert "study-team@wellpanel.invalid" in found["controller"].text


def test_the_shipped_study_loads_with_1_0_untouched(tmp_path, session):
    copy = StudyCopy(tmp_path)
    result = _load(copy, session)
    assert result.new_consent_versions == ["1.0", CONSENT_VERSION]
    versions = {v.version: v for v in session.exec(select(ConsentVersion)).all()}
    assert versions[CONSENT_VERSION].requires_reconsent is True
    assert versions[CONSENT_VERSION].approval_ref.startswith("IRB-2026-0412-A1")
    assert sorted(consent.documents_of(session, versions["1.0"].id)) == ["de", "en", "pt-BR"]
    assert sorted(consent.documents_of(session, versions[CONSENT_VERSION].id)) == sorted(
        LANGUAGES)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_a_document_missing_a_section_is_refused_naming_language_element_and_section(
        tmp_path, session, lang):
    copy = StudyCopy(tmp_path)
    doc = copy.consent_doc(CONSENT_VERSION, lang)
    doc.write_text(doc.read_text("utf-8").replace("{#complaint}\n", ""), "utf-8")
    message = _refused(copy, session, f"language {lang}", "'complaint'", "{#complaint}",
                       "missing", f"{lang}.md", "GDPR Art. 13(2)(d)")
    assert f"consent version {CONSENT_VERSION}" in message


@pytest.mark.parametrize("lang", LANGUAGES)
def test_a_document_with_an_empty_section_is_refused(tmp_path, session, lang):
    copy = StudyCopy(tmp_path)
    doc = copy.consent_doc(CONSENT_VERSION, lang)
    text = doc.read_text("utf-8")
    # keep the heading of the compensation section, drop its text
    start = text.index("{#compensation}")
    heading_end = text.index("\n", text.index("\n", start) + 1)
    doc.write_text(text[:heading_end + 1] + "\n" + text[text.index("{#controller}"):], "utf-8")
    _refused(copy, session, f"language {lang}", "'compensation'", "{#compensation}", "empty")


def test_an_unmapped_element_is_refused(tmp_path, session):
    copy = StudyCopy(tmp_path)
    data = copy.read()
    del data["consent"]["versions"][-1]["sections"]["future_use"]
    copy.write(data)
    _refused(copy, session, "consent/versions/1/sections", "'future_use' is not mapped")


def test_the_current_version_must_map_the_elements(tmp_path, session):
    copy = StudyCopy(tmp_path)
    data = copy.read()
    data["consent"]["current"] = "1.0"  # 1.0 predates the list and maps nothing
    copy.write(data)
    _refused(copy, session, "current version 1.0 must map every required element")


def test_a_section_id_used_twice_is_refused(tmp_path, session):
    copy = StudyCopy(tmp_path)
    doc = copy.consent_doc(CONSENT_VERSION, "de")
    doc.write_text(doc.read_text("utf-8") + "\n{#risks}\n## Noch einmal\n\nText.\n", "utf-8")
    _refused(copy, session, "language de", "{#risks} is used twice")


@pytest.mark.parametrize(("change", "fragment"), [
    ({"de": {"status": "original", "approved": True}}, "exactly one language"),
    ({"en": {"status": "original", "approved": False}}, "the original must be the text"),
    ({"de": {"status": "machine", "approved": True}}, "consent/versions/1/languages"),
])
def test_language_versions_are_checked(tmp_path, session, change, fragment):
    copy = StudyCopy(tmp_path)
    data = copy.read()
    data["consent"]["versions"][-1]["languages"].update(change)
    copy.write(data)
    _refused(copy, session, fragment)


def test_a_database_on_1_0_takes_the_new_version(tmp_path, session):
    """An installation loaded when 1.0 was the only version loads the new file: 1.0 is
    unchanged (no immutability error), the new version is current and asks for reconsent."""
    copy = StudyCopy(tmp_path)
    shipped = copy.read()
    old = copy.read()
    old["consent"]["current"] = "1.0"
    old["consent"]["versions"] = old["consent"]["versions"][:1]
    del old["consent"]["required_elements"]
    copy.write(old)
    assert _load(copy, session).new_consent_versions == ["1.0"]
    copy.write(shipped)
    result = _load(copy, session)
    assert (result.protocol_version, result.new_consent_versions) == (2, [CONSENT_VERSION])
    study = session.exec(select(Study)).one()
    assert studies.current_consent_version_name(session, study.id) == CONSENT_VERSION
    assert consent.current_version(session, study.id).requires_reconsent is True


def test_block_attributes_only_set_ids():
    html = render_markdown('{#controller onclick="alert(1)" style="color:red"}\n## Who\n\nText.\n')
    assert '<h2 id="controller">Who</h2>' in html
    assert "onclick" not in html and "style" not in html


def test_the_irb_sees_language_versions_and_the_element_map(app, engine, client, smtp):
    joined_and_consented(client, smtp, "irb-view@example.org")
    with Session(engine) as s:
        token = auth.add_staff(s, "irb-docs", "irb")
    versions = client.get("/api/v1/irb/consent-versions",
                          headers={"Authorization": f"Bearer {token}"}).json()
    current = next(v for v in versions if v["current"])
    assert current["language_versions"]["zh-CN"] == {"status": "study_translation",
                                                     "approved": False}
    assert current["language_versions"]["de"]["approved"] is True
    elements = {e["id"]: e for e in current["required_elements"]}
    assert elements["complaint"]["section"] == "complaint"
    assert "GDPR Art. 13(2)(d)" in elements["complaint"]["regulations"]
    assert next(v for v in versions if v["version"] == "1.0")["required_elements"] == []

    web = TestClient(app)
    page = web.get("/staff/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    web.post("/staff/login", data={"csrf_token": csrf, "token": token})
    html = web.get("/staff/irb/consent-versions").text
    assert "zh-CN <span class=\"langstatus\">(study translation, not approved)</span>" in html
    assert "de <span class=\"langstatus\">(approved translation)</span>" in html
    assert "en <span class=\"langstatus\">(approved original)</span>" in html
    assert f'id="elements-keep4o-panel-{CONSENT_VERSION}"' in html
    assert "<code>#complaint</code>" in html and "GDPR Art. 77" in html


def test_the_copy_keeps_the_status_its_language_had_when_it_was_signed(tmp_path, session):
    """zh-CN approved after someone signed the study translation: the page shows it approved,
    that person's copy still says what they were told."""
    start = datetime(2026, 11, 2, 9, tzinfo=UTC)
    copy = StudyCopy(tmp_path)
    _load_at(copy, session, start)
    study = session.exec(select(Study)).one()
    protocol = studies.current_protocol(session, study.id)
    _, participant, _ = participants.enroll(session, study, EnrollmentCreate(
        email="li@example.org", language="zh-CN", screening={"adult": True, "uses_ai_chat": True}),
        protocol["eligibility"], now=start)
    assert participant is not None
    record = consent.record_decision(session, participant, ConsentSubmit(
        version=CONSENT_VERSION, language="zh-CN", signature_name="张伟",
        statements=list(STATEMENTS)), identity_verified_at=start, now=start + timedelta(hours=1))
    session.commit()
    data = copy.read()
    data["consent"]["versions"][-1]["languages"]["zh-CN"]["approved"] = True
    copy.write(data)
    assert _load_at(copy, session, start + timedelta(days=1)).protocol_version == 2

    page = consent.document_for(session, study, "zh-CN", "en")
    assert page.language_versions["zh-CN"].kind == "approved_translation"
    signed = consent.signed_copy(session, participant, record.id).record  # type: ignore[arg-type]
    assert signed.language_versions["zh-CN"].kind == "study_translation"


def _load_at(copy: StudyCopy, session: Session, now: datetime):  # type: ignore[no-untyped-def]
    return studies.load_study(session, copy.file, copy.surveys, actor="test", now=now)

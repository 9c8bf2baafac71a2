"""The signed copy as PDF: every script readable, with the approval and the language status."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.config import PROJECT_ROOT
from app.consent import copy
from app.consent.document import sections
from app.consent.models import ConsentRecordPublic, LanguageStatus
from app.i18n import translator
from tests.support.flows import CONSENT_VERSION, STUDY, consent_body, join
from tests.support.pdftext import pdf_text, shows_without_font

SIGNERS = [("zh-CN", "张伟", "study_translation"), ("de", "Jürgen Groß", "approved_translation"),
           ("pt-BR", "João", "approved_translation"), ("en", "Alex Example", "original")]
APPROVAL = "IRB-2026-0412-A1"


def _document(lang: str) -> str:
    path = PROJECT_ROOT / "surveys" / "consent" / STUDY / CONSENT_VERSION / f"{lang}.md"
    return path.read_text("utf-8")


@pytest.mark.parametrize(("lang", "name", "status"), SIGNERS)
def test_the_pdf_copy_reads_back_in_every_language(client, smtp, lang, name, status):
    person = join(client, smtp, f"pdf-{lang.lower()}@example.org", language=lang)
    doc = client.get("/api/v1/me/consent/document", headers=person.headers).json()
    assert doc["language"] == lang and doc["approval_ref"].startswith(APPROVAL)
    signed = client.post("/api/v1/me/consent", headers=person.headers,
                         json=consent_body(language=lang, signature_name=name))
    assert signed.status_code == 201, signed.text
    record = signed.json()
    assert record["approval_ref"].startswith(APPROVAL)
    assert record["language_versions"]["zh-CN"] == {"status": "study_translation",
                                                    "approved": False}
    response = client.get(f"/api/v1/me/consent/records/{record['id']}/copy.pdf",
                          headers=person.headers)
    assert response.status_code == 200 and response.content.startswith(b"%PDF")
    assert shows_without_font(response.content) == []
    text = pdf_text(response.content)
    t = translator(lang)
    assert f"{t('copy.signature')}: {name}" in text
    assert f"{t('consent_doc.approval')}: {doc['approval_ref']}" in text
    assert t(f"consent_doc.short_{status}") in text
    assert t("consent_doc.approved_languages") in text and "Deutsch" in text
    for section in ("purpose", "controller", "complaint"):  # lines of the document itself
        assert sections(_document(lang))[section].heading in text
    assert doc["statements"][0]["text"][:20] in text


def _record(language: str, signature: str) -> ConsentRecordPublic:
    return ConsentRecordPublic(
        id=1, study=STUDY, version=CONSENT_VERSION, decision="consent", language=language,
        document_sha256="0" * 64, signature_name=signature, signature_meaning="-",
        statements=[], decided_at=datetime(2026, 11, 2, 9, tzinfo=UTC),
        identity_method="email_magic_link", identity_verified_at=None,
        approval_ref="IRB-X", language_versions={language: LanguageStatus()})


def test_a_missing_cjk_font_is_named_and_only_needed_for_cjk_text(tmp_path):
    t = translator("en")
    latin = copy.consent_pdf(_record("en", "Jürgen Groß"), "# Text\n\nBody.\n", [], t,
                             cjk_font_dir=tmp_path)
    assert "Jürgen Groß" in pdf_text(latin)
    with pytest.raises(copy.ConsentCopyUnavailable, match="fonts-noto-cjk") as missing:
        copy.consent_pdf(_record("en", "张伟"), "# Text\n\nBody.\n", [], t, cjk_font_dir=tmp_path)
    assert missing.value.status_code == 503
    assert missing.value.details["package"] == "fonts-noto-cjk"


def test_the_download_says_what_is_missing(client, smtp, monkeypatch, tmp_path):
    person = join(client, smtp, "nofont@example.org", language="zh-CN")
    record = client.post("/api/v1/me/consent", headers=person.headers,
                         json=consent_body(language="zh-CN", signature_name="张伟")).json()
    monkeypatch.setattr(copy, "CJK_FONT_DIR", tmp_path)  # as on a server without the package
    response = client.get(f"/api/v1/me/consent/records/{record['id']}/copy.pdf",
                          headers=person.headers)
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "consent_copy_unavailable" and "fonts-noto-cjk" in error["message"]

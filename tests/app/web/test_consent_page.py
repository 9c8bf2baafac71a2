"""The consent page in every language, with and without a document in that language, and with
made-up document languages: always a page (never a 500), nothing stored by looking."""

from __future__ import annotations

from html import escape

import pytest
from sqlmodel import Session, func, select

from app.audit.models import AuditEvent
from app.consent.models import ConsentRecord
from app.i18n import LANGUAGE_NAMES, translator
from app.participants.models import Participant
from app.studies import service as studies
from tests.support.flows import STATEMENTS
from tests.support.pages import csrf_of, signed_in_browser
from tests.support.studyfiles import StudyCopy

LANGUAGES = ["en", "de", "pt-BR", "zh-CN"]
STATUS = {"en": "original", "de": "approved_translation", "pt-BR": "approved_translation",
          "zh-CN": "study_translation"}
APPROVED = "Deutsch, English, Português (Brasil)"


def _stored(session: Session) -> tuple[int, int, list[str]]:
    session.rollback()  # a fresh snapshot
    return (session.exec(select(func.count()).select_from(AuditEvent)).one(),
            session.exec(select(func.count()).select_from(ConsentRecord)).one(),
            [p.status for p in session.exec(select(Participant)).all()])


def _shown_language(html: str) -> str:
    start = html.index('<article class="document" lang="') + len('<article class="document" lang="')
    return html[start:html.index('"', start)]


@pytest.mark.parametrize("lang", LANGUAGES)
def test_the_page_shows_the_document_in_the_participants_language(app, smtp, session, lang):
    web = signed_in_browser(app, smtp, lang, consented=False)
    before = _stored(session)
    page = web.get("/p/consent")
    assert page.status_code == 200, page.text[:500]
    assert f'<html lang="{lang}">' in page.text
    assert _shown_language(page.text) == lang
    assert f'<input type="hidden" name="language" value="{lang}">' in page.text
    t = translator(lang)
    # the scrolling text box can be reached and read with the keyboard
    assert f'tabindex="0" aria-label="{escape(t("consent_doc.box_label"))}"' in page.text
    assert 'id="doc-language-note"' not in page.text
    assert escape(t(f"consent_doc.reading_{STATUS[lang]}", approved=APPROVED)) in page.text
    for code, status in STATUS.items():  # every language version says what it is
        assert f"{escape(LANGUAGE_NAMES[code])}</" in page.text
        assert f"({escape(t('consent_doc.short_' + status))})" in page.text
    assert _stored(session) == before


@pytest.mark.parametrize("lang", LANGUAGES)
def test_without_a_document_in_the_language_another_is_shown_with_a_note(
        app, smtp, session, tmp_path, lang):
    others = [code for code in LANGUAGES if code != lang]
    copy = StudyCopy(tmp_path)
    copy.add_consent_version("1.2", requires_reconsent=False, languages=tuple(others))
    studies.load_study(session, copy.file, copy.surveys, actor="test")
    web = signed_in_browser(app, smtp, lang, consented=False)
    before = _stored(session)
    page = web.get("/p/consent")
    assert page.status_code == 200, page.text[:500]
    shown = "en" if "en" in others else "de"  # the study's default language, else the first
    assert _shown_language(page.text) == shown
    t = translator(lang)
    note = t("consent_doc.not_available", language=LANGUAGE_NAMES[lang],
             shown=LANGUAGE_NAMES[shown])
    assert f'id="doc-language-note">{escape(note)}</p>' in page.text
    assert f'<input type="hidden" name="language" value="{shown}">' in page.text
    assert _stored(session) == before
    # and it can be signed in the language shown
    signed = web.post("/p/consent", data={
        "csrf_token": csrf_of(page), "version": "1.2", "language": shown,
        "decision": "consent", "signature_name": "Fallback Reader", "statements": STATEMENTS},
        follow_redirects=False)
    assert signed.status_code == 303


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("doc", ["xx", "<script>alert('doc')</script>", "zh-cn", ""])
def test_a_document_language_that_does_not_exist_shows_the_page_language(app, smtp, session,
                                                                         lang, doc):
    web = signed_in_browser(app, smtp, lang, consented=False)
    before = _stored(session)
    page = web.get("/p/consent", params={"doc": doc})
    assert page.status_code == 200, page.text[:500]
    assert _shown_language(page.text) == lang
    assert "alert('doc')" not in page.text and "alert(&#39;doc&#39;)" not in page.text
    t = translator(lang)
    if doc:
        note = t("consent_doc.not_available_unknown", shown=LANGUAGE_NAMES[lang])
        assert f'id="doc-language-note">{escape(note)}</p>' in page.text
    else:
        assert 'id="doc-language-note"' not in page.text
    assert _stored(session) == before


def test_another_document_language_can_be_chosen(app, smtp):
    web = signed_in_browser(app, smtp, "en", consented=False)
    page = web.get("/p/consent?lang=en&doc=zh-CN")
    assert page.status_code == 200 and _shown_language(page.text) == "zh-CN"
    assert '<html lang="en">' in page.text  # the page stays in English, the document is Chinese
    assert escape(translator("en")("consent_doc.reading_study_translation",
                                   approved=APPROVED)) in page.text
    assert 'lang="zh-CN">我已阅读上述研究信息' in page.text  # the statements follow the document


@pytest.mark.parametrize("language", ["xx", "<b>de</b>"])
def test_signing_in_a_document_language_that_does_not_exist_is_refused(app, smtp, session,
                                                                        language):
    web = signed_in_browser(app, smtp, "de", consented=False)
    before = _stored(session)
    version = web.get("/api/v1/me").json()["consent_current_version"]
    refused = web.post("/p/consent", data={
        "csrf_token": csrf_of(web.get("/p/consent")), "version": version, "language": language,
        "decision": "consent", "signature_name": "Jürgen Groß", "statements": STATEMENTS})
    assert refused.status_code == 422 and 'role="alert"' in refused.text
    assert _shown_language(refused.text) == "de" and "<b>de</b>" not in refused.text
    assert _stored(session) == before

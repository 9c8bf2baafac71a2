"""What the consent page says about the document's language versions (which one is shown, why,
and which ones the ethics committee approved)."""

from __future__ import annotations

from typing import Any

from app.consent.models import ConsentDocumentPublic
from app.i18n import LANGUAGE_NAMES


def requested_document_language(query_doc: str | None, form_language: Any, page_lang: str) -> str:
    """The document language asked for: ?doc=, else the form's (after an error), else the
    page's. Anything else (a list, a made-up code) is only compared, never shown."""
    for candidate in (query_doc, form_language):
        if isinstance(candidate, str) and candidate:
            return candidate
    return page_lang


def document_notes(document: ConsentDocumentPublic, requested: str) -> dict[str, Any]:
    """Template context: the requested language's name (None if it is no language we know, so
    that no made-up value is echoed), the shown one's status and the approved versions."""
    versions = document.language_versions
    shown = versions.get(document.language)
    return {
        "requested_language_name": LANGUAGE_NAMES.get(requested),
        "shown_language_name": LANGUAGE_NAMES.get(document.language, document.language),
        "shown_status": shown.kind if shown else None,
        "approved_language_names": ", ".join(
            LANGUAGE_NAMES.get(lang, lang) for lang in document.available_languages
            if lang in versions and versions[lang].approved),
    }

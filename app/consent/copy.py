"""A participant's copy of what they signed, as PDF (fpdf2).

Text is set in DejaVu Sans (matplotlib ships it: Latin, Greek, Cyrillic). Characters it lacks,
Chinese above all (a document in zh-CN, a signature typed as 张伟 on any page), come from Noto
Sans CJK SC, from Debian's fonts-noto-cjk, embedded as a TrueType subset (see cjk_font); it is
loaded only when the copy needs it, and its absence is a clear error naming the package rather
than a copy with the name left out.

The copy carries the ethics approval reference of the version, the status of its language
version (approved original, approved translation, study translation) and which language versions
the committee approved, as the study file said when the record was made.
"""

from __future__ import annotations

import logging
import tempfile
from functools import lru_cache
from pathlib import Path

import matplotlib
from fontTools.ttLib import TTFont
from fpdf import FPDF, TextStyle

from app.consent.cjk_font import truetype_subset
from app.consent.document import render_markdown_for_pdf
from app.consent.models import ConsentRecordPublic, LanguageStatus
from app.core.errors import AppError
from app.i18n import LANGUAGE_NAMES, Translator

_DEJAVU_DIR = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
_DEJAVU_STYLES = {"": "DejaVuSans.ttf", "B": "DejaVuSans-Bold.ttf",
                  "I": "DejaVuSans-Oblique.ttf", "BI": "DejaVuSans-BoldOblique.ttf"}
CJK_PACKAGE = "fonts-noto-cjk"
CJK_FONT_DIR = Path("/usr/share/fonts/opentype/noto")
CJK_COLLECTION = "NotoSansCJK-Regular.ttc"
_CJK_FACE_SC = 2  # in the .ttc collections: JP, KR, SC, TC, HK, then the Mono faces
log = logging.getLogger("wellpanel.consent")
# a document, not a web page: headings in black, a little larger than the text
_TAG_STYLES = {
    "h1": TextStyle(font_size_pt=15, font_style="B", color="#000000", t_margin=4, b_margin=2),
    "h2": TextStyle(font_size_pt=12, font_style="B", color="#000000", t_margin=5, b_margin=1),
    "h3": TextStyle(font_size_pt=11, font_style="B", color="#000000", t_margin=4, b_margin=1),
}


class ConsentCopyUnavailable(AppError):
    """The server cannot make the copy (an installation problem, not the participant's)."""

    status_code = 503
    code = "consent_copy_unavailable"


def consent_pdf(record: ConsentRecordPublic, body_md: str, statements: list[str],
                t: Translator, *, cjk_font_dir: Path | None = None) -> bytes:
    header = _status_lines(record, t)
    lines = _record_lines(record, statements, t)
    text = "\n".join([t("copy.title"), t("copy.record_heading"), body_md, *header, *lines])
    with tempfile.TemporaryDirectory(prefix="wellpanel-copy-") as fonts:
        return _layout(record, body_md, header, lines, t,
                       _fonts(text, cjk_font_dir or CJK_FONT_DIR, Path(fonts)))


def _layout(record: ConsentRecordPublic, body_md: str, header: list[str], lines: list[str],
            t: Translator, cjk_font: Path | None) -> bytes:
    pdf = FPDF(format="A4")
    pdf.set_title(t("copy.title"))
    if record.approval_ref:
        pdf.set_subject(f"{t('consent_doc.approval')}: {record.approval_ref}")
    for style, name in _DEJAVU_STYLES.items():
        pdf.add_font("DejaVu", style, str(_DEJAVU_DIR / name))
    if cjk_font is not None:
        pdf.add_font("NotoSansCJK", "", str(cjk_font))
        # bold and italic CJK text falls back to this one upright weight
        pdf.set_fallback_fonts(["NotoSansCJK"], exact_match=False)
    pdf.add_page()
    pdf.set_font("DejaVu", "B", 13)
    pdf.multi_cell(0, 7, t("copy.title"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("DejaVu", size=9)
    for line in header:
        pdf.multi_cell(0, 5, line, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    pdf.set_font("DejaVu", size=10)
    pdf.write_html(render_markdown_for_pdf(body_md), font_family="DejaVu", tag_styles=_TAG_STYLES)
    pdf.ln(6)
    pdf.set_x(pdf.l_margin)
    pdf.set_font("DejaVu", "B", 11)
    pdf.multi_cell(0, 6, t("copy.record_heading"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("DejaVu", size=10)
    for line in lines:
        pdf.multi_cell(0, 5, line, new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def _fonts(text: str, cjk_font_dir: Path, workdir: Path) -> Path | None:
    """The CJK font file for the characters DejaVu lacks, or None if there are none."""
    covered = _dejavu_codepoints()
    needed = "".join(sorted(c for c in set(text) if ord(c) not in covered and not c.isspace()))
    if not needed:
        return None
    collection = cjk_font_dir / CJK_COLLECTION
    if not collection.is_file():
        message = (f"The PDF copy needs a CJK font that is not installed ({collection}); "
                   f"install the Debian package {CJK_PACKAGE} (apt-get install {CJK_PACKAGE}).")
        log.error(message)  # the operator's problem: the participant only sees that it failed
        raise ConsentCopyUnavailable(message, details={"package": CJK_PACKAGE,
                                                       "missing": str(collection)})
    font = workdir / "NotoSansCJKsc-subset.ttf"
    font.write_bytes(truetype_subset(collection, _CJK_FACE_SC, needed))
    return font


@lru_cache(maxsize=1)
def _dejavu_codepoints() -> frozenset[int]:
    return frozenset(TTFont(str(_DEJAVU_DIR / _DEJAVU_STYLES[""])).getBestCmap())


def _status_lines(record: ConsentRecordPublic, t: Translator) -> list[str]:
    """Approval reference, this language version's status, the approved language versions."""
    lines = []
    if record.approval_ref:
        lines.append(f"{t('consent_doc.approval')}: {record.approval_ref}")
    status = record.language_versions.get(record.language)
    name = LANGUAGE_NAMES.get(record.language, record.language)
    lines.append(f"{t('consent_doc.language_version')}: {name}"
                 + (f" ({t('consent_doc.short_' + status.kind)})" if status else ""))
    approved = _approved_names(record.language_versions)
    if approved:
        lines.append(f"{t('consent_doc.approved_languages')}: {approved}")
    return lines


def _approved_names(versions: dict[str, LanguageStatus]) -> str:
    return ", ".join(LANGUAGE_NAMES.get(lang, lang) for lang, status in versions.items()
                     if status.approved)


def _record_lines(record: ConsentRecordPublic, statements: list[str], t: Translator) -> list[str]:
    lines = [
        f"{t('copy.study')}: {record.study}",
        f"{t('copy.version')}: {record.version} ({record.language})",
        f"{t('copy.decision')}: {t('copy.decision_' + record.decision)}",
        f"{t('copy.signed_at')}: {record.decided_at.isoformat(timespec='seconds')}",
    ]
    if record.signature_name:
        lines.append(f"{t('copy.signature')}: {record.signature_name}")
        lines.append(f"{t('copy.signature_meaning')}: {record.signature_meaning}")
    lines += [f"[x] {s}" for s in statements]
    lines += [
        f"{t('copy.identity')}: {t('copy.identity_' + record.identity_method)}",
        f"{t('copy.document_hash')}: {record.document_sha256}",
    ]
    return lines

"""A participant's copy of what they signed, as PDF (fpdf2; DejaVu from matplotlib's fonts)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
from fpdf import FPDF

from app.consent.models import ConsentRecordPublic
from app.consent.service import render_markdown
from app.i18n import Translator

_FONT_DIR = Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def consent_pdf(record: ConsentRecordPublic, body_md: str, statements: list[str],
                t: Translator) -> bytes:
    pdf = FPDF(format="A4")
    pdf.set_title(t("copy.title"))
    pdf.add_font("DejaVu", "", str(_FONT_DIR / "DejaVuSans.ttf"))
    pdf.add_font("DejaVu", "B", str(_FONT_DIR / "DejaVuSans-Bold.ttf"))
    pdf.add_font("DejaVu", "I", str(_FONT_DIR / "DejaVuSans-Oblique.ttf"))
    pdf.add_font("DejaVu", "BI", str(_FONT_DIR / "DejaVuSans-BoldOblique.ttf"))
    pdf.add_page()
    pdf.set_font("DejaVu", size=10)
    pdf.write_html(render_markdown(body_md))
    pdf.ln(6)
    pdf.set_x(pdf.l_margin)
    pdf.set_font("DejaVu", "B", 11)
    pdf.multi_cell(0, 6, t("copy.record_heading"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("DejaVu", size=10)
    for line in _record_lines(record, statements, t):
        pdf.multi_cell(0, 5, line, new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


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

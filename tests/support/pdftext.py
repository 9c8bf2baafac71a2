"""Text of a PDF as pypdf reads it, for checking what a participant's copy says."""

from __future__ import annotations

import io

from pypdf import PdfReader
from pypdf.generic import ContentStream


def pdf_text(content: bytes) -> str:
    """Every page's text, whitespace collapsed to single spaces."""
    reader = PdfReader(io.BytesIO(content))
    return " ".join(" ".join(page.extract_text() for page in reader.pages).split())


def shows_without_font(content: bytes) -> list[tuple[int, str]]:
    """(page, operator) of every text-showing operator with no font selected.

    fpdf2's write_html can lose the font across a page break (inside q ... Q) and print a line
    with none; viewers then drop or garble it (poppler: "No font in show")."""
    reader = PdfReader(io.BytesIO(content))
    found = []
    for number, page in enumerate(reader.pages, start=1):
        stack: list[object] = []
        font: object = None
        for operands, operator in ContentStream(page.get_contents(), reader).operations:
            if operator == b"q":
                stack.append(font)
            elif operator == b"Q":
                font = stack.pop() if stack else None
            elif operator == b"Tf":
                font = operands[0]
            elif operator in (b"Tj", b"TJ", b"'", b'"') and font is None:
                found.append((number, operator.decode()))
    return found

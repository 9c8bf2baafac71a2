"""The HTML part of a participant message, built from the same locale text as the plain part.

The plain text stays the source: paragraphs (blank-line separated) become <p>, line breaks <br>,
and every http(s) address in it a link, so both parts carry the same words and the same links
in the participant's language. Jinja2 autoescapes everything (study titles and payload values
are data); the layout is one column with inline styles (mail clients drop <style> blocks), no
images, no remote resources, no tracking.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

_ENV = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                   autoescape=True, undefined=StrictUndefined, trim_blocks=True,
                   lstrip_blocks=True)
# Our links are base_url + path + token: no spaces, no quotes or angle brackets.
_URL = re.compile(r"https?://[^\s<>\"']+")
_TRAILING = ".,;:!?)）。，"  # sentence punctuation after a link is not part of it


@dataclass(frozen=True)
class Piece:
    text: str = ""
    href: str | None = None


@dataclass(frozen=True)
class Paragraph:
    lines: tuple[tuple[Piece, ...], ...] = ()
    action: str | None = None  # a paragraph that is a link alone: the message's main action
    small: bool = False  # the footer lines (help, unsubscribe)


def links_in(text: str) -> list[str]:
    """The http(s) addresses in a text, in order (what both parts must carry)."""
    return [_strip_trailing(m.group(0))[0] for m in _URL.finditer(text)]


def _strip_trailing(url: str) -> tuple[str, str]:
    kept = url.rstrip(_TRAILING)
    return kept, url[len(kept):]


def _pieces(line: str) -> tuple[Piece, ...]:
    pieces: list[Piece] = []
    position = 0
    for match in _URL.finditer(line):
        url, tail = _strip_trailing(match.group(0))
        if match.start() > position:
            pieces.append(Piece(text=line[position:match.start()]))
        pieces.append(Piece(href=url))
        if tail:
            pieces.append(Piece(text=tail))
        position = match.end()
    if position < len(line):
        pieces.append(Piece(text=line[position:]))
    return tuple(pieces)


def paragraphs(text: str, *, small: bool = False) -> list[Paragraph]:
    out: list[Paragraph] = []
    for block in re.split(r"\n\s*\n", text.strip()):
        lines = [line.strip() for line in block.splitlines() if line.strip()]
        if not lines:
            continue
        if len(lines) == 1 and _URL.fullmatch(lines[0]):
            out.append(Paragraph(action=lines[0], small=small))
            continue
        out.append(Paragraph(lines=tuple(_pieces(line) for line in lines), small=small))
    return out


def render_html(body: str, footer: str, *, subject: str, language: str) -> str:
    """The HTML part: `body` (the message's own text) and `footer` (help and unsubscribe
    lines, shown smaller), both exactly the plain part's text."""
    return _ENV.get_template("message.html").render(
        lang=language, subject=subject,
        paragraphs=[*paragraphs(body), *paragraphs(footer, small=True)])

"""Consent documents: Markdown rendering, and the sections that required elements map to.

A section is a heading with an id given as a block attribute on the line above it::

    {#controller}
    ## Who is responsible for your data

The id is the same in every language, so a study file can say which section holds each
required element of consent and `study load` can check every language's document for it.
"""

from __future__ import annotations

from dataclasses import dataclass

from markdown_it import MarkdownIt
from markdown_it.token import Token
from mdit_py_plugins.attrs import attrs_block_plugin

from app.core import urls

# Raw HTML is not rendered even though consent text is trusted study material, and block
# attributes may only set an id (no style, no event handlers).
_markdown = MarkdownIt("commonmark", {"html": False}).use(attrs_block_plugin, allowed=("id",))


def allowed_link(href: str) -> bool:
    """A link a consent document may hold: https:, http: or tel: (app/core/urls.py), or a
    place on this site or in the document (/help, #rights)."""
    return (urls.is_safe_link(href) or href.startswith("#")
            or (href.startswith("/") and not href.startswith(("//", "/\\"))))


# Any other link is rendered as plain text (study load refuses it first: link_problems).
_markdown.validateLink = allowed_link  # type: ignore[method-assign]
_every_link = MarkdownIt("commonmark", {"html": False})
_every_link.validateLink = lambda href: True  # type: ignore[method-assign]


def links(text: str) -> list[str]:
    """Every link and image address the document holds, allowed or not."""
    found: list[str] = []
    for block in _every_link.parse(text):
        for token in block.children or []:
            if token.type in ("link_open", "image"):
                found.append(str(token.attrGet("href") or token.attrGet("src") or ""))
    return found


def render_markdown(text: str) -> str:
    return _markdown.render(text)


# fpdf2's HTML reader sets lines at 1.0 of the font size; Chinese glyphs need more room.
_PDF_LINE_HEIGHT = {"paragraph_open": "1.45", "bullet_list_open": "1.45",
                    "ordered_list_open": "1.45"}


def render_markdown_for_pdf(text: str) -> str:
    """The same HTML, with line heights fpdf2's write_html reads (an attribute it honours)."""
    tokens = _markdown.parse(text)
    for token in tokens:
        if token.type in _PDF_LINE_HEIGHT:
            token.attrSet("line-height", _PDF_LINE_HEIGHT[token.type])
    return str(_markdown.renderer.render(tokens, _markdown.options, {}))


@dataclass(frozen=True)
class Section:
    id: str
    heading: str
    text: str  # the section's own text, headings of subsections included, whitespace-collapsed


def sections(text: str) -> dict[str, Section]:
    """The document's sections by id: each heading with an id, up to the next heading of the
    same or a higher level. An id used twice keeps its first section."""
    tokens = _markdown.parse(text)
    found: dict[str, Section] = {}
    for start, token in enumerate(tokens):
        section_id = token.attrGet("id") if token.type == "heading_open" else None
        if not isinstance(section_id, str) or section_id in found:
            continue
        end = _section_end(tokens, start)
        found[section_id] = Section(section_id, _inline_text(tokens[start + 1:start + 2]),
                                    _inline_text(tokens[start + 3:end]))
    return found


def duplicate_ids(text: str) -> list[str]:
    ids = [t.attrGet("id") for t in _markdown.parse(text) if t.type == "heading_open"]
    return sorted({str(i) for i in ids if i is not None and ids.count(i) > 1})


def _section_end(tokens: list[Token], start: int) -> int:
    level = int(tokens[start].tag[1])
    for index in range(start + 1, len(tokens)):
        token = tokens[index]
        if token.type == "heading_open" and int(token.tag[1]) <= level:
            return index
    return len(tokens)


def _inline_text(tokens: list[Token]) -> str:
    words = " ".join(t.content for t in tokens if t.type == "inline")
    return " ".join(words.split())

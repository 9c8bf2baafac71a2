"""Page checks for the browser tests: axe-core (vendored), sideways scrolling, English leaks.

axe-core runs inside the page, so it sees what a screen reader would get from the real DOM
(after CSS and JavaScript). Only serious and critical violations fail a test; moderate and minor
ones are reported by axe's own tooling and fixed as they come.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from playwright.sync_api import Page

from app import i18n

AXE_VERSION = "4.14.1"
AXE_SCRIPT = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
FAILING_IMPACTS = ("serious", "critical")
# Words that are the same in every language or are names: never counted as an English leak.
NOT_A_LEAK = re.compile(r"^(wellpanel|GPT-4o|ChatGPT|OK|PDF|CSV|JSON|SHA-256|UTC)$")


def axe_violations(page: Page) -> list[str]:
    """Serious and critical axe-core violations on the page, one readable line each."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        # run by the driver, not added as an inline <script>, which the pages' CSP refuses
        page.evaluate(_axe_source())
    result = page.evaluate("""async () => {
        const r = await axe.run(document, {resultTypes: ['violations']});
        return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
            nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5)}));
    }""")
    return [f"{v['impact']} {v['id']}: {v['help']} at {', '.join(v['nodes'])}"
            for v in result if v["impact"] in FAILING_IMPACTS]


@cache
def _axe_source() -> str:
    return AXE_SCRIPT.read_text("utf-8")


def csp_violations(page: Page) -> list[str]:
    """What the browser refused under the pages' Content-Security-Policy (it logs each refusal
    as a console error: an inline script or handler, a style attribute, a foreign source)."""
    return sorted({m.text for m in page.console_messages()
                   if "Content Security Policy" in m.text})


def sideways_overflow(page: Page) -> int:
    """How many CSS pixels the page is wider than the viewport (0: no sideways scrolling)."""
    return page.evaluate(
        "Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)"
        " - window.innerWidth")


def widest_elements(page: Page, limit: int = 3) -> list[str]:
    """The innermost elements reaching past the viewport's right edge (to say what to fix)."""
    return page.evaluate("""(limit) => {
        const out = [];
        for (const el of document.body.querySelectorAll('*')) {
            const r = el.getBoundingClientRect();
            if (r.right <= window.innerWidth + 0.5 || r.width === 0) continue;
            const edge = window.innerWidth + 0.5;
            if ([...el.children].some(c => c.getBoundingClientRect().right > edge)) continue;
            const name = el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') +
                (el.className && typeof el.className === 'string'
                    ? '.' + el.className.trim().split(/\\s+/).join('.') : '');
            out.push(name + ' "' + (el.textContent || '').trim().slice(0, 40) + '"');
            if (out.length >= limit) break;
        }
        return out;
    }""", limit)


@cache
def _english_only_texts(language: str) -> tuple[str, ...]:
    """English UI texts that the language translates differently (so their appearance on a page
    in that language is a leak), longest first; short words are too ambiguous to judge."""
    english, local = i18n.catalog("en"), i18n.catalog(language)
    texts = set()
    for key, text in english.items():
        if key.startswith(("email.", "staff.")) or local.get(key, text) == text:
            continue
        for line in text.splitlines():
            line = line.strip()
            if "{" in line or len(line.split()) < 3 or NOT_A_LEAK.match(line):
                continue
            texts.add(line)
    return tuple(sorted(texts, key=len, reverse=True))


def english_leaks(page: Page, language: str) -> list[str]:
    """English interface sentences visible on a page meant to be in `language`."""
    if language == "en":
        return []
    # Text marked as another language (a document the person chose to read in English, a
    # language's own name in the switch) is not a leak.
    shown = page.evaluate("""(lang) => {
        const copy = document.body.cloneNode(true);
        copy.querySelectorAll('[lang]').forEach(el => {
            if (el.getAttribute('lang') !== lang) el.remove();
        });
        document.body.appendChild(copy);  // innerText needs the copy laid out
        copy.hidden = false;
        const text = copy.innerText;
        copy.remove();
        return text;
    }""", language)
    return [text for text in _english_only_texts(language) if text in shown]


def check_page(page: Page, language: str) -> list[str]:
    """Everything wrong with the page as a list of problems (empty when it passes)."""
    problems = axe_violations(page) + csp_violations(page)
    overflow = sideways_overflow(page)
    if overflow > 0:
        width = page.viewport_size["width"] if page.viewport_size else "?"
        problems.append(f"the page scrolls sideways by {overflow} px at {width} px, past the "
                        f"edge: {'; '.join(widest_elements(page))}")
    problems += [f"English text on a {language} page: {text!r}"
                 for text in english_leaks(page, language)]
    return [f"{page.url}: {p}" for p in problems]

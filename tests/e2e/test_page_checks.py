"""The page checks themselves (tests/e2e/a11y.py) catch what they are for, so a browser test
that passes them is not passing vacuously."""

from __future__ import annotations

import pytest

from app import i18n
from tests.e2e.a11y import check_page

pytestmark = pytest.mark.browser


def _page(browser, html: str):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.set_content(html)
    return context, page


def test_the_checks_catch_english_overflow_and_axe_violations(browser):
    english = i18n.catalog("en")["withdrawn.body"]
    german = i18n.catalog("de")["withdrawn.body"]
    context, page = _page(browser, f"""<!doctype html><html lang="de"><head><title>t</title>
        </head><body><main><h1>Test</h1><p>{german}</p><p>{english}</p>
        <img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=">
        <div style="width:600px">breit</div></main></body></html>""")
    problems = "\n".join(check_page(page, "de"))
    context.close()
    assert "English text on a de page" in problems and english in problems
    assert "scrolls sideways by 2" in problems  # 600 px in a 390 px window, less scrollbar
    assert "critical image-alt" in problems


def test_text_marked_as_another_language_is_not_a_leak(browser):
    english = i18n.catalog("en")["withdrawn.body"]
    context, page = _page(browser, f"""<!doctype html><html lang="de"><head><title>t</title>
        </head><body><main><h1>Test</h1><article lang="en"><p>{english}</p></article>
        </main></body></html>""")
    problems = check_page(page, "de")
    context.close()
    assert problems == []

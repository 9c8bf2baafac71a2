"""Steps a participant takes in the browser, shared by the browser tests."""

from __future__ import annotations

from playwright.sync_api import Page, expect

FILL_ROUNDS = 3  # answering may reveal follow-up questions


def fill_visible(page: Page) -> None:
    """Answer every visible question: first option, ticked box, smallest number."""
    for _ in range(FILL_ROUNDS):
        for item in page.locator(".item:not([hidden])").all():
            radios = item.locator("input[type=radio]")
            boxes = item.locator("input[type=checkbox]")
            numbers = item.locator("input[type=number]")
            if radios.count() and not item.locator("input[type=radio]:checked").count():
                radios.first.check()
            elif boxes.count() and not item.locator("input[type=checkbox]:checked").count():
                boxes.first.check()
            elif numbers.count() and not numbers.first.input_value():
                numbers.first.fill(numbers.first.get_attribute("min") or "1")


def answer_join_form(page: Page, url: str, lang: str, email: str) -> None:
    """Open the join page in `lang` and fill it in as an eligible person (not yet sent)."""
    page.goto(f"{url}/join?lang={lang}")
    page.check("input[name=screening_adult][value=yes]")
    page.check("input[name=screening_uses_ai_chat][value=yes]")
    page.fill("#email", email)


def join_in_browser(page: Page, url: str, lang: str, email: str) -> None:
    """Sign up through the join page; ends on the 'check your email' page."""
    answer_join_form(page, url, lang, email)
    page.click("main button[type=submit]")  # not a header button (language, sign-out)
    expect(page.locator("#check-email")).to_be_visible()

"""Participant mail as inboxes expect it (#15 part 4): plain text and HTML (multipart/
alternative) in the participant's language, UTF-8, Content-Language, the same words and links in
both parts, an accessible one-column layout without images, remote resources or tracking.
Checked on the messages the real local SMTP server received, for every language."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from sqlmodel import Session

from app.config import SUPPORTED_LANGUAGES
from app.i18n import translator
from app.notify.html import links_in, render_html
from app.participants.models import Participant
from app.scheduling.dispatcher import tick
from tests.support.factory import consented_participants
from tests.support.flows import enroll
from tests.support.smtp import Received


class _Page(HTMLParser):
    """What a reader of the HTML part sees (text, links) and what it would load."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.hrefs: list[str] = []
        self.tags: list[str] = []
        self.sources: list[str] = []
        self.html_lang: str | None = None
        self._skip = 0

    def handle_starttag(self, tag, attrs):  # type: ignore[no-untyped-def]
        self.tags.append(tag)
        values = dict(attrs)
        if tag == "html":
            self.html_lang = values.get("lang")
        if tag == "a":
            self.hrefs.append(values.get("href") or "")
        if tag in ("head", "title"):
            self._skip += 1
        self.sources += [v or "" for k, v in attrs if k in ("src", "srcset", "background")]

    def handle_endtag(self, tag):  # type: ignore[no-untyped-def]
        if tag in ("head", "title"):
            self._skip -= 1

    def handle_data(self, data):  # type: ignore[no-untyped-def]
        if not self._skip:
            self.text.append(data)


def _words(text: str) -> str:
    return " ".join(text.split())


def check_parts(received: Received, language: str) -> tuple[str, _Page]:
    """Both parts present and agreeing; returns the plain text and the parsed HTML."""
    message = received.message
    assert message["Content-Language"] == language
    assert message["Message-ID"] and message["Date"]
    alternative = next(p for p in message.walk()
                       if p.get_content_type() == "multipart/alternative")
    kinds = [p.get_content_type() for p in alternative.iter_parts()]
    assert kinds == ["text/plain", "text/html"]  # the richer part last, as RFC 2046 asks
    plain_part, html_part = alternative.iter_parts()
    assert plain_part.get_content_charset() == "utf-8"
    assert html_part.get_content_charset() == "utf-8"
    plain, html = plain_part.get_content(), html_part.get_content()
    page = _Page()
    page.feed(html)
    assert page.html_lang == language
    assert _words("".join(page.text)) == _words(plain)  # the same words, nothing added
    assert page.hrefs == links_in(plain) and page.hrefs  # every link in both parts
    assert "img" not in page.tags and "script" not in page.tags and page.sources == []
    assert not re.search(r"url\(|@import|<link\b", html)  # nothing loaded from anywhere
    return plain, page


def _english_sentences(kind: str) -> list[str]:
    """The English text's longer lines without placeholders: none may show in a translation."""
    body = translator("en")(f"email.{kind}.body", study="", link="", closes_at="")
    return [line.strip() for line in body.splitlines() if len(line.strip()) > 25]


@pytest.mark.parametrize("language", SUPPORTED_LANGUAGES)
def test_sign_in_link_in_both_parts_in_the_participants_language(client, smtp, backend,
                                                                 language):  # type: ignore[no-untyped-def]
    address = f"format-{backend}-{language.lower()}@example.org"
    enroll(client, address, language=language)
    [received] = smtp.wait_for(address)
    plain, page = check_parts(received, language)
    t = translator(language)
    assert received.link() in page.hrefs  # the magic link, also in the HTML part
    assert f"/help?lang={language}" in " ".join(page.hrefs)
    assert t("help.email_footer", url="").strip() in plain
    if language != "en":
        english = _english_sentences("magic_link")
        assert english and not any(s in plain for s in english)


@pytest.mark.parametrize("language", SUPPORTED_LANGUAGES)
def test_invitation_in_both_parts_in_the_participants_language(app, smtp, session, clock,
                                                               core_study, backend, language):  # type: ignore[no-untyped-def]
    prefix = f"invfmt-{backend}-{language.lower()}-"
    person = consented_participants(session, 1, now=clock(), prefix=prefix)[0]
    with Session(app.state.engine) as s:
        row = s.get(Participant, person.id)
        assert row is not None
        row.language = language
        s.add(row)
        s.commit()
    tick(app.state.engine, app.state.settings, app.state.channel, now=clock())
    clock.advance(days=1)
    tick(app.state.engine, app.state.settings, app.state.channel, now=clock())
    [received] = smtp.to(f"{prefix}0@example.org")
    plain, page = check_parts(received, language)
    assert any("/p/login/" in href for href in page.hrefs)
    if language != "en":
        english = _english_sentences("invitation")
        assert english and not any(s in plain for s in english)


def test_html_part_escapes_text_and_keeps_links_whole() -> None:
    body = ('Hello <b>"you"</b> & welcome to <script>x()</script>.\n\n'
            "http://testserver/p/login/abc-DEF_1\n\nSee http://testserver/help?lang=en&x=1.")
    html = render_html(body, "Footer http://testserver/help?lang=en",
                       subject="Sub <i>", language="en")
    assert "<b>" not in html and "<script>" not in html and "<i>" not in html
    assert "&lt;b&gt;&#34;you&#34;&lt;/b&gt; &amp; welcome" in html
    page = _Page()
    page.feed(html)
    assert page.hrefs == ["http://testserver/p/login/abc-DEF_1",
                          "http://testserver/help?lang=en&x=1",  # the full stop stays text
                          "http://testserver/help?lang=en"]
    assert page.hrefs == links_in(body + "\n" + "Footer http://testserver/help?lang=en")

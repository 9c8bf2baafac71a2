"""A participant in a browser-like TestClient: joined through the pages in a language, signed in
with the emailed link (and, by default, consented)."""

from __future__ import annotations

import re
import uuid

from fastapi.testclient import TestClient

from tests.support.flows import STATEMENTS, STUDY
from tests.support.smtp import SMTPServer


def fresh_address(name: str) -> str:
    """A new address each time: the SMTP sink lives for the whole run, across both databases."""
    return f"{name}-{uuid.uuid4().hex[:8]}@example.org"


CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]*)"')


def csrf_of(page) -> str:  # type: ignore[no-untyped-def]
    """The CSRF token of a page's forms (a response or its HTML), as a browser sends it: tokens
    are bound to the session (or pre-session id), so take it from a page of the same session."""
    match = CSRF_FIELD.search(page if isinstance(page, str) else page.text)
    assert match and match.group(1), "no CSRF token on the page"
    return match.group(1)


def join_form(web: TestClient, email: str, lang: str | None = None, **fields: str):  # type: ignore[no-untyped-def]
    """Post the join form as a browser would (the CSRF token from the page just opened)."""
    page = web.get(f"/join/{STUDY}" + (f"?lang={lang}" if lang else ""))
    assert page.status_code == 200, page.text[:300]
    data = {"csrf_token": csrf_of(page), "email": email, "timezone": "Europe/Berlin",
            "screening_adult": "yes", "screening_uses_ai_chat": "yes"}
    if lang:
        data["lang"] = lang
    return web.post(f"/join/{STUDY}", data=data | fields)


def signed_in_browser(app, smtp: SMTPServer, lang: str, *, consented: bool = True,  # type: ignore[no-untyped-def]
                      email: str | None = None) -> TestClient:
    web = TestClient(app)
    email = email or fresh_address(f"page-{lang.lower()}")
    joined = join_form(web, email, lang)
    assert joined.status_code == 200, joined.text[:300]
    link = smtp.wait_for(email)[-1].link().replace("http://testserver", "")
    assert web.get(link, follow_redirects=False).status_code == 303
    if consented:
        version = web.get("/api/v1/me").json()["consent_current_version"]
        signed = web.post("/p/consent", data={
            "csrf_token": csrf_of(web.get("/p/consent")), "version": version, "language": "en",
            "decision": "consent", "signature_name": "Page Tester", "statements": STATEMENTS},
            follow_redirects=False)
        assert signed.status_code == 303, signed.text[:300]
    return web

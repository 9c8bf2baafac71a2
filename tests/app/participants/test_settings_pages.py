"""The participant settings page in the browser (plain HTML forms with CSRF, no JavaScript)."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from sqlmodel import select

from app.audit.models import AuditEvent
from app.participants.models import Contact, Participant
from tests.support.flows import CONSENT_VERSION, STATEMENTS


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF field on the page"
    return match.group(1)


def _browser_participant(app, smtp, email: str) -> TestClient:  # type: ignore[no-untyped-def]
    """A browser that joined, opened the emailed link and signed consent."""
    web = TestClient(app)
    page = web.get("/join/keep4o-panel?lang=en")
    web.post("/join/keep4o-panel?lang=en", data={
        "csrf_token": _csrf(page.text), "lang": "en", "email": email,
        "timezone": "Europe/Berlin", "screening_adult": "yes", "screening_uses_ai_chat": "yes"})
    consent_page = web.get(smtp.to(email)[-1].link().replace("http://testserver", ""),
                           follow_redirects=True)
    signed = web.post("/p/consent", data={
        "csrf_token": _csrf(consent_page.text), "version": CONSENT_VERSION, "language": "en",
        "decision": "consent", "signature_name": "Page Tester", "statements": STATEMENTS},
        follow_redirects=True)
    assert signed.status_code == 200
    return web


def test_settings_page_pause_time_zone_and_language(app, smtp, session):
    smtp.clear()
    web = _browser_participant(app, smtp, "pages@example.org")
    home = web.get("/p")
    assert 'href="/p/settings"' in home.text
    page = web.get("/p/settings")
    assert page.status_code == 200 and 'id="upcoming"' in page.text
    # Babel (CLDR) puts a narrow no-break space before AM/PM
    assert "opens Nov 16, 2026, 6:00\u202fPM (Europe/Berlin)" in page.text  # first biweekly
    token = _csrf(page.text)

    assert web.post("/p/settings/pause", data={"action": "pause"}).status_code == 403  # no CSRF
    paused = web.post("/p/settings/pause", data={"csrf_token": token, "action": "pause"},
                      follow_redirects=True)
    assert 'id="settings-done"' in paused.text and 'value="resume"' in paused.text
    resumed = web.post("/p/settings/pause", data={"csrf_token": token, "action": "resume"},
                       follow_redirects=True)
    assert 'value="pause"' in resumed.text

    bad = web.post("/p/settings/preferences",
                   data={"csrf_token": token, "timezone": "Moon/Base", "language": "en"})
    assert bad.status_code == 422 and "Please choose a time zone from the list." in bad.text
    moved = web.post("/p/settings/preferences",
                     data={"csrf_token": token, "timezone": "Asia/Tokyo", "language": "de"},
                     follow_redirects=True)
    assert moved.status_code == 200 and '<html lang="de">' in moved.text
    assert "Ihre Einstellungen wurden gespeichert." in moved.text
    assert "16. Nov. 2026, 18:00 (Asia/Tokyo)" in moved.text  # German date, local wall time

    session.rollback()
    participant = session.exec(select(Participant)).one()
    assert (participant.status, participant.timezone, participant.language) == (
        "active", "Asia/Tokyo", "de")
    actions = [e.action for e in session.exec(select(AuditEvent)).all()]
    assert actions.count("participant.pause") == 1 and actions.count("participant.resume") == 1
    assert actions.count("participant.settings") == 1


def test_email_change_in_the_browser_and_only_for_its_owner(app, smtp, session):
    smtp.clear()
    web = _browser_participant(app, smtp, "browser-old@example.org")
    stranger = _browser_participant(app, smtp, "stranger@example.org")
    token = _csrf(web.get("/p/settings").text)
    invalid = web.post("/p/settings/email", data={"csrf_token": token, "email": "nope"})
    assert invalid.status_code == 422 and "valid email address" in invalid.text
    free = web.post("/p/settings/email",
                    data={"csrf_token": token, "email": "browser-new@example.org"},
                    follow_redirects=False)
    taken = web.post("/p/settings/email",
                     data={"csrf_token": token, "email": "stranger@example.org"},
                     follow_redirects=False)
    assert (free.status_code, free.headers["location"]) == (
        taken.status_code, taken.headers["location"])  # the same either way
    link = re.search(r"http://testserver(/p/email/confirm/\S+)",
                     smtp.to("browser-new@example.org")[-1].body)
    assert link
    path = link.group(1)

    other = stranger.get(path)  # someone else's browser cannot use the link
    denied = stranger.post(path, data={"csrf_token": _csrf(other.text)})
    assert denied.status_code == 404 and 'id="email-error"' in denied.text
    assert TestClient(app).get(path).status_code == 401  # not signed in at all

    confirm = web.get(path)
    assert confirm.status_code == 200 and "Use the new address" in confirm.text
    assert web.post(path, data={}).status_code == 403  # CSRF
    done = web.post(path, data={"csrf_token": _csrf(confirm.text)})
    assert done.status_code == 200 and 'id="email-changed"' in done.text
    again = web.post(path, data={"csrf_token": _csrf(confirm.text)})
    assert again.status_code == 409 and "already confirmed" in again.text
    session.rollback()
    emails = sorted(c.email for c in session.exec(select(Contact)).all())
    assert emails == ["browser-new@example.org", "stranger@example.org"]


def test_settings_pages_need_a_session_and_consent(app, smtp):
    smtp.clear()
    assert TestClient(app).get("/p/settings").status_code == 401
    web = TestClient(app)
    page = web.get("/join/keep4o-panel?lang=en")
    web.post("/join/keep4o-panel?lang=en", data={
        "csrf_token": _csrf(page.text), "lang": "en", "email": "unsigned@example.org",
        "timezone": "UTC", "screening_adult": "yes", "screening_uses_ai_chat": "yes"})
    web.get(smtp.to("unsigned@example.org")[-1].link().replace("http://testserver", ""))
    gated = web.get("/p/settings", follow_redirects=False)
    assert gated.status_code == 303 and gated.headers["location"] == "/p/consent"

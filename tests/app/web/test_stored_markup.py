"""Text a participant typed is shown as text, never as markup (ASVS 5.3.3): a signature typed
as a script tag is escaped on the consent-copy page (staff pages never show the name)."""

from __future__ import annotations

from tests.support.flows import STATEMENTS
from tests.support.pages import csrf_of, signed_in_browser

SCRIPT = "<script>alert('x')</script> O'Hara"


def test_a_typed_script_is_shown_as_text_on_the_consent_copy(app, smtp):
    web = signed_in_browser(app, smtp, "en", consented=False)
    version = web.get("/api/v1/me").json()["consent_current_version"]
    signed = web.post("/p/consent", data={
        "csrf_token": csrf_of(web.get("/p/consent")), "version": version, "language": "en",
        "decision": "consent", "signature_name": SCRIPT, "statements": STATEMENTS},
        follow_redirects=False)
    assert signed.status_code == 303, signed.text[:300]
    copy = web.get(signed.headers["location"])
    assert copy.status_code == 200
    assert "<script>alert" not in copy.text
    assert "&lt;script&gt;alert(" in copy.text  # shown, as text

    assert "O&#39;Hara" in copy.text or "O'Hara" in copy.text  # the apostrophe kept

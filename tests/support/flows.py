"""Steps of a participant's journey through the JSON API, for tests to build on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml
from fastapi.testclient import TestClient

from app.config import PROJECT_ROOT
from tests.support.smtp import SMTPServer

STUDY = "keep4o-panel"
ELIGIBLE = {"adult": True, "uses_ai_chat": True}
STATEMENTS = ["read_information", "voluntary", "data_use", "adult_confirmed"]
# the consent version new participants sign: the shipped study file's current one
_STUDY_FILE = PROJECT_ROOT / "surveys" / "studies" / f"{STUDY}.yaml"
CONSENT_VERSION: str = yaml.safe_load(_STUDY_FILE.read_text("utf-8"))["consent"]["current"]


@dataclass
class Person:
    """A participant as an API client: `token` is a session token, got by exchanging the
    emailed link (which is then used up; `fresh_link` asks for a new one)."""

    email: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def enroll(client: TestClient, email: str, *, language: str = "en",
           timezone: str = "Europe/Berlin", screening: dict[str, bool] | None = None
           ) -> dict[str, Any]:
    response = client.post(f"/api/v1/studies/{STUDY}/enrollments", json={
        "email": email, "language": language, "timezone": timezone,
        "screening": screening or ELIGIBLE})
    assert response.status_code == 202, response.text
    return response.json()


def join(client: TestClient, smtp: SMTPServer, email: str, **kwargs: Any) -> Person:
    """Enroll, pick the link out of the email the real SMTP server received and exchange it
    for a session token, as an API client does."""
    before = len(smtp.to(email))
    enroll(client, email, **kwargs)
    messages = smtp.wait_for(email, count=before + 1)  # a real server sends after answering
    assert len(messages) == before + 1, "expected exactly one new email"
    return Person(email, exchange(client, link_token(messages[-1].link())))


def link_token(link: str) -> str:
    return link.rsplit("/", 1)[1]


def exchange(client: TestClient, token: str) -> str:
    """Use an emailed link's token once; returns the session token."""
    response = client.post("/api/v1/session", json={"link": token})
    assert response.status_code == 201, response.text
    return response.json()["token"]


def fresh_link(client: TestClient, smtp: SMTPServer, person: Person | str) -> str:
    """A new, unused sign-in link token for a person or address (joining again with the same
    address sends one), e.g. to sign in with a browser; it replaces their older links."""
    email = person.email if isinstance(person, Person) else person
    before = len(smtp.to(email))
    response = client.post(f"/api/v1/studies/{STUDY}/enrollments", json={
        "email": email, "screening": ELIGIBLE})
    assert response.status_code == 202, response.text
    return link_token(smtp.wait_for(email, count=before + 1)[-1].link())


def sign_in_again(client: TestClient, smtp: SMTPServer, person: Person) -> Person:
    """Give the person a new session from a new link, e.g. after the test clock passed the end
    of their first one (sessions last `session_ttl_hours`)."""
    person.token = exchange(client, fresh_link(client, smtp, person))
    return person


def consent_body(**overrides: Any) -> dict[str, Any]:
    body = {"version": CONSENT_VERSION, "language": "en", "decision": "consent",
            "signature_name": "Alex Example", "statements": list(STATEMENTS)}
    body.update(overrides)
    return body


def consent(client: TestClient, person: Person, **overrides: Any) -> dict[str, Any]:
    response = client.post("/api/v1/me/consent", json=consent_body(**overrides),
                           headers=person.headers)
    assert response.status_code == 201, response.text
    return response.json()


def joined_and_consented(client: TestClient, smtp: SMTPServer, email: str, **kw: Any) -> Person:
    person = join(client, smtp, email, **kw)
    consent(client, person)
    return person

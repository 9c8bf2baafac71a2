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
    """Enroll and pick the magic link out of the email the real SMTP server received."""
    before = len(smtp.to(email))
    enroll(client, email, **kwargs)
    messages = smtp.to(email)
    assert len(messages) == before + 1, "expected exactly one new email"
    return Person(email, messages[-1].link().rsplit("/", 1)[1])


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

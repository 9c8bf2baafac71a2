"""Schemathesis against the app's own OpenAPI schema, with valid tokens for every role.

Every /api/v1 operation (one test each) gets generated requests, valid and invalid, as the
right caller: participant routes with a consented participant's token, researcher routes with a
researcher's, irb routes with an IRB reviewer's. No answer may be a 5xx, every answer must match
the schema the app documents for it (status code's body schema and content type), and every 4xx
carries the project's error body with a code and a message.

Each operation runs as its own hypothesis test over schemathesis's strategies (positive and
negative cases). schemathesis's lazy pytest loader (`schemathesis.pytest.from_fixture`) cannot run
under the installed pytest 9 (it reads `Function._nodeid`, which pytest no longer has), and the
app and its tokens come from fixtures, so the operations are parametrized here instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)
from sqlmodel import Session

from app.auth import service as auth
from app.scheduling import service as scheduling
from tests.support.factory import consented_participants

CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


@dataclass
class Tokens:
    participant: str
    researcher: str
    irb: str

    def for_path(self, path: str) -> dict[str, str]:
        if path.startswith("/api/v1/researcher"):
            token = self.researcher
        elif path.startswith("/api/v1/irb"):
            token = self.irb
        else:
            token = self.participant
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def tokens(app, engine, clock) -> Tokens:  # type: ignore[no-untyped-def]
    from datetime import timedelta

    with Session(engine, expire_on_commit=False) as session:
        person = consented_participants(session, 1, now=clock.now, prefix="fuzz")[0]
        scheduling.plan_at_enrollment(session, person, now=clock.now)
        token = auth.issue_participant_token(session, person.id, "api", timedelta(days=30),
                                             now=clock.now)
        session.commit()
        researcher = auth.add_staff(session, "fuzz-researcher", "researcher", now=clock.now)
        irb = auth.add_staff(session, "fuzz-irb", "irb", now=clock.now)
    return Tokens(token, researcher, irb)


def _operations() -> list[tuple[str, str]]:
    """(method, path) of every /api/v1 operation; building the schema touches no database."""
    from app.config import Settings
    from app.main import create_app

    document = create_app(Settings(database_url="sqlite://", environment="test",
                                   secret_key="fuzz-secret-0123456789")).openapi()
    return [(method.upper(), path) for path, operations in document["paths"].items()
            if path.startswith("/api/v1/") for method in operations]


@pytest.mark.parametrize(("method", "path"), _operations())
def test_api_answers_without_5xx_and_as_documented(method, path, app, tokens: Tokens):  # type: ignore[no-untyped-def]
    operation = schemathesis.openapi.from_asgi("/openapi.json", app)[path][method]
    headers = tokens.for_path(path)
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                      operation.as_strategy(GenerationMode.NEGATIVE))

    @given(case=cases)
    @settings(max_examples=20, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def answers_as_documented(case) -> None:  # type: ignore[no-untyped-def]
        response = case.call_and_validate(headers=headers, checks=CHECKS)
        if 400 <= response.status_code < 500:
            # FastAPI documents its own 422 body; every 4xx here has the project's error body.
            error = response.json()["error"]
            assert isinstance(error["code"], str) and error["code"], response.text
            assert isinstance(error["message"], str) and error["message"], response.text

    answers_as_documented()


def test_an_id_past_64_bits_is_a_400_not_a_500(client, tokens: Tokens):  # type: ignore[no-untyped-def]
    # Found by the fuzzer: SQLite's driver raised OverflowError (a 500) for such a path id.
    response = client.post(f"/api/v1/me/withdrawal/{2**70}/confirm",
                           json={"confirm_token": "x" * 20},
                           headers=tokens.for_path("/api/v1/me"))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_value"

"""A client generated from our OpenAPI document works: enroll -> consent -> submit.

openapi-python-client (the generator the FastAPI template recommends) builds a package from
app.openapi(); the test drives the app through that package only, so a schema that generators
misread (unnamed operations, untyped bodies, a PDF without a binary schema) fails here.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.conftest import SettlingClient
from tests.support.flows import ELIGIBLE, STATEMENTS, STUDY, link_token

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)

PACKAGE = "wellpanel_client"
CONFIG = {"project_name_override": "wellpanel-client", "package_name_override": PACKAGE,
          "post_hooks": [],
          # The generator parses only JSON and octet-stream bodies; files are bytes either way.
          "content_type_overrides": {"application/pdf": "application/octet-stream",
                                     "application/zip": "application/octet-stream"}}


@pytest.fixture
def generated(app: Any, tmp_path: Path) -> Iterator[ModuleType]:
    (tmp_path / "openapi.json").write_text(json.dumps(app.openapi()))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    out = tmp_path / "client"
    done = subprocess.run(
        [str(Path(sys.executable).parent / "openapi-python-client"), "generate",
         "--path", "openapi.json", "--config", "config.yaml", "--meta", "none",
         "--output-path", str(out / PACKAGE)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stdout + done.stderr, done.stdout + done.stderr
    sys.path.insert(0, str(out))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(out))
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def _api(name: str) -> Any:
    return importlib.import_module(f"{PACKAGE}.api.participant.participant_{name}")


def _models() -> Any:
    return importlib.import_module(f"{PACKAGE}.models")


def test_operation_ids_are_tag_and_name(app: Any) -> None:
    operations = [op for item in app.openapi()["paths"].values() for op in item.values()]
    ids = [op["operationId"] for op in operations]
    assert len(ids) == len(set(ids))
    assert "participant-submit_response" in ids
    untagged = [op["operationId"] for op in operations if not op.get("tags")]
    assert untagged == []
    assert all(op["operationId"].startswith(op["tags"][0] + "-") for op in operations), ids


def test_generated_client_enrolls_consents_and_submits(app, smtp, generated):  # type: ignore[no-untyped-def]
    models = _models()
    http = SettlingClient(app)
    client = generated.Client(base_url="http://testserver").set_httpx_client(http)
    study = _api("get_study").sync(key=STUDY, client=client)
    assert study.key == STUDY

    email = "generated@example.org"
    answer = _api("enroll").sync_detailed(key=STUDY, client=client, body=models.EnrollmentCreate(
        email=email, screening=models.EnrollmentCreateScreening.from_dict(ELIGIBLE)))
    assert answer.status_code == 202
    link = link_token(smtp.wait_for(email, count=1)[-1].link())
    session = _api("start_session").sync(client=client, body=models.LinkExchange(link=link))
    http.headers["Authorization"] = f"Bearer {session.token}"

    document = _api("get_consent_document").sync(client=client)
    record = _api("submit_consent").sync(client=client, body=models.ConsentSubmit(
        version=document.version, language="en", signature_name="Gen Client",
        statements=list(STATEMENTS), decision=models.ConsentSubmitDecision.CONSENT))
    assert record.decision == "consent"
    pdf = _api("download_consent_pdf").sync_detailed(record_id=record.id, client=client)
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")

    surveys = {s.instrument: s for s in _api("list_surveys").sync(client=client)}
    instance_id = surveys["who5"].id
    who5 = _api("get_survey").sync(instance_id=instance_id, client=client)
    answers = {item.id: item.options[0].value for item in who5.items}
    submitted = _api("submit_response").sync_detailed(
        instance_id=instance_id, client=client, idempotency_key="generated-0001",
        body=models.ResponseSubmit(answers=models.ResponseSubmitAnswers.from_dict(answers)))
    assert submitted.status_code == 201, submitted.content
    assert submitted.parsed.scores is not None

    refused = _api("submit_response").sync_detailed(
        instance_id=instance_id, client=client, idempotency_key="generated-0002",
        body=models.ResponseSubmit(answers=models.ResponseSubmitAnswers.from_dict(answers)))
    assert refused.status_code == 409
    assert isinstance(refused.parsed, models.ErrorBody)

"""The OpenAPI schema documents the error body the API really sends (DESIGN.md, "Errors")."""

from __future__ import annotations

import jsonschema
import pytest

ERROR_REF = "#/components/schemas/ErrorBody"


@pytest.fixture
def schema(app):  # type: ignore[no-untyped-def]
    return app.openapi()


def _error_schema(schema: dict) -> dict:
    return {"$ref": ERROR_REF, "components": schema["components"]}


def test_every_api_operation_documents_the_error_body(schema):
    operations = [(path, method, op) for path, item in schema["paths"].items()
                  if path.startswith("/api/") for method, op in item.items()]
    assert operations
    for path, method, op in operations:
        for status in ("4XX", *([s for s in op["responses"] if s == "422"])):
            media = op["responses"][status]["content"]["application/json"]
            assert media["schema"]["$ref"] == ERROR_REF, (method, path, status)
    assert "HTTPValidationError" not in schema["components"]["schemas"]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_real_refusals_match_the_documented_body(client, schema):
    refusals = [
        client.post("/api/v1/me/surveys/x/responses", json={"answers": {}}),  # 401
        client.post("/api/v1/studies/keep4o-panel/enrollments", json={"email": "nope"}),  # 422
        client.get("/api/v1/researcher/compliance"),  # 401
    ]
    for response in refusals:
        assert 400 <= response.status_code < 500
        jsonschema.validate(response.json(), _error_schema(schema))
    with pytest.raises(jsonschema.ValidationError):  # the check itself can fail
        jsonschema.validate({"detail": "x"}, _error_schema(schema))

"""The baseline for bench/api.py: a FastAPI app whose only work is validating the same body.

Same path shape, same pydantic model (ResponseSubmit), same uvicorn settings as the real
submission endpoint; no auth, no database. ``GET /noop`` answers 204 and does nothing: bench/api.py
measures the load generator's ceiling against it. Run: ``uvicorn bench.apps.bare:app``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, Header, Response

from app.surveys.models import ResponseSubmit

app = FastAPI(title="bare")


@app.post("/api/v1/me/surveys/{instance_id}/responses", status_code=201)
def submit_response(
    instance_id: str, body: ResponseSubmit,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> dict[str, object]:
    return {"instance_id": instance_id, "answered": len(body.answers),
            "replayed": False, "key": idempotency_key}


@app.get("/noop", status_code=204)
async def noop() -> Response:  # no thread pool hop: the cheapest answer
    return Response(status_code=204)

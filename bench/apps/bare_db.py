"""The bare-database baseline for bench/api.py: validate the same body, INSERT it, commit.

Same path shape, same pydantic model (ResponseSubmit) and the same uvicorn settings as the real
submission endpoint; the same PostgreSQL, reached the way the app reaches it (app.db.make_engine:
SQLAlchemy over psycopg 3, one connection pool of the app's size), one transaction per request.
No auth, no consent gate, no scoring, no ledger: what any endpoint that stores a submission pays.

The table is the bench's own (``bench_submissions``, created by ``create_table``), never part of
the app's schema. Its Idempotency-Key is unique, so a benchmark that sent the same submission
twice would see it fail instead of measuring it. Run: ``WELLPANEL_DATABASE_URL=... uvicorn
bench.apps.bare_db:app``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import FastAPI, Header, HTTPException, Request
from sqlalchemy import JSON, BigInteger, Column, MetaData, String, Table, insert
from sqlmodel import Session

from app.db import UTCDateTime, make_engine, utcnow
from app.surveys.models import ResponseSubmit

metadata = MetaData()
submissions = Table(
    "bench_submissions", metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("instance_id", String(36), nullable=False),
    Column("idempotency_key", String(200), nullable=False, unique=True),
    Column("answers", JSON, nullable=False),  # as survey_responses.answers
    Column("submitted_at", UTCDateTime, nullable=False),
)


def create_table(url: str) -> None:
    """Create the bench's table (the harness calls this before starting the server)."""
    engine = make_engine(url)
    try:
        metadata.create_all(engine)
    finally:
        engine.dispose()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.engine = make_engine(os.environ["WELLPANEL_DATABASE_URL"])
    yield
    app.state.engine.dispose()


app = FastAPI(title="bare-db", lifespan=lifespan)


@app.post("/api/v1/me/surveys/{instance_id}/responses", status_code=201)
def submit_response(
    instance_id: str, body: ResponseSubmit, request: Request,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> dict[str, object]:
    if not idempotency_key:
        raise HTTPException(422, "Idempotency-Key required")
    with Session(request.app.state.engine) as session:
        session.execute(insert(submissions).values(
            instance_id=instance_id, idempotency_key=idempotency_key, answers=body.answers,
            submitted_at=utcnow()))
        session.commit()
    return {"instance_id": instance_id, "answered": len(body.answers), "replayed": False}

"""Probes for orchestrators: /healthz (the process answers) and /readyz (it can serve)."""

from __future__ import annotations

from functools import lru_cache

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, text

from app import migrate
from app.core.errors import error_body

router = APIRouter(include_in_schema=False)


@lru_cache
def _head_revision() -> str:
    return migrate.head_revision()


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """Liveness: no database call, so a slow database does not get the process restarted."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(request: Request) -> JSONResponse:
    problem = readiness_problem(request.app.state.engine)
    if problem is not None:
        return JSONResponse(error_body("not_ready", problem[0], problem[1]), status_code=503)
    return JSONResponse({"status": "ready", "revision": _head_revision()})


def readiness_problem(engine: Engine) -> tuple[str, dict[str, str | None]] | None:
    """None when the database answers and its schema is at the newest migration."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        current = migrate.current_revision(engine)
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        # The class name only: driver messages can carry host names and user names.
        return ("The database cannot be reached.",
                {"database": "unreachable", "error": type(exc).__name__})
    head = _head_revision()
    if current != head:
        return (f"The database schema is at {current or 'no revision'}, not at {head}; "
                "run `wellpanel db upgrade`.", {"revision": current, "head": head})
    return None

"""Helpers shared by the `wellpanel` commands of every domain (app/cli.py and <domain>/cli.py)."""

from __future__ import annotations

from datetime import datetime
from typing import NoReturn

import typer

from app.config import Settings, get_settings


def fail(message: str, code: int = 2) -> NoReturn:
    """One error line on stderr and a non-zero exit (2: the input was refused)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def load_settings() -> Settings:
    try:
        return get_settings()
    except Exception as exc:  # pydantic's message names the variable at fault
        fail(f"invalid settings: {exc}")


def parse_now(text: str | None) -> datetime:
    """A command's --now option: an ISO time with an offset, or the current time if absent."""
    from app.db import utcnow

    if text is None:
        return utcnow()
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        fail(f"--now: {text!r} is not an ISO date-time")
    if moment.tzinfo is None:
        fail("--now: give a time zone offset, e.g. 2026-12-01T09:00+00:00")
    return moment

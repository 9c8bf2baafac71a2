"""Helpers shared by the `wellpanel` commands of every domain (app/cli.py and <domain>/cli.py)."""

from __future__ import annotations

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

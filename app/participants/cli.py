"""``wellpanel participants ...``: participant housekeeping from the command line.

Wire it into the main command with ``register(app)`` (app/cli.py). Bad input prints one line
``error: ...`` on stderr and exits with status 2.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer

from app.cli_support import load_settings, parse_now

participants_app = typer.Typer(help="Participants: contact details and retention.",
                               no_args_is_help=True)


@participants_app.command("erase-expired-contacts")
def erase_expired_contacts(
    now: Annotated[str | None, typer.Option(
        help="ISO time with offset, e.g. 2026-12-01T09:00Z (default: the current time)")] = None,
) -> None:
    """Mark participants whose schedule has ended completed, and erase the contact details of
    those whose last survey closed more than the study's data_policy.contact_retention_days
    ago (each erasure audited); prints what it did as JSON. Safe to run again."""
    from sqlmodel import Session

    from app.db import make_engine
    from app.participants import erasure

    moment = parse_now(now)
    settings = load_settings()
    engine = make_engine(settings.database_url)
    try:
        with Session(engine, expire_on_commit=False) as session:
            report = erasure.erase_expired_contacts(session, now=moment)
    finally:
        engine.dispose()
    typer.echo(json.dumps({"now": moment.isoformat()} | asdict(report)))


def register(app: typer.Typer) -> None:
    """Add the ``participants`` command group to the ``wellpanel`` command."""
    app.add_typer(participants_app, name="participants")

"""``wellpanel mail ...``: email housekeeping from the command line.

Wire it into the main command with ``register(app)`` (app/cli.py). Bad input prints one line
``error: ...`` on stderr and exits with status 2.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from app.cli_support import fail, load_settings, parse_now

mail_app = typer.Typer(help="Email: bounces.", no_args_is_help=True)


@mail_app.command("read-bounces")
def read_bounces(
    maildir: Annotated[Path, typer.Argument(help="the Maildir the bounce address delivers to")],
    now: Annotated[str | None, typer.Option(
        help="ISO time with offset, e.g. 2026-12-01T09:00Z (default: the current time)")] = None,
) -> None:
    """Read new delivery status notifications (RFC 3464) in MAILDIR once: a permanent failure
    (5.x.x) marks the address undeliverable, as a 5xx while sending does. Prints counts as
    JSON (never an address). Run it from cron or a timer."""
    from sqlmodel import Session

    from app.audit import anchor
    from app.db import make_engine
    from app.notify import dsn

    moment = parse_now(now)
    if not (maildir / "new").is_dir() or not (maildir / "cur").is_dir():
        fail(f"{maildir}: not a Maildir (it needs new/ and cur/)")
    settings = load_settings()
    engine = make_engine(settings.database_url)
    anchor.attach(engine, settings)  # the audit rows it writes are checkpointed too
    try:
        with Session(engine, expire_on_commit=False) as session:
            report = dsn.read_maildir(session, maildir, secret_key=settings.secret_key,
                                      now=moment)
    finally:
        engine.dispose()
    typer.echo(json.dumps({"now": moment.isoformat()} | asdict(report)))


def register(app: typer.Typer) -> None:
    """Add the ``mail`` command group to the ``wellpanel`` command."""
    app.add_typer(mail_app, name="mail")

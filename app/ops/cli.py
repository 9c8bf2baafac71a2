"""`wellpanel backup OUT` and `wellpanel restore IN`; wired in with `register(app)`.

Bad input (a missing or damaged file, a target that is not empty, an existing OUT) prints one
line `error: ...` on stderr and exits with status 2; a failing pg_dump/pg_restore exits with 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from app.cli_support import load_settings
from app.ops.backup import BackupError, Outcome


def _database_url() -> str:
    return load_settings().database_url


def _report(verb: str, outcome: Outcome) -> None:
    rows = sum(outcome.tables.values())
    typer.echo(f"{verb} {outcome.path}: {len(outcome.tables)} tables, {rows} rows")


def _fail(exc: BackupError) -> None:
    typer.echo(f"error: {exc.message}", err=True)
    raise typer.Exit(1 if exc.status_code >= 500 else 2)


def backup_command(
    out: Annotated[Path, typer.Argument(help="The backup file to write")],
    force: Annotated[bool, typer.Option("--force", help="Replace OUT if it exists")] = False,
) -> None:
    """Back up the database (SQLite: online backup API; PostgreSQL: pg_dump -Fc) to OUT."""
    from app.ops import backup

    try:
        _report("backed up to", backup.backup(_database_url(), out, force=force))
    except BackupError as exc:
        _fail(exc)


def restore_command(
    source: Annotated[Path, typer.Argument(metavar="IN", help="A file written by `backup`")],
    force: Annotated[bool, typer.Option(
        "--force", help="Replace the contents of a database that is not empty")] = False,
) -> None:
    """Restore a backup into the database; refuses one that has tables unless --force."""
    from app.ops import backup

    try:
        _report("restored from", backup.restore(_database_url(), source, force=force))
    except BackupError as exc:
        _fail(exc)


def register(app: typer.Typer) -> None:
    app.command("backup")(backup_command)
    app.command("restore")(restore_command)

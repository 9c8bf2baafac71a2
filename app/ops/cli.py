"""`wellpanel backup OUT` and `wellpanel restore IN`; wired in with `register(app)`.

Bad input (a missing or damaged file, a target that is not empty, an existing OUT, a backup of
another study or a newer schema, one behind the latest ledger checkpoint without --force) prints
one line `error: ...` on stderr and exits with status 2; a failing pg_dump/pg_restore exits
with 1. Both are ledgered and checkpointed (app/audit/custody.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from app.cli_support import load_settings, parse_now
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
    now: Annotated[str | None, typer.Option(help="ISO time with offset (default: now)")] = None,
) -> None:
    """Back up the database (SQLite: online backup API; PostgreSQL: pg_dump -Fc) to OUT; the
    backup is a ledger row and its head is checkpointed with the file's SHA-256."""
    from app.audit import custody

    try:
        done = custody.backup(load_settings(), out, force=force, actor="cli",
                              now=parse_now(now))
    except BackupError as exc:
        _fail(exc)
        return
    _report("backed up to", done.outcome)
    typer.echo(f"sha256 {done.sha256}" + (f"; checkpoint {done.checkpoint.n} (row "
                                           f"{done.checkpoint.seq})" if done.checkpoint else ""))
    if done.warning:
        typer.echo(f"warning: {done.warning}", err=True)


def restore_command(
    source: Annotated[Path, typer.Argument(metavar="IN", help="A file written by `backup`")],
    force: Annotated[bool, typer.Option(
        "--force", help="Replace the contents of a database that is not empty, or go back "
        "behind the latest ledger checkpoint (recorded)")] = False,
    now: Annotated[str | None, typer.Option(help="ISO time with offset (default: now)")] = None,
) -> None:
    """Restore a backup into the database; refuses one that has tables, or that would set the
    ledger back behind its latest checkpoint, unless --force; refuses another study's backup
    and one from a newer schema outright. The restore is recorded in the ledger and the sink."""
    from app.audit import custody

    try:
        settings = load_settings()  # pg_restore --clean drops and creates: the owner's work
        settings = settings.model_copy(update={"database_url": settings.owner_database_url})
        done = custody.restore(settings, source, force=force, actor="cli", now=parse_now(now))
    except BackupError as exc:
        _fail(exc)
        return
    _report("restored from", done.outcome)
    if done.forced_past is not None:
        typer.echo(f"FORCED: the ledger went back from checkpointed row {done.forced_past} to row "
                   f"{done.facts.head[0] if done.facts.head else 0}; recorded in the ledger and "
                   f"as checkpoint entry {done.entry.n if done.entry else '?'}")
    if done.warning:
        typer.echo(f"warning: {done.warning}", err=True)


def register(app: typer.Typer) -> None:
    app.command("backup")(backup_command)
    app.command("restore")(restore_command)

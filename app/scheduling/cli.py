"""``wellpanel compliance``: the researchers' compliance table in the terminal (or JSON).

Wire it into the main command with ``register(app)`` (app/cli.py). Bad input prints one line
``error: ...`` on stderr and exits with status 2.
"""

from __future__ import annotations

from typing import Annotated

import typer

from app.cli_support import fail, load_settings
from app.scheduling.compliance import ComplianceReport


def compliance(
    study: Annotated[str | None, typer.Option(
        "--study", help="Study key (default: the only study loaded)")] = None,
    missed_in_a_row: Annotated[int, typer.Option(
        "--missed-in-a-row", min=1, max=100,
        help="List participants who missed at least this many sittings in a row")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
) -> None:
    """Per instrument and wave: scheduled, sent, opened, completed, expired, completion rate and
    median time to answer; then who missed several surveys in a row (IRB pseudonyms only)."""
    from sqlmodel import Session

    from app.core.errors import AppError
    from app.db import make_engine, utcnow
    from app.scheduling import compliance as service

    settings = load_settings()
    engine = make_engine(settings.database_url)
    try:
        with Session(engine) as session:
            found = service.find_study(session, study)
            report = service.compliance(session, found, secret_key=settings.secret_key,
                                        now=utcnow(), missed_in_a_row=missed_in_a_row)
    except AppError as exc:
        fail(exc.message)
        return
    finally:
        engine.dispose()
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
        return
    print_table(report)


def print_table(report: ComplianceReport) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Compliance: {report.study}")
    for name in ("entry", "instrument", "wave"):
        table.add_column(name)
    for name in ("scheduled", "sent", "opened", "completed", "expired", "rate",
                 "median answer"):
        table.add_column(name, justify="right")
    for r in report.rows:
        table.add_row(r.entry, r.instrument, str(r.wave), str(r.scheduled), str(r.sent),
                      str(r.opened), str(r.completed), str(r.expired),
                      "-" if r.completion_rate is None else f"{r.completion_rate:.0%}",
                      _duration(r.median_answer_seconds))
    console = Console(width=120)
    console.print(table)
    missed = report.missed
    console.print(f"{missed.count} participant(s) missed {missed.threshold} or more sittings "
                  f"in a row" + (":" if missed.pseudonyms else "."))
    for pseudonym in missed.pseudonyms:
        console.print(f"  {pseudonym}")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86_400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86_400:.1f} d"


def register(app: typer.Typer) -> None:
    """Add the ``compliance`` command to the ``wellpanel`` command."""
    app.command("compliance")(compliance)

"""``wellpanel export panel``: the anonymized panel Data Package from the command line.

Wire it into the main command with ``register(app)`` (app/cli.py). Bad input prints one line
``error: ...`` on stderr and exits with status 2; nothing is left behind.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from app.cli_support import fail, load_settings

export_app = typer.Typer(help="Anonymized exports for researchers.", no_args_is_help=True)


@export_app.command("panel")
def panel(
    out: Annotated[Path, typer.Option("--out", help="New (or empty) directory for the package")],
    fmt: Annotated[str, typer.Option("--format", help="csv, parquet, sav (SPSS) or dta (Stata)")]
    = "csv",
    profile: Annotated[str, typer.Option(
        "--profile", help="strict (no calendar information) or research (needs --dua)")]
    = "strict",
    key_file: Annotated[Path | None, typer.Option(
        "--key-file", help="Stable pseudonym key (approved linkage); default: a fresh key")]
    = None,
    dua: Annotated[str | None, typer.Option(
        "--dua", help="Data-use agreement reference (required for research)")] = None,
    study: Annotated[str | None, typer.Option(
        "--study", help="Study key (default: the only study loaded)")]
    = None,
    items: Annotated[bool, typer.Option(
        "--items", help="Include item answers in responses (quasi-identifiers excepted)")]
    = False,
    free_text: Annotated[bool, typer.Option(
        "--free-text", help="Include free-text answers too (with --items; flagged)")] = False,
    actor: Annotated[str, typer.Option(help="Who runs the export, for the audit ledger")]
    = "cli",
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON")] = False,
    progress: Annotated[bool | None, typer.Option(
        "--progress/--no-progress", help="Progress bar (default: when stderr is a terminal)")]
    = None,
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-q", help="No progress bar, no summary; errors still go to stderr")]
    = False,
) -> None:
    """Write the anonymized panel (participants, responses, usage, wide panel) as a Data
    Package with codebook and de-identification report, and record it in the audit ledger."""
    from app.db import make_engine
    from app.export.service import ExportError, ExportOptions, export_panel

    settings = load_settings()
    engine = make_engine(settings.database_url)
    options = ExportOptions(
        out=out, fmt=fmt.strip().lower(), profile=profile.strip().lower(), study=study,
        key_file=key_file, dua=dua, include_items=items, include_free_text=free_text,
        actor=actor,
    )
    # a bar only where someone watches: never in pipes, logs or cron mail
    show = False if quiet else (sys.stderr.isatty() if progress is None else progress)
    try:
        result = export_panel(engine, options, progress=show)
    except ExportError as exc:
        fail(exc.message)
        return
    finally:
        engine.dispose()
    if as_json:
        typer.echo(json.dumps(result.as_dict(), indent=2, default=str))
        return
    if quiet:
        return
    q = result.deidentification.get("quasi_identifiers", {})
    typer.echo(
        f"exported {result.study} ({result.profile}, {result.format}) to {result.out_dir}: "
        + ", ".join(f"{n} {name}" for name, n in result.rows.items())
    )
    typer.echo(
        f"k={q.get('k')}: {q.get('suppressed')} participant(s) suppressed "
        f"({(q.get('suppressed_share') or 0):.1%}); audit ledger row {result.audit_seq}"
    )
    for name, f in sorted(result.files.items()):
        typer.echo(f"  {f['sha256']}  {name}")


def register(app: typer.Typer) -> None:
    """Add the ``export`` command group (``export panel``) to the ``wellpanel`` command."""
    app.add_typer(export_app, name="export")

"""``wellpanel export panel``: the anonymized panel Data Package from the command line.

Wire it into the main command with ``register(app)`` (app/cli.py). Bad input (options, the
output path, a full disk) prints one line ``error: ...`` on stderr and exits with status 2;
SIGTERM or SIGINT during the export prints one line and exits with 128 + the signal number
(143, 130). In every case the partial output is removed: nothing is left behind.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from app.cli_support import fail, load_settings


class Interrupted(BaseException):
    """SIGTERM or SIGINT arrived during an export. A BaseException, like KeyboardInterrupt, so
    that no ``except Exception`` on the way swallows it; the export removes its partial
    output on the way out."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.name = signal.Signals(signum).name


@contextlib.contextmanager
def _signals_abort() -> Iterator[None]:
    """SIGTERM (a stopping container, a killed job) and SIGINT (Ctrl-C) end the export
    cleanly instead of killing the process with its partial output on disk. A second signal
    during the cleanup is ignored, so the cleanup finishes."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def abort(signum: int, _frame: Any) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, abort) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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
        "--free-text", help="Include free-text answers too (research profile with --dua and "
        "--items only; e-mail addresses, phone numbers, URLs and handles masked)")] = False,
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
        with _signals_abort():
            result = export_panel(engine, options, progress=show)
    except ExportError as exc:
        fail(exc.message)
        return
    except Interrupted as exc:
        fail(f"interrupted by {exc.name}: the partial export was removed, nothing was written",
             code=128 + exc.signum)
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
    typer.echo(  # measured on the released values (app/export/risk.py)
        f"k={q.get('k')}, l={q.get('l')}, t={q.get('t')}, max individual risk "
        f"{q.get('max_individual_risk')}, expected re-identifications "
        f"{q.get('expected_reidentifications')}: {q.get('suppressed')} participant(s) "
        f"suppressed, {q.get('records_removed') or 0} left out "
        f"({(q.get('suppressed_share') or 0):.1%}); audit ledger row {result.audit_seq}"
    )
    for name, f in sorted(result.files.items()):
        typer.echo(f"  {f['sha256']}  {name}")


def register(app: typer.Typer) -> None:
    """Add the ``export`` command group (``export panel``) to the ``wellpanel`` command."""
    app.add_typer(export_app, name="export")

"""Command-line entry points, registered on the app's ``wellpanel`` Typer app.

``register(app)`` adds:

- ``analyze PANEL_DIR --out REPORT_DIR``: validate a panel Data Package, fit the standard
  analysis, write report.html and results.json (progress bar on the terminal).
- ``power``: power of the within-person usage effect by simulation, with a power curve.

Expected user errors (not a Data Package, missing columns, unknown outcome, too few
participants) print one line ``error: ...`` on stderr and exit with status 2, no traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import typer

from analysis.errors import AnalysisError

EXIT_USER_ERROR = 2


def _user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn AnalysisError into a one-line message and a non-zero exit."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AnalysisError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(EXIT_USER_ERROR) from None

    return wrapper


def _csv_list(text: str | None, cast: Callable[[str], Any] = str) -> list[Any] | None:
    if text is None:
        return None
    try:
        return [cast(v.strip()) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise AnalysisError(f"cannot read the list {text!r}: {err}") from err


def register(app: typer.Typer) -> None:
    """Add the ``analyze`` and ``power`` commands to ``app``."""

    @app.command("analyze")
    @_user_errors
    def analyze(
        panel_dir: Path = typer.Argument(..., help="Directory of a panel Data Package."),
        out: Path = typer.Option(
            ..., "--out", "-o", help="Directory for report.html, results.json."
        ),
        outcomes: str | None = typer.Option(
            None, help="Comma-separated outcomes (default: the confirmatory outcomes present)."
        ),
        predictor: str = typer.Option("hours_4o", help="Usage column of the panel."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar."),
    ) -> None:
        """Analyse a panel and write a self-contained HTML report and results.json."""
        from analysis.report import build_report

        paths = build_report(panel_dir, out, _csv_list(outcomes), predictor, progress)
        typer.echo(f"report: {paths.html}")
        typer.echo(f"results: {paths.results}")

    @app.command("power")
    @_user_errors
    def power(
        participants: str = typer.Option(
            "50,100,200,400", help="Comma-separated numbers of participants."
        ),
        waves: int = typer.Option(12, help="Planned waves (about 2 weeks apart)."),
        effect: float = typer.Option(
            0.1, help="Within-person effect in SD of the outcome per SD of within-person usage."
        ),
        attrition: float = typer.Option(0.2, help="Share dropping out before the last wave."),
        sims: int = typer.Option(200, help="Simulated panels per point of the curve."),
        alpha: float = typer.Option(0.05, help="Significance level."),
        seed: int = typer.Option(0, help="Random seed (results are reproducible)."),
        out: Path = typer.Option(Path("power"), "--out", "-o", help="Output directory."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar."),
    ) -> None:
        """Estimate power by simulation and plot the power curve (power.png, power.csv)."""
        from analysis.power import run_power

        ns = _csv_list(participants, int) or []
        paths = run_power(ns, waves, effect, attrition, sims, alpha, seed, out, progress)
        for p in paths:
            typer.echo(f"wrote {p}")

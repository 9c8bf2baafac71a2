"""`wellpanel simulate`: a synthetic study in the configured database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer


def register(app: typer.Typer) -> None:
    """Add the ``simulate`` command to ``app``."""

    @app.command("simulate")
    def simulate(
        participants: Annotated[int, typer.Option(help="Consenting participants to simulate.")]
        = 200,
        waves: Annotated[int, typer.Option(help="Waves two weeks apart, the baseline included.")]
        = 12,
        seed: Annotated[int, typer.Option(help="Random seed (the same seed, the same study).")]
        = 0,
        study: Annotated[str | None, typer.Option(
            help="Study key (default: the configured default study; loaded if missing).")] = None,
        append: Annotated[bool, typer.Option(
            "--append", help="Add to a study that already has participants (refused "
            "otherwise).")] = False,
        truth: Annotated[Path | None, typer.Option(
            help="Also write the true effects (JSON) to this file.")] = None,
        progress: Annotated[bool, typer.Option("--progress/--no-progress",
                                               help="Progress bar.")] = True,
        datapackage: Annotated[Path | None, typer.Option(
            help="Instead of filling the database, write the simulator's panel Data Package "
            "to this new directory (seconds, no database: for developing the analysis).")]
        = None,
    ) -> None:
        """Fill the database with a synthetic study whose true effects are known.

        Participants join, consent, answer their waves (scores and AI usage drawn from the
        analysis package's simulator), miss waves, drop out, pause and withdraw, on a fake clock
        that ends before now, through the same services as the API. Addresses are under
        example.invalid and nothing is ever sent.
        """
        from app.cli import _fail, _settings

        if datapackage is not None:
            _write_datapackage(datapackage, participants, waves, seed, _fail)
            return
        from app import migrate
        from app.db import make_engine
        from app.simulate.service import SimulateOptions, SimulationError
        from app.simulate.service import simulate as run

        settings = _settings()
        migrate.upgrade(settings.database_url)
        engine = make_engine(settings.database_url)
        try:
            result = run(engine, SimulateOptions(participants=participants, waves=waves,
                                                 seed=seed, study=study, append=append),
                         surveys_dir=settings.surveys_dir, default_study=settings.default_study,
                         progress=progress)
        except SimulationError as exc:
            _fail(exc.message, 2)
            return
        finally:
            engine.dispose()
        typer.echo(
            f"{result.study}: {result.participants} participants ({result.people} people "
            f"including those who screened out, never consented or declined), "
            f"{result.responses} responses, {result.safety_events} safety events, "
            f"{result.start:%Y-%m-%d} to {result.end:%Y-%m-%d}")
        typer.echo("fates: " + ", ".join(f"{k} {v}" for k, v in sorted(result.fates.items())))
        typer.echo(f"{result.seconds:.1f} s: {result.responses_per_second:.0f} responses/s, "
                   f"{result.steps / max(result.seconds, 1e-9):.0f} steps/s")
        effects = result.truth["effects"]
        typer.echo("true effects (per hour/week of GPT-4o; access loss level):")
        for k, e in effects.items():
            typer.echo(f"  {k}: within {e['within']:+.3g}, between {e['between']:+.3g}, "
                       f"access loss {e['loss_level']:+.3g}")
        if truth is not None:
            truth.write_text(json.dumps(result.truth, indent=2, default=str) + "\n", "utf-8")
            typer.echo(f"truth: {truth}")


def _write_datapackage(out: Path, participants: int, waves: int, seed: int, fail: Any) -> None:
    from analysis.simulate import simulate_datapackage

    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        fail(f"{out} already exists and is not empty; choose a new directory", 2)
    if participants < 1 or waves < 1:
        fail("--participants and --waves must be at least 1", 2)
    path = simulate_datapackage(out, participants, waves, seed=seed)
    typer.echo(f"wrote {path} ({participants} simulated participants x {waves} waves)")

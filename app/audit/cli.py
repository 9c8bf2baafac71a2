"""`wellpanel audit verify|checkpoint|key`; wired into the `audit` group by `register`.

verify exits 0 when the ledger is intact, 1 naming the first problem (a row, a missing range of
rows or of checkpoint entries, a checkpoint with a bad signature or signed by another key).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from app.audit.models import ChainReport
from app.cli_support import fail, load_settings, parse_now


def verify_command(
    full: Annotated[bool, typer.Option(
        "--full/--incremental", help="Recompute every row (the default), or only those after "
        "the last verified checkpoint: faster, but an edit of an older row that leaves its "
        "stored hash alone is then only found by the next full run")] = True,
    deep: Annotated[bool, typer.Option(
        "--deep", help="Also recompute every stored answer's and consent document's hash "
        "against the ledger")] = False,
    checkpoints: Annotated[Path | None, typer.Option(
        help="Check against the checkpoint files in this directory instead of the configured "
        "sink (e.g. attachments the IRB kept)", file_okay=False)] = None,
    public_key: Annotated[Path | None, typer.Option(
        help="The public key checkpoints must be signed with (PEM)", dir_okay=False)] = None,
    sink: Annotated[str, typer.Option(
        help="Which configured sink to check: all (the directory, and the bucket of "
        "WELLPANEL_LEDGER_S3_URL when set), directory, or s3")] = "all",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Check the audit ledger: its chain, against the signed checkpoints; exit 1 if broken."""
    from sqlmodel import Session

    from app.audit import anchor as anchoring
    from app.audit import checks
    from app.db import make_engine

    settings = load_settings()
    try:
        views = checks.load_views(settings, checkpoints=checkpoints, public_key=public_key,
                                  sink=sink)
    except anchoring.AnchorError as exc:
        fail(str(exc), 1)
    engine = make_engine(settings.database_url, begin_immediate=False)
    try:
        with Session(engine) as session:
            report = checks.verify(session, views[0], full=full, others=views[1:])
            deep_report = None
            if deep:
                from app.audit import deep as deep_checks

                deep_report = deep_checks.verify_data(session)
    finally:
        engine.dispose()
    ok = report.ok and (deep_report is None or deep_report.ok)
    if as_json:
        out = report.model_dump(mode="json")
        if deep_report is not None:
            out["deep"] = deep_report.model_dump(mode="json")
        typer.echo(json.dumps(out, indent=2))
    else:
        _print(report)
        if deep_report is not None:
            for line in deep_report.lines():
                typer.echo(line, err=not deep_report.ok)
    raise typer.Exit(0 if ok else 1)


def _print(report: ChainReport) -> None:
    for warning in report.warnings:
        typer.echo(f"WARNING: {warning}", err=True)
    if not report.ok:
        broken = report.first_broken
        assert broken is not None
        where = f"row {broken.seq}" if broken.seq is not None else f"checkpoint {broken.checkpoint}"
        typer.echo(f"audit ledger BROKEN at {where} ({broken.problem}): {broken.message}",
                   err=True)
        return
    typer.echo(f"audit ledger intact: head {report.head_seq} {report.head_hash}")
    typer.echo(f"  recomputed rows {report.verified_from} to {report.head_seq or 0} "
               f"({report.rows_checked} rows, {report.mode})")
    if not report.anchored:
        typer.echo("  no checkpoints yet: only the chain vouches for the rows "
                   "(run `wellpanel audit checkpoint`)")
        return
    latest = report.latest_checkpoint
    typer.echo(f"  {report.checkpoints_checked} signed checkpoint entries in {report.sink} "
               f"(key id {report.key_id}); latest: entry {latest.n if latest else '-'} at row "
               f"{latest.seq if latest else '-'}; {report.unanchored_rows} rows after the "
               "latest matched checkpoint")
    for rollback in report.rollbacks:
        typer.echo(f"  NOTE: entry {rollback.checkpoint} records a restore on "
                   f"{rollback.at.isoformat(timespec='seconds')} from {rollback.source}: the "
                   f"ledger was set back to row {rollback.to_seq}"
                   + (f", giving up rows {rollback.to_seq + 1} to {rollback.from_seq} that "
                      "earlier checkpoints had signed" if rollback.from_seq else "")
                   + (" (forced)" if rollback.forced else ""))


def checkpoint_command(
    now: Annotated[str | None, typer.Option(help="ISO time with offset (default: now)")] = None,
) -> None:
    """Sign the ledger's head now and write it to the configured sink(s)."""
    from app.audit import anchor as anchoring
    from app.db import make_engine

    settings = load_settings()
    moment = parse_now(now)
    anchor = anchoring.Anchor(settings)
    engine = make_engine(settings.database_url, begin_immediate=False)
    try:
        with engine.connect() as connection:
            entry = anchor.checkpoint(connection, now=moment)
    except anchoring.AnchorError as exc:
        fail(str(exc), 1)
    finally:
        engine.dispose()
    if entry is None:
        typer.echo("the ledger is empty: nothing to checkpoint")
        return
    typer.echo(f"checkpoint {entry.n}: row {entry.seq} {entry.head} -> "
               f"{anchor.sink.directory / entry.name} (key id {entry.payload['key']})")
    if anchor.undelivered:  # the entry is safe in the directory; the copies are not made
        fail(f"checkpoint {entry.n} is in {anchor.sink.directory}, but not everywhere: "
             + "; ".join(anchor.undelivered)
             + ". It is sent again with the next checkpoint (run this command again).", 1)
    if anchor.bucket is not None:
        typer.echo(f"  and in {anchor.bucket.label}, locked "
                   f"({settings.ledger_s3_lock_mode}, {settings.ledger_s3_retention_days} days)")


def key_command() -> None:
    """Print the public key that signs checkpoints (creating the key pair on first use)."""
    from app.audit import anchor as anchoring

    anchor = anchoring.Anchor(load_settings())
    try:
        signer = anchor.signer()
    except anchoring.AnchorError as exc:
        fail(str(exc), 1)
    anchor.sink.publish_key(anchoring.public_pem(signer.public), signer.key_id)
    if anchor.bucket is not None:
        try:
            anchor.bucket.publish_key(anchoring.public_pem(signer.public), signer.key_id)
        except anchoring.AnchorError as exc:
            fail(str(exc), 1)
    typer.echo(f"key id {signer.key_id} (private key: {anchor.paths.key_file})")
    typer.echo(anchoring.public_pem(signer.public), nl=False)


def register(audit_app: typer.Typer) -> None:
    audit_app.command("verify")(verify_command)
    audit_app.command("checkpoint")(checkpoint_command)
    audit_app.command("key")(key_command)

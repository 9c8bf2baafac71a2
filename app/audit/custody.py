"""Backups and restores under the ledger's eye.

A backup is itself a ledger row (taken into the backup), and the head it holds is checkpointed
with the file's SHA-256, so the IRB can later tell which backups existed. A restore is refused,
with nothing changed, when the file belongs to another study or ledger, comes from a newer
schema, or contradicts a checkpoint; and when it would set the ledger back behind the latest
checkpoint, unless forced. A restore that goes through is recorded in the restored database's
ledger and, signed, in the checkpoint sink, which is how verification tells a deliberate,
recorded rollback from an attacker's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from alembic.script import ScriptDirectory
from sqlalchemy import Engine
from sqlmodel import Session

from app.audit import anchor as anchoring
from app.audit import checks
from app.audit import service as audit
from app.config import Settings
from app.db import make_engine
from app.ops import backup as ops
from app.ops.backup import BackupError, BackupFacts, Outcome


@dataclass
class BackupDone:
    outcome: Outcome
    sha256: str
    checkpoint: anchoring.Entry | None
    warning: str | None = None


@dataclass
class RestoreDone:
    outcome: Outcome
    facts: BackupFacts
    forced_past: int | None  # the checkpointed row the restore went back behind (forced)
    entry: anchoring.Entry | None
    warning: str | None = None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _engine(settings: Settings) -> Engine:
    return make_engine(settings.database_url)  # SQLite: BEGIN IMMEDIATE serializes appends


def backup(settings: Settings, out: Path, *, force: bool, actor: str, now: datetime
           ) -> BackupDone:
    if out.exists() and not force:  # refused before the ledger row is written
        raise BackupError(f"{out} exists; choose a new file or pass --force to replace it.",
                          code="exists")
    engine = _engine(settings)
    try:
        if ops.table_counts(settings.database_url).get("audit_events") is not None:
            with Session(engine) as session:
                audit.append(session, actor=actor, action="ops.backup", target=None,
                             details={"file": out.name}, now=now)
                session.commit()
        outcome = ops.backup(settings.database_url, out, force=force)
        sha = file_sha256(out)
        facts = ops.inspect_backup(out)
        entry, warning = None, None
        if facts.head is not None:
            anchor = anchoring.Anchor(settings)
            try:
                with engine.connect() as connection:
                    entry = anchor.checkpoint(
                        connection, now=now, backup={
                            "file": out.name, "sha256": sha, "bytes": out.stat().st_size,
                            "seq": facts.head[0], "head": facts.head[1]})
            except anchoring.AnchorError as exc:
                warning = f"the backup was written, but not checkpointed: {exc}"
            if anchor.undelivered:  # in the directory; the bucket gets it with the next one
                warning = ("the backup's checkpoint is in the checkpoint directory only: "
                           + "; ".join(anchor.undelivered))
    finally:
        engine.dispose()
    return BackupDone(outcome, sha, entry, warning)


def _known_revisions() -> set[str]:
    from app.migrate import alembic_config

    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return {rev.revision for rev in script.walk_revisions()}


def _target_state(settings: Settings) -> tuple[set[str], tuple[int, str] | None]:
    """The target's studies and ledger head, if it has tables."""
    tables = ops.table_counts(settings.database_url, missing_ok=True)
    if "studies" not in tables:
        return set(), None
    engine = _engine(settings)
    try:
        with engine.connect() as connection:
            from sqlalchemy import text

            studies = {r[0] for r in connection.execute(text("SELECT key FROM studies"))}
            head = anchoring.db_head(connection) if "audit_events" in tables else None
    finally:
        engine.dispose()
    return studies, head


def check_restorable(settings: Settings, source: Path, *, force: bool
                     ) -> tuple[BackupFacts, int | None, checks.SinkView]:
    """Refuse a restore that must not happen; returns the backup's facts and, when the
    restore goes back behind the latest checkpoint (allowed only with force), that row."""
    kind = ops.backup_kind(source)
    wanted = "sqlite" if settings.is_sqlite else "postgresql"
    if kind != wanted:
        raise BackupError(f"{source} is a {kind} backup, but the database is {wanted}.",
                          code="wrong_kind")
    view = checks.load_view(settings)
    signed = [e for e in view.entries if view.key is not None and e.signed_by(view.key)]
    anchors = checks.anchors_in_force(signed).in_force
    facts = ops.inspect_backup(source, {e.seq for e in anchors})
    if facts.revision is not None and facts.revision not in _known_revisions():
        raise BackupError(
            f"{source} comes from a newer version of wellpanel (schema revision "
            f"{facts.revision}, unknown here); upgrade wellpanel first. Nothing was changed.",
            code="future_schema")
    studies, _head = _target_state(settings)
    if studies and facts.studies and not (studies & facts.studies):
        raise BackupError(
            f"{source} belongs to another study ({', '.join(sorted(facts.studies))}); this "
            f"database holds {', '.join(sorted(studies))}. Nothing was changed.",
            code="other_study")
    ledgers = {e.payload.get("ledger") for e in anchors} - {None}
    if ledgers and facts.ledger_first is not None and facts.ledger_first not in ledgers:
        raise BackupError(
            f"{source} holds another study's or installation's audit ledger (its first row is "
            f"{facts.ledger_first[:12]}..., the checkpoints in {view.label} are for "
            f"{sorted(ledgers)[0][:12]}...). Nothing was changed.", code="other_ledger")
    head_seq = facts.head[0] if facts.head else 0
    for entry in anchors:
        found = facts.hashes.get(entry.seq)
        if found is not None and found != entry.head:
            raise BackupError(
                f"{source} contradicts checkpoint {entry.n} ({entry.name}): its row {entry.seq} "
                "is not the one that was signed, so it is not a faithful copy of this ledger. "
                "Nothing was changed.", code="contradicts_checkpoint")
    latest = max((e.seq for e in anchors), default=0)
    if latest > head_seq and not force:
        raise BackupError(
            f"{source} ends at ledger row {head_seq}, behind the latest checkpoint (row {latest}"
            f" in {view.label}): restoring it would discard rows {head_seq + 1} to {latest} and "
            "later. Pass --force to restore it anyway; the rollback is then recorded in the "
            "ledger and the checkpoints. Nothing was changed.", code="behind_checkpoint",
            status_code=409)
    return facts, (latest if latest > head_seq else None), view


def restore(settings: Settings, source: Path, *, force: bool, actor: str, now: datetime
            ) -> RestoreDone:
    facts, behind, _view = check_restorable(settings, source, force=force)
    _studies, replaced = _target_state(settings)
    outcome = ops.restore(settings.database_url, source, force=force)
    sha = file_sha256(source)
    details: dict[str, Any] = {
        "file": source.name, "sha256": sha, "forced": force,
        "backup_head": facts.head[0] if facts.head else None,
        "behind_checkpoint": behind,
        "replaced_head": replaced[0] if replaced else None}
    engine = _engine(settings)
    entry, warning, upload = None, None, []
    try:
        anchor = anchoring.Anchor(settings)
        if facts.head is not None:
            try:
                entry = anchor.record_restore(
                    seq=facts.head[0], head=facts.head[1], ledger=facts.ledger_first,
                    source=source.name, source_sha256=sha, forced=force,
                    replaced={"seq": replaced[0], "head": replaced[1]} if replaced else None,
                    now=now)
            except anchoring.AnchorError as exc:
                warning = f"the restore is not recorded in the checkpoints: {exc}"
            upload = anchor.undelivered
        if "audit_events" in outcome.tables:
            with Session(engine) as session:
                audit.append(session, actor=actor, action="ops.restore", details=details, now=now)
                session.commit()
            if warning is None:
                with engine.connect() as connection:
                    anchor.checkpoint(connection, now=now)
                upload = anchor.undelivered  # the next entry took the pending ones along
        if warning is None and upload:
            warning = ("the restore is recorded in the checkpoint directory only: "
                       + "; ".join(upload))
    finally:
        engine.dispose()
    return RestoreDone(Outcome(outcome.path, ops.table_counts(settings.database_url)), facts,
                       behind, entry, warning)

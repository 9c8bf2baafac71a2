"""Backups and restores under the ledger, through the `wellpanel` command as an operator runs
it: a restore behind the latest checkpoint is refused unless forced (and then recorded in the
ledger and the sink); an older backup put back behind the app's back is caught by `audit
verify`; another study's backup and one from a newer schema are refused with nothing changed."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import text
from sqlmodel import Session, select
from typer.testing import CliRunner

from app.audit import anchor as anchoring
from app.audit import service as audit
from app.audit.models import AuditEvent
from app.config import Settings, get_settings
from app.ops import backup as ops
from app.ops.backup import BackupError
from tests.support import tamper
from tests.support.dbview import observer_engine

ROOT = Path(__file__).resolve().parents[3]
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def _env(db_url: str, ledger: Path) -> dict[str, str]:
    return {"WELLPANEL_DATABASE_URL": db_url, "WELLPANEL_ENVIRONMENT": "test",
            "WELLPANEL_SECRET_KEY": "custody-test-secret-0123",
            "WELLPANEL_LEDGER_DIR": str(ledger), "WELLPANEL_LEDGER_CHECKPOINT_ROWS": "5"}


def wellpanel_process(db_url: str, ledger: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real command in its own process (slow to start: used once)."""
    return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True,
                          text=True, env=os.environ | _env(db_url, ledger), cwd=ROOT,
                          timeout=300)


def wellpanel(db_url: str, ledger: Path, *args: str) -> SimpleNamespace:
    """The same command in this process, with its own settings from the environment."""
    from app.cli import app as cli_app

    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli_app, list(args), env=_env(db_url, ledger))
    finally:
        get_settings.cache_clear()
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return SimpleNamespace(returncode=result.exit_code, stdout=result.stdout,
                           stderr=result.stderr)


def _append(session: Session, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        audit.append(session, actor="test", action="thing.happen", target=f"t:{i}",
                     details={"i": i}, now=T0)
    session.commit()


def _rows(db_url: str) -> int:
    return ops.table_counts(db_url)["audit_events"]


@pytest.fixture
def ledger(tmp_path) -> Path:
    return tmp_path / "ledger"


def test_verify_command_names_the_rewritten_row_and_exits_1(db_url, ledger, session):
    _append(session, 8)
    made = wellpanel(db_url, ledger, "audit", "checkpoint")
    assert made.returncode == 0 and "checkpoint 1: row 8" in made.stdout, made.stderr
    ok = wellpanel(db_url, ledger, "audit", "verify")
    assert ok.returncode == 0 and "1 signed checkpoint entries" in ok.stdout, ok.stderr
    tamper.unprotect(session)
    tamper.edit_and_rehash(session, 4)
    broken = wellpanel_process(db_url, ledger, "audit", "verify")
    assert broken.returncode == 1
    assert "BROKEN at row 4 (rewritten)" in broken.stderr
    assert "00000001-checkpoint.json" in broken.stderr


def test_restoring_an_older_backup(db_url, ledger, session, tmp_path, backend):
    _append(session, 6)
    old = tmp_path / "old.backup"
    made = wellpanel(db_url, ledger, "backup", str(old))
    assert made.returncode == 0, made.stderr
    assert "checkpoint 1 (row 7)" in made.stdout  # the backup's own row, checkpointed
    _append(session, 10, start=100)
    assert wellpanel(db_url, ledger, "audit", "checkpoint").returncode == 0  # row 17
    assert _rows(db_url) == 17

    refused = wellpanel(db_url, ledger, "restore", str(old))
    assert refused.returncode == 2
    assert "ends at ledger row 7, behind the latest checkpoint (row 17" in refused.stderr
    assert _rows(db_url) == 17  # nothing changed

    forced = wellpanel(db_url, ledger, "restore", "--force", str(old))
    assert forced.returncode == 0, forced.stderr
    assert "FORCED: the ledger went back from checkpointed row 17 to row 7" in forced.stdout
    session.rollback()
    last = session.exec(select(AuditEvent).order_by(AuditEvent.id.desc())).first()  # type: ignore[attr-defined]
    assert (last.id, last.action) == (8, "ops.restore")  # in the restored database's ledger
    assert last.details["forced"] is True and last.details["behind_checkpoint"] == 17
    entries = anchoring.read_entries(anchoring.DirectorySink(ledger))[0]
    restore = next(e for e in entries if e.kind == "restore")  # ... and in the sink
    assert restore.seq == 7 and restore.payload["forced"] is True
    assert entries[-1].kind == "checkpoint" and entries[-1].seq == 8
    verified = wellpanel(db_url, ledger, "audit", "verify")
    assert verified.returncode == 0, verified.stderr
    assert "records a restore" in verified.stdout and "giving up rows 8 to 17" in verified.stdout


def test_an_older_backup_put_back_behind_the_apps_back_is_caught(db_url, ledger, session,
                                                                   tmp_path):
    _append(session, 6)
    old = tmp_path / "old.backup"
    assert wellpanel(db_url, ledger, "backup", str(old)).returncode == 0
    _append(session, 10, start=100)
    assert wellpanel(db_url, ledger, "audit", "checkpoint").returncode == 0
    session.close()
    ops.restore(db_url, old, force=True)  # the bare tool, with the database's credentials
    broken = wellpanel(db_url, ledger, "audit", "verify")
    assert broken.returncode == 1
    assert "BROKEN at row 8 (truncated): rows 8 to 17 are missing" in broken.stderr


def _other_database(backend: str, request, tmp_path: Path) -> str:  # type: ignore[no-untyped-def]
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'other.db'}"
        from app import migrate

        migrate.upgrade(url)
        return url
    server = request.getfixturevalue("pg_server")
    name = server.create_database(template=request.getfixturevalue("pg_template"))
    request.addfinalizer(lambda: server.drop_database(name))
    return server.url(name)


def test_another_studys_backup_is_refused_with_nothing_changed(backend, db_url, ledger, session,
                                                                tmp_path, request):
    _append(session, 6)
    assert wellpanel(db_url, ledger, "audit", "checkpoint").returncode == 0
    other_url = _other_database(backend, request, tmp_path)
    engine = observer_engine(other_url)
    with Session(engine) as other:
        _append(other, 3, start=50)
    engine.dispose()
    foreign = tmp_path / "foreign.backup"
    ops.backup(other_url, foreign)
    before = ops.table_counts(db_url)
    refused = wellpanel(db_url, ledger, "restore", "--force", str(foreign))
    assert refused.returncode == 2
    assert "holds another study's or installation's audit ledger" in refused.stderr
    assert ops.table_counts(db_url) == before


def test_a_backup_of_another_study_key_is_refused(backend, db_url, ledger, tmp_path, request):
    other_url = _other_database(backend, request, tmp_path)
    for url, key in ((db_url, "our-study"), (other_url, "their-study")):
        engine = observer_engine(url)
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO studies (key, created_at) VALUES (:k, :t)"),
                               {"k": key, "t": T0})
        engine.dispose()
    foreign = tmp_path / "their.backup"
    ops.backup(other_url, foreign)
    before = ops.table_counts(db_url)
    refused = wellpanel(db_url, ledger, "restore", "--force", str(foreign))
    assert refused.returncode == 2 and "belongs to another study (their-study)" in refused.stderr
    assert ops.table_counts(db_url) == before


def test_a_backup_from_a_newer_schema_is_refused(backend, db_url, ledger, tmp_path, request):
    other_url = _other_database(backend, request, tmp_path)
    engine = observer_engine(other_url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    engine.dispose()
    future = tmp_path / "future.backup"
    ops.backup(other_url, future)
    assert ops.inspect_backup(future).revision == "9999_future"
    before = ops.table_counts(db_url)
    refused = wellpanel(db_url, ledger, "restore", "--force", str(future))
    assert refused.returncode == 2 and "newer version of wellpanel" in refused.stderr
    assert ops.table_counts(db_url) == before


def test_backup_facts_are_read_from_the_file(db_url, session, tmp_path):
    _append(session, 4)
    dump = tmp_path / "facts.backup"
    ops.backup(db_url, dump)
    facts = ops.inspect_backup(dump, {2})
    head = session.execute(text("SELECT id, row_hash FROM audit_events WHERE id = 4")).one()
    assert facts.head == (4, head[1]) and 2 in facts.hashes and facts.ledger_first


def test_a_missing_backup_is_refused_before_the_ledger_is_touched(db_url, ledger, tmp_path):
    settings = Settings(database_url=db_url, environment="test", ledger_dir=ledger)
    from app.audit import custody

    with pytest.raises(BackupError, match="no such backup file"):
        custody.restore(settings, tmp_path / "nope.backup", force=True, actor="t", now=T0)
    assert not ledger.exists()

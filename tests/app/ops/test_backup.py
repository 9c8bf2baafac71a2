"""The restore drill: back up a live study, restore it into a fresh database, compare every
table's rows and verify the audit chain; and clear refusals for bad files and full targets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlmodel import Session

from app.audit import service as audit
from app.ops import backup as ops
from app.ops.backup import BackupError
from tests.support.dbview import observer_engine
from tests.support.flows import joined_and_consented

WELLPANEL = [sys.executable, "-m", "app.cli"]
ROOT = Path(__file__).resolve().parents[3]


def wellpanel(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"WELLPANEL_DATABASE_URL": db_url, "WELLPANEL_ENVIRONMENT": "test",
                        "WELLPANEL_SECRET_KEY": "backup-test-secret-0123"}
    return subprocess.run([*WELLPANEL, *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)


def fresh_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database (no tables at all) of the same kind."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'restored.db'}"
    server = request.getfixturevalue("pg_server")
    name = server.create_database()
    request.addfinalizer(lambda: server.drop_database(name))
    return server.url(name)


def live_study(client, smtp) -> None:  # type: ignore[no-untyped-def]
    """Participants with consent, answers and a withdrawal: every kind of row, and a ledger."""
    people = [joined_and_consented(client, smtp, f"drill-{i}-{id(client)}@example.org")
              for i in range(3)]
    for person in people:
        surveys = client.get("/api/v1/me/surveys", headers=person.headers).json()
        who5 = next(s["id"] for s in surveys if s["instrument"] == "who5")
        answered = client.post(f"/api/v1/me/surveys/{who5}/responses",
                               json={"answers": {f"who5_{i}": 4 for i in range(1, 6)}},
                               headers=person.headers | {"Idempotency-Key": f"drill-{who5}"})
        assert answered.status_code == 201, answered.text
    started = client.post("/api/v1/me/withdrawal", json={"scope": "stop_contact"},
                          headers=people[0].headers).json()
    assert client.post(f"/api/v1/me/withdrawal/{started['withdrawal_id']}/confirm",
                       json={"confirm_token": started["confirm_token"]},
                       headers=people[0].headers).status_code == 200


def test_restore_drill(backend, db_url, client, smtp, request, tmp_path):
    live_study(client, smtp)
    before = ops.table_counts(db_url)
    assert before["survey_responses"] == 3 and before["consent_records"] >= 3
    assert before["audit_events"] > 5 and before["alembic_version"] == 1

    dump = tmp_path / "study.backup"
    made = wellpanel(db_url, "backup", str(dump))  # while the app still holds connections
    assert made.returncode == 0, made.stderr
    assert f"{len(before)} tables" in made.stdout and dump.is_file()

    # the backup is a ledger row of its own (in the backup), the restore another
    before["audit_events"] += 1
    assert ops.table_counts(db_url) == before
    target = fresh_url(backend, request, tmp_path)
    restored = wellpanel(target, "restore", str(dump))
    assert restored.returncode == 0, restored.stderr
    before["audit_events"] += 1
    assert ops.table_counts(target) == before  # every table, row for row

    verified = wellpanel(target, "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    engine = observer_engine(target)
    try:
        with Session(engine) as session:
            report = audit.verify(session)
    finally:
        engine.dispose()
    assert report.ok and report.rows_checked == before["audit_events"]

    again = wellpanel(target, "restore", str(dump))  # the target has moved past the backup
    assert again.returncode == 2 and "behind the latest checkpoint" in again.stderr
    assert "--force" in again.stderr
    forced = wellpanel(target, "restore", "--force", str(dump))
    assert forced.returncode == 0, forced.stderr
    assert ops.table_counts(target) == before


def test_backup_refuses_to_overwrite(db_url, tmp_path):
    out = tmp_path / "exists.backup"
    out.write_bytes(b"keep me")
    with pytest.raises(BackupError, match="exists"):
        ops.backup(db_url, out)
    assert out.read_bytes() == b"keep me"
    ops.backup(db_url, out, force=True)
    assert ops.backup_kind(out) == ("sqlite" if db_url.startswith("sqlite") else "postgresql")


def test_missing_and_damaged_files_are_named(backend, db_url, request, tmp_path):
    target = fresh_url(backend, request, tmp_path)
    missing = wellpanel(target, "restore", str(tmp_path / "nope.backup"))
    assert missing.returncode == 2 and "no such backup file" in missing.stderr

    garbage = tmp_path / "garbage.backup"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(BackupError, match="not a wellpanel backup") as err:
        ops.restore(target, garbage)
    assert err.value.code == "corrupt"

    good = tmp_path / "good.backup"
    ops.backup(db_url, good)
    truncated = tmp_path / "truncated.backup"
    truncated.write_bytes(good.read_bytes()[: max(200, good.stat().st_size // 3)])
    with pytest.raises(BackupError, match="damaged") as err:
        ops.restore(target, truncated)
    assert err.value.code == "corrupt"
    assert ops.table_counts(target, missing_ok=True) == {}  # nothing half-restored


def test_a_backup_of_the_other_kind_is_refused(backend, db_url, tmp_path, request):
    other = tmp_path / "other.backup"
    if backend == "sqlite":
        other.write_bytes(ops.PG_DUMP_MAGIC + b"\x01" * 100)
        expected = "is a postgresql backup, but the database is sqlite"
    else:
        other.write_bytes(ops.SQLITE_MAGIC + b"\x00" * 100)
        expected = "is a sqlite backup, but the database is postgresql"
    with pytest.raises(BackupError, match=expected):
        ops.restore(fresh_url(backend, request, tmp_path), other)

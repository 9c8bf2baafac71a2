"""Least privilege on PostgreSQL (#14 part 3): migrations run as the tables' owner, the app as a
role that may only SELECT and INSERT on the ledger and the consent tables, and that can neither
alter a table, switch off its triggers, truncate it, nor create anything.

Every app test on PostgreSQL already runs as that role (tests/conftest.py `settings`); here the
grants themselves, the deployment path (`wellpanel db upgrade` as a separate owner), a whole
journey as the role, and every tampering drill attempted with the role's credentials."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session

from app.audit import deep
from app.audit import service as audit
from app.auth import service as auth
from app.config import Settings
from app.db import make_engine
from app.main import create_app
from app.ops import backup as ops
from app.ops.backup import BackupError
from app.privileges import PrivilegeError, grant_app_role
from tests.app.export.seed import Seeder
from tests.conftest import STUDY_FILE, app_role_url
from tests.support import tamper
from tests.support.dbview import observer_engine
from tests.support.flows import joined_and_consented
from tests.support.pg import APP_ROLE, OWNER_ROLE, PostgresServer

WELLPANEL = [sys.executable, "-m", "app.cli"]
ROOT = Path(__file__).resolve().parents[2]
APPEND_ONLY = {"audit_events", "consent_versions", "consent_documents", "consent_records",
               "consent_copies"}
# Refusals by the privilege system, not by the append-only triggers (whose message starts with
# "wellpanel:"): the role never gets as far as a trigger.
REFUSED = ("permission denied", "must be owner")

pytestmark = pytest.mark.parametrize("backend", ["postgres"])


@pytest.fixture
def app_engine(db_url: str) -> Iterator[Engine]:
    """The database as the app's role sees it."""
    engine = observer_engine(app_role_url(db_url))
    yield engine
    engine.dispose()


def wellpanel(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*WELLPANEL, *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=300, env=os.environ | {"WELLPANEL_ENVIRONMENT": "test",
                                                         "WELLPANEL_SECRET_KEY": "roles-" * 4,
                                                         **env})


def assert_refused(run: Callable[[], object]) -> str:
    with pytest.raises(DBAPIError) as caught:
        run()
    message = str(caught.value.orig)
    assert isinstance(caught.value.orig, psycopg.errors.InsufficientPrivilege), message
    assert any(reason in message for reason in REFUSED), message
    return message


def privileges(engine: Engine, table: str) -> set[str]:
    kinds = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
    with engine.connect() as conn:
        return {k for k in kinds if conn.execute(
            text("SELECT has_table_privilege(:r, :t, :k)"),
            {"r": APP_ROLE, "t": table, "k": k}).scalar()}


def test_the_app_role_may_only_append_to_the_ledger_and_consent_tables(engine, backend):
    with engine.connect() as conn:
        tables = set(conn.execute(text(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).scalars())
        owners = set(conn.execute(text(
            "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'")).scalars())
        may_create = conn.execute(text(
            "SELECT has_schema_privilege(:r, 'public', 'CREATE'), "
            "has_database_privilege(:r, current_database(), 'CREATE')"), {"r": APP_ROLE}).one()
    assert tables >= APPEND_ONLY and APP_ROLE not in owners
    for table in APPEND_ONLY:
        assert privileges(engine, table) == {"SELECT", "INSERT"}, table
    assert privileges(engine, "alembic_version") == {"SELECT"}
    assert privileges(engine, "survey_responses") == {"SELECT", "INSERT", "DELETE"}
    for table in tables - APPEND_ONLY - {"alembic_version", "survey_responses"}:
        assert privileges(engine, table) == {"SELECT", "INSERT", "UPDATE", "DELETE"}, table
    assert tuple(may_create) == (False, False)


@pytest.mark.parametrize("statement", [
    "ALTER TABLE audit_events DISABLE TRIGGER ALL",
    "ALTER TABLE audit_events DISABLE TRIGGER USER",
    "ALTER TABLE consent_documents DISABLE TRIGGER consent_documents_append_only",
    "DROP TRIGGER audit_events_append_only ON audit_events",
    "DROP TRIGGER consent_records_no_truncate ON consent_records",
    "UPDATE audit_events SET actor = 'someone else' WHERE id = 1",
    "DELETE FROM audit_events WHERE id = 1",
    "TRUNCATE audit_events",
    "TRUNCATE consent_records CASCADE",
    "UPDATE consent_documents SET body_md = body_md || ' One more clause.'",
    "DELETE FROM consent_documents",
    "UPDATE consent_versions SET published_at = published_at",
    "UPDATE consent_records SET id = id",
    "DELETE FROM consent_copies",
    "UPDATE survey_responses SET answers = answers",  # edit an answer (PHQ-9 item 9 0 -> 3)
    "ALTER TABLE audit_events ADD COLUMN note text",
    "ALTER TABLE audit_events OWNER TO wellpanel_app",
    "DROP TABLE audit_events",
    "CREATE TABLE shadow (id int)",
    "CREATE FUNCTION public.noop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; "
    "END $$",
    "SET session_replication_role = replica",  # the other way to skip triggers
    "DROP FUNCTION wellpanel_append_only() CASCADE",
])
def test_the_app_role_cannot_alter_switch_off_or_rewrite(app_engine, loaded_study, statement):
    def run() -> None:
        with app_engine.begin() as conn:
            conn.exec_driver_sql(statement)

    assert_refused(run)


def test_the_tampering_drills_are_impossible_for_the_app_role(
        client, smtp, app_engine, session, backend):
    for i in range(3):
        joined_and_consented(client, smtp, f"drill-{i}@example.org")
    head = session.execute(text("SELECT max(id) FROM audit_events")).scalar_one()
    assert head >= 6
    drills: dict[str, Callable[[Session], None]] = {
        "switch off the triggers": tamper.unprotect,
        "switch off the consent documents' triggers":
            lambda s: tamper.unprotect(s, "consent_documents"),
        "edit and re-hash": lambda s: tamper.edit_and_rehash(s, 3),
        "re-hash from a row": lambda s: tamper.rehash_from(s, 2),
        "delete and renumber": lambda s: tamper.delete_and_renumber(s, 3),
        "cut the tail": lambda s: tamper.cut_after(s, head - 2),
    }
    for name, drill in drills.items():
        with Session(app_engine) as as_app:
            message = assert_refused(lambda d=drill, s=as_app: d(s))
        assert "wellpanel:" not in message, name  # refused before any trigger ran
    with Session(app_engine) as as_app:
        report = audit.verify(as_app)
        assert report.ok and report.head_seq == report.rows_checked == head  # nothing changed


@pytest.fixture
def owned_database(pg_server: PostgresServer) -> Iterator[str]:
    """An empty database owned by the owner role (not a superuser), as deployed."""
    name = pg_server.create_database(owner=OWNER_ROLE)
    yield name
    pg_server.drop_database(name)


def test_migrations_as_the_owner_then_a_whole_journey_as_the_app_role(
        pg_server, owned_database, smtp, clock, tmp_path, backend):
    owner_url = pg_server.url(owned_database, user=OWNER_ROLE)
    app_url = pg_server.url(owned_database, user=APP_ROLE)
    env = {"WELLPANEL_DATABASE_URL": app_url, "WELLPANEL_MIGRATION_DATABASE_URL": owner_url,
           "WELLPANEL_LEDGER_DIR": str(tmp_path / "ledger")}
    migrated = wellpanel(env, "db", "upgrade")
    assert migrated.returncode == 0, migrated.stderr
    assert f"role {APP_ROLE}: SELECT, INSERT on audit_events" in migrated.stdout
    # the app's own URL is all the study load needs: no DDL
    loaded = wellpanel({k: v for k, v in env.items() if "MIGRATION" not in k},
                       "study", "load", str(STUDY_FILE))
    assert loaded.returncode == 0, loaded.stderr

    settings = Settings(database_url=app_url, environment="test", secret_key="roles-" * 4,
                        smtp_host="127.0.0.1", smtp_port=smtp.port, base_url="http://testserver",
                        log_json=False, export_dir=tmp_path / "exports",
                        ledger_dir=tmp_path / "ledger")
    application = create_app(settings, clock=clock)
    try:
        with TestClient(application) as client:
            journey(client, smtp, application.state.engine, owner_url)
    finally:
        application.state.engine.dispose()
    verified = wellpanel(env, "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    backup = wellpanel(env, "backup", str(tmp_path / "as-app.backup"))  # pg_dump as the app
    assert backup.returncode == 0, backup.stderr


def journey(client: TestClient, smtp, engine: Engine,  # type: ignore[no-untyped-def]
            owner_url: str) -> None:
    """Join, consent, answer, withdraw (with erasure), a seeded panel and a researcher's
    export."""
    people = [joined_and_consented(client, smtp, f"journey-{i}@example.org") for i in range(2)]
    for person in people:
        surveys = client.get("/api/v1/me/surveys", headers=person.headers).json()
        who5 = next(s["id"] for s in surveys if s["instrument"] == "who5")
        answered = client.post(f"/api/v1/me/surveys/{who5}/responses",
                               json={"answers": {f"who5_{i}": 4 for i in range(1, 6)}},
                               headers=person.headers | {"Idempotency-Key": f"j-{who5}"})
        assert answered.status_code == 201, answered.text
    started = client.post("/api/v1/me/withdrawal", json={"scope": "delete_data"},
                          headers=people[0].headers)
    assert started.status_code in (200, 201), started.text
    confirmed = client.post(f"/api/v1/me/withdrawal/{started.json()['withdrawal_id']}/confirm",
                            json={"confirm_token": started.json()["confirm_token"]},
                            headers=people[0].headers)
    assert confirmed.status_code == 200, confirmed.text
    # a panel big enough for the export's k-anonymity (test data: the seeder resets sequences
    # with setval, which only the owner may)
    owner = make_engine(owner_url)
    try:
        seeder = Seeder(owner)
        seeder.populate(14, 3, seed=11)
        seeder.flush()
    finally:
        owner.dispose()
    with Session(engine) as s:
        token = auth.add_staff(s, "ann", "researcher")
    headers = {"Authorization": f"Bearer {token}"}
    job = client.post("/api/v1/researcher/exports", json={"format": "csv", "profile": "strict"},
                      headers=headers)
    assert job.status_code == 202, job.text
    deadline = time.monotonic() + 180
    while (status := client.get(job.headers["location"], headers=headers).json())["status"] \
            not in ("done", "failed"):
        assert time.monotonic() < deadline, status
        time.sleep(0.05)
    assert status["status"] == "done", status["error"]
    assert status["row_counts"]["participants"] >= 14 and status["row_counts"]["responses"] > 0


def test_grant_refuses_a_superuser_or_an_owner_of_the_tables(pg_server, owned_database, backend):
    owner = make_engine(pg_server.url(owned_database, user=OWNER_ROLE))
    try:
        with owner.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (id int)")
        for role, reason in (("postgres", "superuser"), (OWNER_ROLE, "owns the table t"),
                             ("nobody_here", "does not exist")):
            with owner.begin() as conn, pytest.raises(PrivilegeError) as refused:
                grant_app_role(conn, role)
            assert reason in refused.value.message
    finally:
        owner.dispose()


def test_sqlite_has_no_roles_to_grant(tmp_path, backend):
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.begin() as conn, pytest.raises(PrivilegeError, match="PostgreSQL only"):
        grant_app_role(conn, APP_ROLE)


def test_the_compose_init_script_and_migrate_step_make_a_restricted_app_role(
        pg_server, tmp_path, backend):
    """docker/postgres-init/10-app-role.sh as the postgres image runs it (psql as
    POSTGRES_USER), then compose's migrate step: the role it names may not tamper."""
    name = pg_server.create_database()
    role = "compose_app"
    try:
        created = subprocess.run(
            ["sh", str(ROOT / "docker" / "postgres-init" / "10-app-role.sh")],
            capture_output=True, text=True, timeout=60,
            env=os.environ | {"PATH": f"{pg_server.bin_dir}:{os.environ['PATH']}",
                              "PGHOST": "127.0.0.1", "PGPORT": str(pg_server.port),
                              "POSTGRES_USER": "postgres", "POSTGRES_DB": name,
                              "APP_DB_USER": role, "APP_DB_PASSWORD": "it's \"quoted\""})
        assert created.returncode == 0, created.stderr
        env = {"WELLPANEL_DATABASE_URL": pg_server.url(name, user=role),
               "WELLPANEL_MIGRATION_DATABASE_URL": pg_server.url(name),
               "WELLPANEL_LEDGER_DIR": str(tmp_path / "ledger")}
        migrated = wellpanel(env, "db", "upgrade")
        assert migrated.returncode == 0, migrated.stderr
        assert f"role {role}: SELECT, INSERT on audit_events" in migrated.stdout
        again = wellpanel(env, "db", "grant-app-role")  # idempotent, names the same role
        assert again.returncode == 0 and again.stdout == migrated.stdout.split("\n", 1)[1]
        as_app = make_engine(pg_server.url(name, user=role))
        try:
            for statement in ("ALTER TABLE audit_events DISABLE TRIGGER ALL",
                              "INSERT INTO consent_documents SELECT * FROM consent_documents",
                              "CREATE TABLE shadow (id int)"):
                def run(sql: str = statement) -> None:
                    with as_app.begin() as conn:
                        conn.exec_driver_sql(sql)
                if statement.startswith("INSERT"):
                    run()  # appending is allowed (no rows to copy)
                else:
                    assert_refused(run)
        finally:
            as_app.dispose()
    finally:
        pg_server.drop_database(name)
        pg_server.execute(f"DROP ROLE IF EXISTS {role}")


def test_putting_back_an_older_backup_is_impossible_for_the_app_role(
        client, smtp, db_url, session, tmp_path, backend):
    joined_and_consented(client, smtp, "before@example.org")
    older = tmp_path / "older.backup"
    ops.backup(db_url, older)
    joined_and_consented(client, smtp, "after@example.org")
    head = session.execute(text("SELECT max(id) FROM audit_events")).scalar_one()
    with pytest.raises(BackupError) as refused:  # pg_restore --clean drops tables first
        ops.restore(app_role_url(db_url), older, force=True)
    # refused at its first statement, an ALTER TABLE only the owner may run
    assert refused.value.message.startswith("pg_restore failed: Command was: ALTER TABLE")
    assert session.execute(text("SELECT max(id) FROM audit_events")).scalar_one() == head


def test_an_answer_cannot_be_edited_and_a_deletion_is_named(client, smtp, app_engine, backend):
    person = joined_and_consented(client, smtp, "answers@example.org")
    surveys = client.get("/api/v1/me/surveys", headers=person.headers).json()
    instance = next(s["id"] for s in surveys if s["instrument"] == "phq9")
    assert client.post(f"/api/v1/me/surveys/{instance}/responses",
                       json={"answers": {f"phq9_{i}": 0 for i in range(1, 10)}},
                       headers=person.headers | {"Idempotency-Key": "roles-phq9"}
                       ).status_code == 201

    def edit() -> None:  # "not at all" becomes "nearly every day"
        with app_engine.begin() as conn:
            conn.execute(text("UPDATE survey_responses SET answers = "
                              "jsonb_set(answers::jsonb, '{phq9_9}', '3')::json"))

    assert_refused(edit)
    with app_engine.begin() as conn:  # erasing is the app's right: deep verify tells it apart
        for table in ("response_scores", "safety_events", "survey_responses"):
            conn.execute(text(f"DELETE FROM {table}"))  # noqa: S608 (constant names)
    with Session(app_engine) as as_app:
        [problem] = deep.verify_data(as_app).problems
    assert problem.kind == "answers_missing"
    assert problem.target == f"survey_instance:{instance}"

"""Least privilege on PostgreSQL: the app's database role, granted by the tables' owner.

Migrations run as the owner (WELLPANEL_MIGRATION_DATABASE_URL). The app connects as a role that
owns nothing and may:
- SELECT and INSERT on the append-only tables: every table guarded by the
  wellpanel_append_only() triggers (the ledger, consent versions, documents, records and the
  frozen copies), found in the catalog so a later migration's append-only table is covered;
- SELECT on alembic_version (readiness: is the schema at head);
- SELECT, INSERT, DELETE on survey_responses (answers are erased on request, never edited);
- SELECT, INSERT, UPDATE, DELETE on every other table, and use the sequences of serial ids.
It gets no TRUNCATE, REFERENCES or TRIGGER, owns no table (so it cannot ALTER, DROP or DISABLE
TRIGGER) and has no CREATE on the schema. Temporary tables stay allowed (the scheduler stages
COPY rows in one). Default privileges give tables a later migration creates only SELECT and
INSERT until the grant runs again (`wellpanel db upgrade` runs it after migrating).

SQLite has no roles: whoever can open the file can do anything with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url

from app.core.errors import AppError

READ_ONLY_TABLES = ("alembic_version",)
# Answers are kept exactly as accepted: stored, erased on a withdrawal that asks for it (audit
# verify --deep tells an erasure from a deletion), never edited.
NO_UPDATE_TABLES = ("survey_responses",)
APPEND_ONLY_FUNCTION = "wellpanel_append_only"


class PrivilegeError(AppError):
    status_code = 422
    code = "grant_refused"


@dataclass
class Grant:
    role: str
    append_only: list[str] = field(default_factory=list)
    read_only: list[str] = field(default_factory=list)
    no_update: list[str] = field(default_factory=list)
    read_write: list[str] = field(default_factory=list)


def database_user(url: str) -> str | None:
    return make_url(url).username


def needs_app_role_grant(database_url: str, owner_url: str) -> str | None:
    """The app's role when the app and the migrations connect as different PostgreSQL users."""
    if not owner_url.startswith("postgresql") or not database_url.startswith("postgresql"):
        return None
    app_user = database_user(database_url)
    if app_user is None or app_user == database_user(owner_url):
        return None
    return app_user


def append_only_tables(conn: Connection) -> list[str]:
    """Tables of the current schema whose triggers call wellpanel_append_only()."""
    return list(conn.execute(text(
        "SELECT DISTINCT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
        "JOIN pg_proc p ON p.oid = t.tgfoid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE p.proname = :fn AND n.nspname = current_schema() AND NOT t.tgisinternal "
        "ORDER BY 1"), {"fn": APPEND_ONLY_FUNCTION}).scalars())


def _check_role(conn: Connection, role: str) -> None:
    found = conn.execute(text("SELECT rolsuper FROM pg_roles WHERE rolname = :r"),
                         {"r": role}).first()
    if found is None:
        raise PrivilegeError(f"the role {role!r} does not exist; create it first "
                             "(CREATE ROLE ... LOGIN PASSWORD ...)")
    if found[0]:
        raise PrivilegeError(f"the role {role!r} is a superuser: it can do anything, so it "
                             "cannot be the app's restricted role")
    owned = conn.execute(text(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
        "AND tableowner = :r ORDER BY 1 LIMIT 1"), {"r": role}).scalar()
    if owned is not None:
        raise PrivilegeError(f"the role {role!r} owns the table {owned}: an owner may alter it "
                             "and switch off its triggers; run the migrations as another role")
    if conn.execute(text("SELECT current_user")).scalar() == role:
        raise PrivilegeError(f"connected as {role!r} itself: grant as the tables' owner")


def grant_app_role(conn: Connection, role: str) -> Grant:
    """Give `role` exactly the app's privileges on the current schema (run as the owner, in
    the caller's transaction). Idempotent: every privilege is revoked first, then granted."""
    if conn.dialect.name != "postgresql":
        raise PrivilegeError("database roles exist on PostgreSQL only; SQLite has none")
    _check_role(conn, role)
    q = conn.dialect.identifier_preparer.quote
    who = q(role)
    tables = list(conn.execute(text(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY 1"
    )).scalars())
    append_only = set(append_only_tables(conn))
    grant = Grant(role)
    schema = q(conn.execute(text("SELECT current_schema()")).scalar_one())
    run = conn.exec_driver_sql
    run(f"REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM {who}")
    run(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {schema} FROM {who}")
    run(f"REVOKE ALL ON SCHEMA {schema} FROM {who}")
    run(f"GRANT USAGE ON SCHEMA {schema} TO {who}")
    for table in tables:
        if table in append_only:
            privileges = "SELECT, INSERT"
            grant.append_only.append(table)
        elif table in READ_ONLY_TABLES:
            privileges = "SELECT"
            grant.read_only.append(table)
        elif table in NO_UPDATE_TABLES:
            privileges = "SELECT, INSERT, DELETE"
            grant.no_update.append(table)
        else:
            privileges = "SELECT, INSERT, UPDATE, DELETE"
            grant.read_write.append(table)
        run(f"GRANT {privileges} ON TABLE {schema}.{q(table)} TO {who}")
    run(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {who}")
    # Tables of a later migration: readable and appendable at once, the rest after the grant
    # runs again (a new append-only table is never briefly writable).
    run(f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT SELECT, INSERT ON TABLES TO {who}")
    run(f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT USAGE, SELECT ON SEQUENCES TO {who}")
    if conn.execute(text("SELECT has_schema_privilege(:r, current_schema(), 'CREATE')"),
                    {"r": role}).scalar():
        # PostgreSQL < 15 lets PUBLIC create in schema public; only its owner can take it back.
        raise PrivilegeError(f"the role {role!r} may still create objects in the schema (granted "
                             "to PUBLIC); run REVOKE CREATE ON SCHEMA public FROM PUBLIC as its "
                             "owner")
    return grant

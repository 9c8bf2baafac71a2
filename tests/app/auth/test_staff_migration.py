"""Migration 0006 on a database with staff: existing tokens count as issued when the member was
created (so an old token is expired after the upgrade), nothing else changes."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import text

from app import migrate
from tests.support.dbview import observer_engine


def test_existing_members_get_their_creation_as_token_issue_time(backend, request, tmp_path):
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'm.db'}"
    else:
        server = request.getfixturevalue("pg_server")
        name = server.create_database()
        request.addfinalizer(lambda: server.drop_database(name))
        url = server.url(name)
    migrate.upgrade(url, "0005")
    engine = observer_engine(url)
    created = datetime(2026, 1, 5, 8, 30, tzinfo=UTC)
    stamp = created if backend == "postgres" else created.replace(tzinfo=None)
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO staff_members (name, role, token_hash, created_at) "
            "VALUES ('veteran', 'admin', :hash, :created)"), {"hash": "a" * 64, "created": stamp})
    migrate.upgrade(url, "0006")
    with engine.connect() as connection:
        row = connection.execute(text(
            "SELECT token_issued_at, last_used_at, totp_secret, revoked_at FROM staff_members"
        )).one()
    issued = row[0] if backend == "postgres" else datetime.fromisoformat(str(row[0]))
    assert (issued.astimezone(UTC) if issued.tzinfo else issued.replace(tzinfo=UTC)) == created
    assert row[1:] == (None, None, None)
    migrate.downgrade(url, "0005")
    with engine.connect() as connection:
        assert connection.execute(text("SELECT name FROM staff_members")).scalar_one() == "veteran"
    engine.dispose()

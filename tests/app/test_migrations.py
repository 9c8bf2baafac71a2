"""Migrations: up, down and up again on both databases; the models match the migrations."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from app import migrate
from app.db import import_all_models
from tests.support.dbview import observer_engine


def _tables(url: str) -> set[str]:
    engine = observer_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def _fresh_url(backend: str, request, tmp_path) -> str:  # type: ignore[no-untyped-def]
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'm.db'}"
    server = request.getfixturevalue("pg_server")
    name = server.create_database()
    request.addfinalizer(lambda: server.drop_database(name))
    return server.url(name)


def test_upgrade_downgrade_upgrade(backend, request, tmp_path):
    url = _fresh_url(backend, request, tmp_path)
    migrate.upgrade(url)
    expected = set(import_all_models().metadata.tables)
    assert _tables(url) == expected
    migrate.downgrade(url, "base")
    assert _tables(url) == set()
    migrate.upgrade(url)
    assert _tables(url) == expected
    engine = observer_engine(url)
    assert migrate.is_at_head(engine)
    engine.dispose()


def test_models_and_migrations_agree(backend, request, tmp_path):
    url = _fresh_url(backend, request, tmp_path)
    migrate.upgrade(url)
    engine = observer_engine(url)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diff = compare_metadata(context, import_all_models().metadata)
    engine.dispose()
    assert diff == [], f"run `alembic revision --autogenerate`: {diff}"

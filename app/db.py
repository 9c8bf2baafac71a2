"""Engine, sessions and column types shared by every domain.

SQLite (the pilot default) opens with WAL, synchronous=FULL, foreign keys and a busy timeout, and
every transaction starts with BEGIN IMMEDIATE so concurrent writers queue instead of failing
half-way. PostgreSQL goes through psycopg 3.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Engine, event
from sqlalchemy.types import TypeDecorator
from sqlmodel import Session, SQLModel, create_engine

# A naming convention makes constraint names stable, so Alembic can drop and alter them
# (batch mode on SQLite needs names) and autogenerate finds no spurious differences.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

SQLITE_BUSY_TIMEOUT_MS = 30_000


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend (SQLite stores it naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; store timezone-aware UTC times only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


# Execution option for a connection that only reads: on SQLite its transaction is deferred,
# so it never takes the write lock (in WAL mode it does not block writers either).
READ_ONLY = "wellpanel_read_only"


def make_engine(url: str, *, begin_immediate: bool = True, **kwargs: Any) -> Engine:
    """An engine for `url`. `begin_immediate=False` gives plain deferred SQLite transactions,
    for read-mostly observers (tests) that must not hold the write lock while they look.
    Database errors never carry the statement's parameters (answers, addresses) into a message
    or a traceback: hide_parameters."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30},
            hide_parameters=True, **kwargs
        )
        _configure_sqlite(engine, begin_immediate)
        return engine
    if "poolclass" not in kwargs:
        # At most 30 connections as before, all kept: with overflow connections, every burst past
        # the pool's size opened new connections and closed them on return (a PostgreSQL backend
        # started per request under load). The pool only grows to the concurrency it sees.
        kwargs.setdefault("pool_size", 30)
        kwargs.setdefault("max_overflow", 0)
    return create_engine(url, pool_pre_ping=True, hide_parameters=True, **kwargs)


def _configure_sqlite(engine: Engine, begin_immediate: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # A reader that must not hold the write lock (READ_ONLY) begins a deferred transaction.
        immediate = begin_immediate and not connection.get_execution_options().get(READ_ONLY)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def session_factory(engine: Engine) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as session:
        yield session


def import_all_models() -> type[SQLModel]:
    """Import every domain's tables so SQLModel.metadata is complete (Alembic, tests)."""
    from app import models  # noqa: F401

    return SQLModel

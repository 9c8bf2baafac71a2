"""The tests' engine (tests/support/dbview.py) writes beside a busy app on SQLite.

Reproduces the suite's 'database is locked' of stop 21: the test engine read, the app's
background sender committed, then the test wrote. A plain deferred transaction fails at once
(SQLITE_BUSY_SNAPSHOT); the observer engine re-begins IMMEDIATE and writes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from app.db import make_engine
from tests.support.dbview import observer_engine


def _read_then_write_after_another_commit(test_engine: Engine, app_engine: Engine) -> None:
    with test_engine.connect() as conn, conn.begin():
        assert conn.execute(text("SELECT count(*) FROM t")).scalar_one() == 0
        with app_engine.begin() as other:
            other.execute(text("INSERT INTO t VALUES (1)"))
        conn.execute(text("INSERT INTO t VALUES (2)"))


@pytest.fixture
def engines(tmp_path: Path):  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'x.db'}"
    app_engine = make_engine(url)
    with app_engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
    yield url, app_engine
    app_engine.dispose()


def test_a_plain_deferred_engine_fails_there(engines) -> None:  # type: ignore[no-untyped-def]
    url, app_engine = engines
    plain = make_engine(url, begin_immediate=False)
    with pytest.raises(OperationalError, match="database is locked"):
        _read_then_write_after_another_commit(plain, app_engine)
    plain.dispose()


def test_the_observer_engine_writes_and_keeps_both_rows(engines) -> None:  # type: ignore[no-untyped-def]
    url, app_engine = engines
    observer = observer_engine(url)
    _read_then_write_after_another_commit(observer, app_engine)
    with observer.connect() as conn:
        assert sorted(conn.execute(text("SELECT x FROM t")).scalars()) == [1, 2]
    observer.dispose()


def test_a_savepoint_taken_after_a_read_survives_the_upgrade(engines) -> None:  # type: ignore[no-untyped-def]
    url, app_engine = engines
    observer = observer_engine(url)
    with observer.connect() as conn, conn.begin():
        conn.execute(text("SELECT count(*) FROM t")).scalar_one()
        with app_engine.begin() as other:
            other.execute(text("INSERT INTO t VALUES (1)"))
        nested = conn.begin_nested()
        conn.execute(text("INSERT INTO t VALUES (2)"))
        nested.rollback()  # 'no such savepoint' if the upgrade had dropped it
        conn.execute(text("INSERT INTO t VALUES (3)"))
    with observer.connect() as conn:
        assert sorted(conn.execute(text("SELECT x FROM t")).scalars()) == [1, 3]
    observer.dispose()

"""The tests' own engine on the app's database: it must neither block the app nor fail beside it.

On SQLite the app begins every transaction IMMEDIATE (app/db.py). A test's engine cannot: a test
that reads inside `with Session(engine)` and then calls the app would hold the write lock and
block the app for its whole busy timeout. So the test engine begins deferred. But a deferred
transaction that has read cannot take the write lock once another connection (the app's
background deliverer, a ledger checkpoint) committed after its snapshot: SQLite answers
SQLITE_BUSY_SNAPSHOT, 'database is locked', at once and without waiting. So, before the first
write of a transaction, this engine ends the read part and begins again IMMEDIATE, which waits
for the lock like the app does. Test setup code reads and then writes whole rows, so a snapshot
renewed before its first write loses nothing it relies on.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, event

from app.db import make_engine

# A savepoint counts as a write: it is opened for one, and re-beginning after it would drop it.
_WRITES = ("insert", "update", "delete", "replace", "savepoint")
_WRITING = "wellpanel_test_writing"


def observer_engine(url: str, **kwargs: Any) -> Engine:
    engine = make_engine(url, begin_immediate=False, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "begin", _on_begin)
        event.listen(engine, "before_cursor_execute", _before_execute)
    return engine


def _on_begin(connection: Any) -> None:
    connection.info[_WRITING] = False


def _before_execute(connection: Any, cursor: Any, statement: str, *_: Any) -> None:
    if connection.info.get(_WRITING, True) or not connection.in_transaction():
        return
    if statement.lstrip().lower().startswith(_WRITES):
        connection.info[_WRITING] = True
        cursor.execute("COMMIT")
        cursor.execute("BEGIN IMMEDIATE")

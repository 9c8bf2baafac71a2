"""A variant of the submit server for bench/api.py (``--submit-app
bench.apps.submit_read_commit:app``): the real app, except that the shared rate limiter's
read-only transactions end with COMMIT instead of ROLLBACK.

Why measure it: psycopg 3 forgets every prepared statement of a connection on ROLLBACK (and sends
DEALLOCATE ALL), and the rate limiter rolls back its read on every authenticated request, so
the pooled connections never keep a prepared statement and PostgreSQL parses and plans every
statement of every submission. Measurement only: the app's code is unchanged.
"""

from __future__ import annotations

from sqlmodel import Session

import app.core.ratelimit_store as store
from app.asgi import app


class _CommittingSession(Session):
    def rollback(self) -> None:  # the store rolls back only after a read: same outcome
        self.commit()


store.Session = _CommittingSession  # type: ignore[misc]

__all__ = ["app"]

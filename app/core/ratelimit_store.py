"""Rate-limit counters in the database, so every server process counts against the same limits.

A storage for the `limits` library's moving-window strategy (MovingWindowRateLimiter): one row
per counted hit (``rate_limit_hits``), under a keyed hash of the limit's key (which names the
client IP or target: neither is stored), with the time it leaves every window it can count in.
Taking a hit is a check and an insert in one transaction, serialised per key: on PostgreSQL by a
transaction-level advisory lock on the key, on SQLite by BEGIN IMMEDIATE (every write
transaction). The window is on the real clock, as the limits library's own storages are.

When the database cannot answer, the limit is not enforced for that request (the route will meet
the same outage and answer 503); a rate limiter must never turn an outage into 500s.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from datetime import UTC, datetime

from limits.storage import MovingWindowSupport, Storage
from sqlalchemy import Engine, Index, and_, delete, func, or_, text
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Field, Session, SQLModel, col, select

from app.db import READ_ONLY, UTCDateTime

log = logging.getLogger("wellpanel.ratelimit")

PURGE_EVERY_SECONDS = 60.0


class RateLimitHit(SQLModel, table=True):
    """One counted request of a moving-window limit."""

    __tablename__ = "rate_limit_hits"
    __table_args__ = (Index("ix_rate_limit_hits_key_at", "key", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=64)  # HMAC-SHA256 of the limit's key
    at: datetime = Field(sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime, index=True)


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


class DatabaseStorage(Storage, MovingWindowSupport):
    """A `limits` storage on the app's database (moving window only)."""

    STORAGE_SCHEME = ["wellpanel-db"]

    def __init__(self, engine: Engine, secret: bytes) -> None:
        super().__init__()
        self.engine = engine
        self.reader = engine.execution_options(**{READ_ONLY: True})
        self.secret = secret
        self._purged = 0.0
        self._purge_lock = threading.Lock()

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return SQLAlchemyError

    def _digest(self, key: str) -> str:
        return hmac.new(self.secret, key.encode(), hashlib.sha256).hexdigest()

    # -- the moving window --

    def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        if amount > limit:
            return False
        digest, now = self._digest(key), time.time()
        try:
            with Session(self.engine) as session:
                if session.get_bind().dialect.name == "postgresql":
                    session.exec(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))")  # type: ignore[call-overload]
                                 .bindparams(k=digest))
                used = session.exec(select(func.count()).where(
                    RateLimitHit.key == digest, col(RateLimitHit.at) > _at(now - expiry))).one()
                if used + amount > limit:
                    return False
                session.add_all([RateLimitHit(key=digest, at=_at(now),
                                              expires_at=_at(now + expiry))
                                 for _ in range(amount)])
                session.commit()
        except SQLAlchemyError:
            log.debug("rate-limit counters unavailable; request not limited")
            return True
        self._purge_now_and_then(now)
        return True

    def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        """(time of the oldest hit in the window, hits in the window)."""
        now = time.time()
        try:
            with Session(self.reader) as session:
                oldest, count = session.exec(select(func.min(RateLimitHit.at), func.count())
                                             .where(RateLimitHit.key == self._digest(key),
                                                    col(RateLimitHit.at) > _at(now - expiry))
                                             ).one()
                session.commit()  # ends the read: psycopg forgets prepared statements on ROLLBACK
        except SQLAlchemyError:
            log.debug("rate-limit counters unavailable; request not limited")
            return now, 0
        if not count:
            return now, 0
        return (oldest.timestamp() if oldest is not None else now), int(count)

    def moving_windows(self, windows: list[tuple[str, int]]) -> list[tuple[float, int]]:
        """``get_moving_window`` of several (key, expiry) pairs in one query (the check every
        request makes: an IP's failed authentications per minute and per day)."""
        now = time.time()
        digests = [self._digest(key) for key, _ in windows]
        try:
            with Session(self.reader) as session:
                rows = session.exec(
                    select(RateLimitHit.key, func.min(RateLimitHit.at), func.count())
                    .where(or_(*(and_(col(RateLimitHit.key) == digest,
                                      col(RateLimitHit.at) > _at(now - expiry))
                                 for digest, (_, expiry) in zip(digests, windows, strict=True))))
                    .group_by(col(RateLimitHit.key))).all()
                session.commit()  # ends the read: psycopg forgets prepared statements on ROLLBACK
        except SQLAlchemyError:
            log.debug("rate-limit counters unavailable; request not limited")
            rows = []
        found = {key: (oldest.timestamp(), int(count)) for key, oldest, count in rows}
        return [found.get(digest, (now, 0)) for digest in digests]

    def _purge_now_and_then(self, now: float) -> None:
        """Drop hits no window counts any more, at most once a minute per process."""
        with self._purge_lock:
            if now - self._purged < PURGE_EVERY_SECONDS:
                return
            self._purged = now
        try:
            with Session(self.engine) as session:
                session.exec(delete(RateLimitHit).where(  # type: ignore[call-overload]
                    col(RateLimitHit.expires_at) < _at(now)))
                session.commit()
        except SQLAlchemyError:
            log.warning("could not purge old rate-limit hits")

    # -- the rest of the Storage interface (other strategies; not used by the middleware) --

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        raise NotImplementedError("wellpanel's database storage supports the moving window only")

    def get(self, key: str) -> int:
        return self.get_moving_window(key, 0, 86400)[1]

    def get_expiry(self, key: str) -> float:
        return time.time()

    def check(self) -> bool:
        try:
            with Session(self.reader) as session:
                session.exec(select(1)).one()  # type: ignore[call-overload]
            return True
        except SQLAlchemyError:
            return False

    def reset(self) -> int | None:
        with Session(self.engine) as session:
            result = session.exec(delete(RateLimitHit))  # type: ignore[call-overload]
            session.commit()
        return int(result.rowcount)

    def clear(self, key: str) -> None:
        with Session(self.engine) as session:
            session.exec(delete(RateLimitHit).where(  # type: ignore[call-overload]
                col(RateLimitHit.key) == self._digest(key)))
            session.commit()

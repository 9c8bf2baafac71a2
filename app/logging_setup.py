"""Structured (JSON) logs. Answers and contact details are never passed to a logger.

Three guards keep them out even at DEBUG:
- SQLAlchemy's engine and pool loggers stay at WARNING whatever the root level: at INFO they
  would print every statement with its parameters (addresses, answers).
- uvicorn's access log stays off: it prints raw paths, and a magic link's path is a token. The
  app logs each request itself with the route template instead (app/ops/metrics.py).
- The formatter masks anything shaped like an email address or a magic-link path, and the
  `[parameters: ...]` line SQLAlchemy puts into a database error's traceback, as a last line of
  defence against a careless log call (engines are made with hide_parameters, app/db.py).

During an outage the same line comes from every request: RepeatLimiter lets the first few of a
kind through per minute and then one line saying how many it held back, so a database that is
gone for a while costs a bounded number of lines, not one (or a traceback) per request.

Each process configures itself: the API's workers in app/asgi.py, the CLI's commands (the
scheduler) in app/cli.py.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

from pythonjsonlogger.json import JsonFormatter

QUIET = {"sqlalchemy.engine": logging.WARNING, "sqlalchemy.pool": logging.WARNING,
         "uvicorn.access": logging.WARNING, "httpx": logging.WARNING,
         "httpcore": logging.WARNING, "mail.log": logging.WARNING,
         "apscheduler.executors": logging.WARNING}  # two lines a tick, saying nothing
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
MAGIC_PATH = re.compile(r"(/p/login/)(?!\{token\})[^\s\"'?/]+")  # not the route template
SQL_PARAMETERS = re.compile(r"\[parameters: [^\n]*")
FIELDS = "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s"  # process: which worker


def redact(text: str) -> str:
    return MAGIC_PATH.sub(r"\1[token]", EMAIL.sub("[email]", text))


def hide_sql_parameters(text: str) -> str:
    return SQL_PARAMETERS.sub("[parameters: hidden]", text)


class RedactingJsonFormatter(JsonFormatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))

    def formatException(self, ei):  # type: ignore[no-untyped-def]  # noqa: N802 - logging's name
        return hide_sql_parameters(super().formatException(ei))


class RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))

    def formatException(self, ei):  # type: ignore[no-untyped-def]  # noqa: N802 - logging's name
        return hide_sql_parameters(super().formatException(ei))


class RepeatLimiter(logging.Filter):
    """Warnings and errors: at most `burst` records of one kind (logger, level, message
    template, exception type) per `window` seconds; the first one let through after a quiet
    spell carries `repeats_suppressed`, the number held back."""

    MAX_KINDS = 1000  # memory stays bounded whatever is logged

    def __init__(self, burst: int = 5, window: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.burst, self.window, self.clock = burst, window, clock
        self._kinds: dict[tuple[object, ...], list[float | int]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True  # per-request lines are the access log: one per request by design
        error = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else None
        kind = (record.name, record.levelno, str(record.msg), error)
        now = self.clock()
        with self._lock:
            state = self._kinds.get(kind)
            if state is None or now - state[0] >= self.window:
                held_back = int(state[2]) if state is not None else 0
                if len(self._kinds) >= self.MAX_KINDS:
                    self._kinds.clear()
                self._kinds[kind] = [now, 1, 0]
                if held_back:
                    record.repeats_suppressed = held_back
                return True
            if state[1] < self.burst:
                state[1] += 1
                return True
            state[2] += 1
            return False


def configure_logging(level: str = "INFO", json_format: bool = True,
                      stream: TextIO | None = None) -> logging.Handler:
    handler = logging.StreamHandler(stream or sys.stderr)
    if json_format:
        handler.setFormatter(RedactingJsonFormatter(
            FIELDS, rename_fields={"asctime": "time", "levelname": "level"}))
    else:
        handler.setFormatter(RedactingFormatter(FIELDS))
    handler.addFilter(RepeatLimiter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name, quiet in QUIET.items():
        logging.getLogger(name).setLevel(quiet)
    return handler

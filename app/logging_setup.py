"""Structured (JSON) logs. Answers and contact details are never passed to a logger.

Three guards keep them out even at DEBUG:
- SQLAlchemy's engine and pool loggers stay at WARNING whatever the root level: at INFO they
  would print every statement with its parameters (addresses, answers).
- uvicorn's access log stays off: it prints raw paths, and a magic link's path is a token. The
  app logs each request itself with the route template instead (app/ops/metrics.py).
- The formatter masks anything shaped like an email address or a magic-link path, and the
  `[parameters: ...]` line SQLAlchemy puts into a database error's traceback, as a last line of
  defence against a careless log call.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import TextIO

from pythonjsonlogger.json import JsonFormatter

QUIET = {"sqlalchemy.engine": logging.WARNING, "sqlalchemy.pool": logging.WARNING,
         "uvicorn.access": logging.WARNING, "httpx": logging.WARNING,
         "httpcore": logging.WARNING, "mail.log": logging.WARNING}
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
MAGIC_PATH = re.compile(r"(/p/login/)(?!\{token\})[^\s\"'?/]+")  # not the route template
SQL_PARAMETERS = re.compile(r"\[parameters: [^\n]*")
FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s"


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


def configure_logging(level: str = "INFO", json_format: bool = True,
                      stream: TextIO | None = None) -> logging.Handler:
    handler = logging.StreamHandler(stream or sys.stderr)
    if json_format:
        handler.setFormatter(RedactingJsonFormatter(
            FIELDS, rename_fields={"asctime": "time", "levelname": "level"}))
    else:
        handler.setFormatter(RedactingFormatter(FIELDS))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name, quiet in QUIET.items():
        logging.getLogger(name).setLevel(quiet)
    return handler

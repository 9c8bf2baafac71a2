"""Backup and restore of the whole database.

SQLite goes through sqlite3's online backup API: a consistent copy of a live database (WAL
included) while the app keeps writing. PostgreSQL goes through `pg_dump -Fc` and `pg_restore`
(found on PATH or in /usr/lib/postgresql/<version>/bin, newest first: pg_dump must be at least
as new as the server). The password travels in PGPASSWORD, never on a command line.

A backup is written to a temporary name and renamed when complete, so a failed one never leaves
a file that looks good; both are created 0600 (owner only), whatever the umask. A restore
refuses a database that already has tables unless forced, and restores PostgreSQL in a single
transaction, so a failure leaves the target as it was.
"""

from __future__ import annotations

import glob
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, func, inspect, select, table
from sqlalchemy.engine import URL, make_url

from app.core.errors import AppError

SQLITE_MAGIC = b"SQLite format 3\x00"
PG_DUMP_MAGIC = b"PGDMP"
TOOL_TIMEOUT = 3600
BACKUP_MODE = 0o600  # owner read/write only: backups and their partial files


class BackupError(AppError):
    code = "backup_failed"


@dataclass
class Outcome:
    path: Path
    tables: dict[str, int]  # table -> rows


def backup(database_url: str, out: Path, *, force: bool = False) -> Outcome:
    """Write a backup of the database at `database_url` to `out`."""
    if out.exists() and not force:
        raise BackupError(f"{out} exists; choose a new file or pass --force to replace it.",
                          code="exists")
    if not out.parent.is_dir():
        raise BackupError(f"{out.parent} is not a directory.", code="bad_path")
    partial = out.with_name(f".{out.name}.partial")
    partial.unlink(missing_ok=True)
    try:
        _create_private(partial)  # the tools write into it and keep its mode
        if _is_sqlite(database_url):
            _sqlite_backup(_sqlite_path(database_url, must_exist=True), partial)
        else:
            _run_tool("pg_dump", ["--format=custom", "--no-owner", "--no-privileges",
                                  f"--file={partial}"], database_url)
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)
    return Outcome(out, table_counts(database_url))


def _create_private(path: Path) -> None:
    """An empty file only its owner can read and write (0600), whatever the umask: a backup
    holds every participant's contact details and answers."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, BACKUP_MODE)
    try:
        os.fchmod(fd, BACKUP_MODE)  # os.open's mode is narrowed by the umask, never widened
    finally:
        os.close(fd)


def restore(database_url: str, source: Path, *, force: bool = False) -> Outcome:
    """Restore `source` (a file written by `backup`) into the database at `database_url`."""
    kind = backup_kind(source)
    wanted = "sqlite" if _is_sqlite(database_url) else "postgresql"
    if kind != wanted:
        raise BackupError(f"{source} is a {kind} backup, but the database is {wanted}.",
                          code="wrong_kind")
    existing = list(table_counts(database_url, missing_ok=True))
    if existing and not force:
        raise BackupError(
            f"The target database is not empty ({len(existing)} tables, e.g. {existing[0]}); "
            "restore into a fresh database, or pass --force to replace its contents.",
            code="target_not_empty")
    if kind == "sqlite":
        _sqlite_restore(source, _sqlite_path(database_url, must_exist=False))
    else:
        _check_pg_dump(source)
        args = ["--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction"]
        if existing:
            args += ["--clean", "--if-exists"]
        _run_tool("pg_restore", [*args, str(source)], database_url, flag="--dbname")
    return Outcome(source, table_counts(database_url))


@dataclass
class BackupFacts:
    """What a backup holds, read without restoring it: enough to refuse it before anything in
    the target changes (another study, a newer schema, a ledger behind a checkpoint)."""

    kind: str  # sqlite | postgresql
    revision: str | None  # alembic_version
    studies: set[str]
    ledger_first: str | None  # row 1's hash: which ledger this is
    head: tuple[int, str] | None  # the newest row (seq, hash)
    hashes: dict[int, str]  # the rows asked for (seq -> hash)


def inspect_backup(source: Path, seqs: set[int] | None = None) -> BackupFacts:
    """Read a backup's schema revision, studies and ledger head (and the hashes of the rows
    `seqs`) straight from the file: SQLite read-only, a pg_dump through `pg_restore -f -`."""
    kind = backup_kind(source)
    wanted = set(seqs or ()) | {1}
    if kind == "sqlite":
        return _inspect_sqlite(source, wanted)
    _check_pg_dump(source)
    revision = next(iter(_pg_copy_rows(source, "alembic_version", ["version_num"])), [None])[0]
    studies = {row[0] for row in _pg_copy_rows(source, "studies", ["key"])}
    hashes: dict[int, str] = {}
    head: tuple[int, str] | None = None
    for seq_text, row_hash in _pg_copy_rows(source, "audit_events", ["id", "row_hash"]):
        seq = int(seq_text)  # type: ignore[arg-type]
        if head is None or seq > head[0]:
            head = (seq, str(row_hash))
        if seq in wanted:
            hashes[seq] = str(row_hash)
    return BackupFacts(kind, revision, studies, hashes.get(1), head, hashes)


def _inspect_sqlite(source: Path, wanted: set[int]) -> BackupFacts:
    try:
        with closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as db:
            names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            revision = (db.execute("SELECT version_num FROM alembic_version").fetchone() or
                        [None])[0] if "alembic_version" in names else None
            studies = ({r[0] for r in db.execute("SELECT key FROM studies")}
                       if "studies" in names else set())
            head, hashes = None, {}
            if "audit_events" in names:
                row = db.execute("SELECT id, row_hash FROM audit_events ORDER BY id DESC "
                                 "LIMIT 1").fetchone()
                head = (int(row[0]), str(row[1])) if row else None
                ordered = sorted(wanted)
                for start in range(0, len(ordered), 500):
                    chunk = ordered[start:start + 500]
                    marks = ",".join("?" * len(chunk))
                    hashes.update({int(i): str(h) for i, h in db.execute(
                        f"SELECT id, row_hash FROM audit_events WHERE id IN ({marks})",  # noqa: S608
                        chunk)})
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{source} is damaged: {exc}.", code="corrupt") from exc
    return BackupFacts("sqlite", revision, studies, hashes.get(1), head, hashes)


def _pg_copy_rows(source: Path, table_name: str, columns: list[str]) -> Iterator[list[str | None]]:
    """The rows of one table in a custom-format dump (its COPY data, streamed), as the text of
    the named columns; nothing when the dump has no such table."""
    process = subprocess.Popen(  # noqa: S603
        [str(find_tool("pg_restore")), "--data-only", f"--table={table_name}", "--file=-",
         str(source)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    try:
        positions: list[int] | None = None
        for line in process.stdout:
            if positions is None:
                if line.startswith("COPY ") and " FROM stdin" in line:
                    names = [c.strip().strip('"') for c in
                             line[line.index("(") + 1:line.index(")")].split(",")]
                    positions = [names.index(c) for c in columns]
                continue
            if line.startswith("\\."):
                break
            cells = line.rstrip("\n").split("\t")
            yield [None if cells[i] == "\\N" else cells[i] for i in positions]
    finally:
        process.stdout.close()
        process.kill()
        process.wait()


def backup_kind(source: Path) -> str:
    """'sqlite' or 'postgresql', from the file's first bytes; a clear error otherwise."""
    if not source.is_file():
        raise BackupError(f"{source}: no such backup file.", code="not_found", status_code=404)
    with source.open("rb") as f:
        head = f.read(len(SQLITE_MAGIC))
    if head.startswith(SQLITE_MAGIC):
        return "sqlite"
    if head.startswith(PG_DUMP_MAGIC):
        return "postgresql"
    raise BackupError(f"{source} is not a wellpanel backup (neither a SQLite database nor a "
                      "pg_dump custom-format file), or it is damaged.", code="corrupt")


def table_counts(database_url: str, *, missing_ok: bool = False) -> dict[str, int]:
    """Rows per table; {} for a SQLite file that does not exist yet (when `missing_ok`)."""
    if _is_sqlite(database_url) and not _sqlite_path(database_url, must_exist=False).exists():
        if missing_ok:
            return {}
        raise BackupError(f"{_sqlite_path(database_url, must_exist=False)} does not exist.",
                          code="not_found", status_code=404)
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            names = sorted(inspect(connection).get_table_names())
            return {name: connection.execute(select(func.count()).select_from(table(name)))
                    .scalar_one() for name in names}
    finally:
        engine.dispose()


def _is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def _sqlite_path(url: str, *, must_exist: bool) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:":
        raise BackupError("An in-memory SQLite database cannot be backed up or restored.",
                          code="bad_path")
    path = Path(database)
    if must_exist and not path.is_file():
        raise BackupError(f"{path}: no such database file.", code="not_found", status_code=404)
    return path


def _sqlite_backup(source: Path, target: Path) -> None:
    with closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as src, \
            closing(sqlite3.connect(target)) as dst:
        src.backup(dst)
        # A backup is one self-contained file: no -wal beside it.
        dst.execute("PRAGMA journal_mode=DELETE")


def _sqlite_restore(source: Path, target: Path) -> None:
    try:
        with closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as src:
            check = src.execute("PRAGMA integrity_check").fetchone()
            if not check or check[0] != "ok":
                raise BackupError(f"{source} is damaged: {check[0] if check else 'unreadable'}.",
                                  code="corrupt")
            with closing(sqlite3.connect(target)) as dst:
                src.backup(dst)  # replaces the target's pages in one step
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{source} is damaged: {exc}.", code="corrupt") from exc


def _check_pg_dump(source: Path) -> None:
    """pg_restore --list reads the whole table of contents: a truncated file fails here."""
    result = subprocess.run([str(find_tool("pg_restore")), "--list", str(source)],  # noqa: S603
                            capture_output=True, text=True, timeout=TOOL_TIMEOUT, check=False)
    if result.returncode != 0:
        raise BackupError(f"{source} is damaged: {_last_line(result.stderr)}", code="corrupt")


def find_tool(name: str) -> Path:
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version, reverse=True):
        if Path(folder, name).is_file():
            return Path(folder, name)
    found = shutil.which(name)
    if found:
        return Path(found)
    raise BackupError(f"{name} not found on PATH or in /usr/lib/postgresql/*/bin; install the "
                      "PostgreSQL client (Debian: apt-get install postgresql-client).",
                      code="tool_missing")


def _version(folder: str) -> tuple[int, ...]:
    part = Path(folder).parent.name
    return tuple(int(p) for p in part.split(".") if p.isdigit()) or (0,)


def _run_tool(name: str, args: list[str], database_url: str, flag: str = "--dbname") -> None:
    url: URL = make_url(database_url)
    env = os.environ | ({"PGPASSWORD": url.password} if url.password else {})
    libpq = url.set(drivername="postgresql", password=None).render_as_string(
        hide_password=False)
    result = subprocess.run([str(find_tool(name)), *args, f"{flag}={libpq}"],  # noqa: S603
                            env=env,
                            capture_output=True, text=True, timeout=TOOL_TIMEOUT, check=False)
    if result.returncode != 0:
        raise BackupError(f"{name} failed: {_last_line(result.stderr)}", code=f"{name}_failed",
                          status_code=500)


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"

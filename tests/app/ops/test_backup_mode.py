"""Backups are readable by their owner only (#13 part 6): the file and its partial file while it
is written are 0600 on both databases, whatever the umask, also when --force replaces a file that
was world-readable."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.ops import backup as ops


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The most permissive umask: without an explicit mode every file would be 0666."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def partial_modes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The mode of the partial file at the moment the database tool writes into it."""
    seen: list[int] = []
    sqlite_backup, run_tool = ops._sqlite_backup, ops._run_tool

    def watch_sqlite(source: Path, target: Path) -> None:
        seen.append(_mode(target))
        sqlite_backup(source, target)

    def watch_tool(name: str, args: list[str], *rest: Any, **kw: Any) -> None:
        if name == "pg_dump":
            target = Path(next(a for a in args if a.startswith("--file=")).split("=", 1)[1])
            seen.append(_mode(target))
        run_tool(name, args, *rest, **kw)

    monkeypatch.setattr(ops, "_sqlite_backup", watch_sqlite)
    monkeypatch.setattr(ops, "_run_tool", watch_tool)
    return seen


def test_a_backup_is_written_0600_whatever_the_umask(db_url, engine, tmp_path, open_umask,
                                                     partial_modes) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "wellpanel.backup"
    result = ops.backup(db_url, out)
    assert result.tables  # a real backup of the migrated database
    assert _mode(out) == 0o600
    assert partial_modes == [0o600]
    assert not list(tmp_path.glob(".*partial*"))

    # a world-readable file replaced with --force becomes private too
    out.chmod(0o644)
    ops.backup(db_url, out, force=True)
    assert _mode(out) == 0o600
    assert partial_modes == [0o600, 0o600]
    assert ops.backup_kind(out) in ("sqlite", "postgresql")  # still a readable backup


def test_a_left_over_partial_file_is_replaced_by_a_private_one(db_url, engine, tmp_path,
                                                              open_umask, partial_modes) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "nightly.backup"
    stale = out.with_name(f".{out.name}.partial")
    stale.write_bytes(b"half a backup from a crash")
    stale.chmod(0o666)
    ops.backup(db_url, out)
    assert partial_modes == [0o600] and _mode(out) == 0o600
    assert not stale.exists()

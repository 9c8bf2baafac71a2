"""Clean failures (issue 16 part 8): every output-path problem is one line and exit 2, SIGTERM
and SIGINT remove the partial output, nothing half-written is readable by others, and strict
SPSS/Stata files carry no export time. On SQLite and PostgreSQL; the signals hit a real
`wellpanel` process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pyreadstat
import pytest
from sqlmodel import Session, func, select
from typer.testing import CliRunner

from app.audit.models import AuditEvent
from app.export.jobs import zip_package
from app.export.service import ExportError, ExportOptions, export_panel

runner = CliRunner()
NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".partial-" in p.name]


def export_rows(engine) -> int:  # type: ignore[no-untyped-def]
    with Session(engine) as s:
        return s.exec(select(func.count()).select_from(AuditEvent)
                      .where(AuditEvent.action == "export.panel")).one()


@pytest.fixture
def small(seeder):  # type: ignore[no-untyped-def]
    seeder.populate(12, 2, seed=3)
    seeder.flush()
    return seeder


def env(db_url: str) -> dict[str, str]:
    return os.environ | {"WELLPANEL_DATABASE_URL": db_url, "WELLPANEL_ENVIRONMENT": "test",
                         "WELLPANEL_SECRET_KEY": "test-secret-0123456789"}


WELLPANEL = str(Path(sys.executable).with_name("wellpanel"))


# ---- output paths -----------------------------------------------------------------------------

def bad_paths(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    afile = tmp_path / "a-file"
    afile.write_text("x", "utf-8")
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("keep", "utf-8")
    cases = {
        "is a file": (afile, "exists and is not a directory"),
        "not empty": (full, "already exists and is not empty"),
        "parent is a file": (afile / "sub" / "out", "a-file is not a directory"),
        "name too long": (tmp_path / ("x" * 300), "File name too long"),
        # even root cannot create a directory in /proc
        "cannot be created": (Path("/proc/wellpanel-export-test/out"),
                              "cannot write the export to /proc/wellpanel-export-test/out"),
        "newline in the name": (afile / "two\nlines", "two\\nlines"),
    }
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        cases["not writable"] = (locked / "out", "locked is not writable")
    return cases


def test_output_path_problems_are_one_line_with_exit_2(cli, small, engine, tmp_path):
    for case, (out, message) in bad_paths(tmp_path).items():
        result = runner.invoke(cli, ["export", "panel", "--out", str(out)])
        assert result.exit_code == 2, (case, result.output)
        assert isinstance(result.exception, SystemExit), (case, result.exception)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (case, result.output)
        assert message in lines[0], (case, lines[0])
        assert "Traceback" not in result.output
    assert (tmp_path / "full" / "keep.txt").read_text("utf-8") == "keep"
    assert not (tmp_path / "a-file" / "sub").exists() and not leftovers(tmp_path)
    assert not Path("/proc/wellpanel-export-test").exists()
    assert export_rows(engine) == 0


def test_a_nul_byte_in_the_path_is_refused(engine, small, tmp_path):
    with pytest.raises(ExportError) as err:
        export_panel(engine, ExportOptions(out=f"{tmp_path}/a\0b"))  # type: ignore[arg-type]
    assert err.value.code == "output_unwritable" and "NUL" in err.value.message
    assert not leftovers(tmp_path) and export_rows(engine) == 0


@pytest.mark.parametrize("backend", ["sqlite"])  # the process, not the database, is tested
def test_the_real_command_exits_2_without_a_traceback(db_url, small, tmp_path):
    afile = tmp_path / "a-file"
    afile.write_text("x", "utf-8")
    for out in (afile, afile / "deeper" / "out"):
        proc = subprocess.run([WELLPANEL, "export", "panel", "--out", str(out)],
                              env=env(db_url), stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=300, check=False)
        assert proc.returncode == 2, proc.stderr
        assert proc.stdout == b""
        lines = proc.stderr.decode().strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr


def test_a_directory_that_appears_during_the_export_is_not_overwritten(
        engine, small, tmp_path):
    out = tmp_path / "out"

    def squatter(done: int, total: int) -> None:  # someone else writes there meanwhile
        if not out.exists():
            out.mkdir()
            (out / "theirs.txt").write_text("theirs", "utf-8")

    with pytest.raises(ExportError) as err:
        export_panel(engine, ExportOptions(out=out), progress=squatter, chunk_size=20)
    assert err.value.code == "output_unwritable"
    assert "nothing was written" in err.value.message and "\n" not in err.value.message
    assert [p.name for p in out.iterdir()] == ["theirs.txt"]
    assert not leftovers(tmp_path) and export_rows(engine) == 0


# ---- signals ----------------------------------------------------------------------------------

def wait_for_partial(parent: Path, proc: subprocess.Popen[bytes], name: str) -> Path:
    """The export's temporary directory once ``name`` is being written into it."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for partial in parent.glob(".out.partial-*"):
            if (partial / name).exists():
                return partial
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
        time.sleep(0.001)
    raise AssertionError(f"no {name} appeared in a partial export")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_export_removes_the_partial_output(db_url, engine, population, tmp_path,
                                                        signum):
    parent = tmp_path / "exports"
    parent.mkdir()
    out = parent / "out"
    proc = subprocess.Popen([WELLPANEL, "export", "panel", "--out", str(out), "--format", "dta",
                             "--no-progress"], env=env(db_url), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        partial = wait_for_partial(parent, proc, "responses.csv")
        proc.send_signal(signal.SIGSTOP)  # hold it mid-export while we look
        # half-written, and readable by nobody but the owner
        assert (partial.stat().st_mode & 0o777) == 0o700
        assert any(partial.iterdir())
        proc.send_signal(signum)
        proc.send_signal(signal.SIGCONT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signum, stderr
    lines = stderr.decode().strip().splitlines()
    assert lines == [f"error: interrupted by {signal.Signals(signum).name}: the partial export "
                     "was removed, nothing was written"], stderr
    assert stdout == b""
    assert list(parent.iterdir()) == []  # neither the package nor its partial directory
    assert export_rows(engine) == 0


def test_a_finished_package_is_private_to_its_owner(engine, small, tmp_path):
    out = tmp_path / "out"
    export_panel(engine, ExportOptions(out=out))
    assert (out.stat().st_mode & 0o777) == 0o700


def test_the_jobs_zip_is_never_readable_by_others(tmp_path):
    package = tmp_path / "package"
    package.mkdir()
    (package / "datapackage.json").write_text("{}", "utf-8")
    target = tmp_path / "job.zip"
    old = os.umask(0o022)  # a usual umask would give 0644
    try:
        zip_package(package, target)
    finally:
        os.umask(old)
    assert (target.stat().st_mode & 0o777) == 0o600
    assert zipfile.ZipFile(target).namelist() == ["datapackage.json"]


# ---- no export time in strict files -----------------------------------------------------------

@pytest.mark.parametrize("fmt", ["sav", "dta"])
def test_strict_stat_files_carry_no_export_time(engine, population, tmp_path, fmt):
    # the research export needs enough participants to be k-anonymous on its enrollment weeks
    read = pyreadstat.read_sav if fmt == "sav" else pyreadstat.read_dta
    strict = tmp_path / "strict"
    export_panel(engine, ExportOptions(out=strict, fmt=fmt), now=NOW)
    research = tmp_path / "research"
    export_panel(engine, ExportOptions(out=research, fmt=fmt, profile="research", dua="DUA-7"),
                 now=NOW)
    for name in ("participants", "responses", "usage", "panel"):
        _, meta = read(str(strict / f"{name}.{fmt}"), metadataonly=True)
        assert meta.creation_time == datetime(1970, 1, 1), (name, meta.creation_time)
        assert meta.modification_time == datetime(1970, 1, 1)
        header = (strict / f"{name}.{fmt}").read_bytes()[:512]
        assert b"1970" in header or b"01 Jan 70" in header
        # the research profile says when it was made: the export's own time, as its descriptor
        _, meta = read(str(research / f"{name}.{fmt}"), metadataonly=True)
        expected = NOW.replace(tzinfo=None, second=0) if fmt == "dta" else NOW.replace(
            tzinfo=None)
        assert meta.creation_time == expected, (name, meta.creation_time)
    # the files still read back whole
    df, _ = read(str(strict / f"participants.{fmt}"))
    assert len(df) > 0 and "pid" in df.columns

"""Bad input and failures: a clear error, nothing left behind, nothing in the audit ledger."""

from __future__ import annotations

import os
import random
from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import Session, func, select

from app.audit.models import AuditEvent
from app.export import service, writers
from app.export.service import ExportError, ExportOptions, export_panel
from tests.app.export.seed import START


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".partial-" in p.name]


def audit_rows(engine) -> int:  # type: ignore[no-untyped-def]
    with Session(engine) as s:
        return s.exec(select(func.count()).select_from(AuditEvent)
                      .where(AuditEvent.action == "export.panel")).one()


@pytest.fixture
def small(seeder, tmp_path):  # type: ignore[no-untyped-def]
    seeder.populate(12, 2, seed=3)
    seeder.flush()
    return seeder


CASES = [
    ({"fmt": "xlsx"}, "unknown_format", "unknown format 'xlsx'"),
    ({"profile": "open"}, "unknown_profile", "unknown profile 'open'"),
    ({"profile": "research"}, "dua_required", "needs --dua"),
    ({"profile": "research", "dua": "   "}, "dua_required", "needs --dua"),
    ({"include_free_text": True, "profile": "research", "dua": "D-1"}, "free_text_needs_items",
     "--items"),
    # free text never leaves in the strict profile, with or without item answers
    ({"include_free_text": True}, "free_text_not_in_strict", "never released in the strict"),
    ({"include_free_text": True, "include_items": True}, "free_text_not_in_strict",
     "never released in the strict"),
    # and in the research profile only under a data-use agreement
    ({"include_free_text": True, "include_items": True, "profile": "research"}, "dua_required",
     "needs --dua"),
]


@pytest.mark.parametrize(("options", "code", "message"), CASES)
def test_bad_options_are_refused_before_anything_is_written(
        engine, small, tmp_path, options, code, message):
    out = tmp_path / "out"
    with pytest.raises(ExportError) as err:
        export_panel(engine, ExportOptions(out=out, **options))
    assert err.value.code == code and message in err.value.message
    assert not out.exists() and not leftovers(tmp_path)
    assert audit_rows(engine) == 0


def test_unreadable_key_files(engine, small, tmp_path):
    cases = {
        tmp_path / "missing.key": "cannot read the key file",
        tmp_path: "cannot read the key file",  # a directory
    }
    short = tmp_path / "short.key"
    short.write_text("abc\n", "utf-8")
    cases[short] = "at least 16"
    empty = tmp_path / "empty.key"
    empty.write_bytes(b"")
    cases[empty] = "holds 0 bytes"
    if os.geteuid() != 0:  # root reads anything
        locked = tmp_path / "locked.key"
        locked.write_text("x" * 40, "utf-8")
        locked.chmod(0)
        cases[locked] = "cannot read the key file"
    for key_file, message in cases.items():
        out = tmp_path / "out"
        with pytest.raises(ExportError) as err:
            export_panel(engine, ExportOptions(out=out, key_file=key_file))
        assert err.value.code == "key_file_unreadable" and message in err.value.message
        assert not out.exists()
    assert not leftovers(tmp_path)


def test_an_existing_non_empty_directory_is_never_overwritten(engine, small, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("keep me", "utf-8")
    with pytest.raises(ExportError) as err:
        export_panel(engine, ExportOptions(out=out))
    assert err.value.code == "output_exists" and "not empty" in err.value.message
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    afile = tmp_path / "a-file"
    afile.write_text("x", "utf-8")
    with pytest.raises(ExportError, match="not a directory"):
        export_panel(engine, ExportOptions(out=afile))
    # an existing empty directory is fine, and so are missing parents
    empty = tmp_path / "empty"
    empty.mkdir()
    export_panel(engine, ExportOptions(out=empty))
    assert (empty / "datapackage.json").is_file()
    deep = tmp_path / "a" / "b" / "c"
    export_panel(engine, ExportOptions(out=deep))
    assert (deep / "participants.csv").is_file()
    assert not leftovers(tmp_path)


def test_k_that_cannot_be_reached_is_refused(engine, seeder, tmp_path):
    rng = random.Random(1)
    for i in range(3):  # fewer participants than k = 5
        seeder.participant(rng, enrolled_at=START + timedelta(days=i), waves=1)
    seeder.flush()
    out = tmp_path / "x" / "out"
    with pytest.raises(ExportError) as err:
        export_panel(engine, ExportOptions(out=out))
    assert err.value.code == "k_anonymity_unreachable"
    assert "k=5" in err.value.message and "Nothing was written" in err.value.message
    assert not out.exists() and not (tmp_path / "x").exists() and not leftovers(tmp_path)
    assert audit_rows(engine) == 0


def test_unknown_study(engine, small, tmp_path):
    with pytest.raises(ExportError) as err:
        export_panel(engine, ExportOptions(out=tmp_path / "o", study="nope"))
    assert err.value.code == "study_not_found" and "keep4o-panel" in err.value.message


@pytest.mark.parametrize("stage", ["stream", "convert", "descriptor"])
def test_a_failure_mid_export_leaves_no_partial_package(engine, small, tmp_path, monkeypatch,
                                                        stage):
    calls = {"n": 0}

    def boom(*a, **k):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        raise OSError("disk full")

    if stage == "stream":
        real = writers.TableWriter.write

        def write(self, columns, n=None):  # type: ignore[no-untyped-def]
            calls["n"] += 1
            if calls["n"] > 2:
                raise OSError("disk full")
            return real(self, columns, n)

        monkeypatch.setattr(writers.TableWriter, "write", write)
    elif stage == "convert":
        monkeypatch.setattr(writers, "write_stat_file", boom)
    else:
        monkeypatch.setattr(service, "_write_descriptor", boom)
    out = tmp_path / "p" / "q" / "out"
    with pytest.raises(ExportError, match="disk full") as err:  # one line, not a traceback
        export_panel(engine, ExportOptions(out=out, fmt="dta"), chunk_size=50)
    assert err.value.code == "output_unwritable" and "nothing was written" in err.value.message
    assert calls["n"] > 0
    assert not (tmp_path / "p").exists() and not leftovers(tmp_path)
    assert audit_rows(engine) == 0


def test_a_failed_audit_write_removes_the_export(engine, small, tmp_path, monkeypatch):
    monkeypatch.setattr(service, "_audit", lambda *a, **k: (_ for _ in ()).throw(
        RuntimeError("ledger locked")))
    out = tmp_path / "out"
    with pytest.raises(ExportError) as err:
        export_panel(engine, ExportOptions(out=out))
    assert err.value.code == "audit_failed" and not out.exists() and not leftovers(tmp_path)

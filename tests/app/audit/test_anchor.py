"""The anchored ledger: signed checkpoints outside the database catch what the chain alone
cannot, when someone with the app's own database credentials rewrites the ledger. Each drill
runs on SQLite and PostgreSQL, in raw SQL with the append-only triggers switched off."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from app.audit import anchor as anchoring
from app.audit import checks
from app.audit import service as audit
from app.config import Settings
from tests.support import tamper

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def ledger_settings(db_url, tmp_path) -> Settings:
    return Settings(database_url=db_url, environment="test", secret_key="test-secret-0123456789",
                    ledger_dir=tmp_path / "ledger", ledger_checkpoint_rows=5,
                    ledger_checkpoint_minutes=60, log_json=False)


def _append(session: Session, n: int, start: int = 0, at: datetime = T0) -> None:
    for i in range(start, start + n):
        audit.append(session, actor="test", action="thing.happen", target=f"t:{i}",
                     details={"i": i}, now=at)
    session.commit()


def _checkpoint(settings: Settings, engine: Engine, at: datetime = T0) -> anchoring.Entry:
    with engine.connect() as connection:
        entry = anchoring.Anchor(settings).checkpoint(connection, now=at)
    assert entry is not None
    return entry


def _verify(settings: Settings, session: Session, full: bool = False):  # type: ignore[no-untyped-def]
    session.rollback()  # a fresh snapshot after the tampering
    return checks.verify(session, checks.load_view(settings), full=full)


@pytest.fixture
def anchored(ledger_settings, engine, session) -> Settings:
    """12 rows with checkpoints at rows 5 and 10."""
    _append(session, 5)
    _checkpoint(ledger_settings, engine)
    _append(session, 5, start=5)
    _checkpoint(ledger_settings, engine)
    _append(session, 2, start=10)
    return ledger_settings


def test_intact_ledger_verifies_against_its_checkpoints(anchored, session):
    report = _verify(anchored, session)
    assert report.ok and report.anchored and report.checkpoints_checked == 2
    assert report.latest_checkpoint.seq == 10 and report.unanchored_rows == 2
    assert report.head_seq == 12 and report.mode == "full"


def test_key_is_private_and_the_public_key_sits_beside_the_checkpoints(anchored):
    paths = anchoring.ledger_paths(anchored)
    assert stat.S_IMODE(paths.key_file.stat().st_mode) == 0o600
    assert paths.key_file.parent != paths.directory  # never inside the sink
    public = anchoring.load_public_key(paths.directory / anchoring.PUBLIC_KEY_FILE)
    assert anchoring.key_id_of(public) == anchoring.Signer(paths.key_file).key_id
    names = sorted(p.name for p in paths.directory.iterdir() if p.suffix == ".json")
    assert names == ["00000001-checkpoint.json", "00000002-checkpoint.json"]


def test_default_directory_is_beside_the_sqlite_file(tmp_path):
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'study.db'}", environment="test")
    paths = anchoring.ledger_paths(settings)
    assert paths.directory == tmp_path / "study.ledger"
    assert paths.key_file == tmp_path / "study.ledger-signing-key.pem"


def test_edit_and_rehash_is_caught_naming_the_row(anchored, session):
    tamper.unprotect(session)
    tamper.edit_and_rehash(session, 3)
    assert audit.verify(session).ok  # the chain alone is fooled ...
    report = _verify(anchored, session)  # ... the checkpoints are not
    assert not report.ok
    broken = report.first_broken
    assert (broken.problem, broken.seq, broken.checkpoint) == ("rewritten", 3, 1)
    assert "row 3 is not the row checkpoint 1" in broken.message


def test_delete_and_renumber_is_caught(anchored, session):
    tamper.unprotect(session)
    tamper.delete_and_renumber(session, 7)
    assert audit.verify(session).ok
    report = _verify(anchored, session)
    broken = report.first_broken
    assert (broken.problem, broken.seq, broken.checkpoint) == ("rewritten", 7, 2)


def test_cutting_the_tail_is_caught_naming_the_missing_range(anchored, session):
    tamper.unprotect(session)
    tamper.cut_after(session, 7)
    assert audit.verify(session).ok
    broken = _verify(anchored, session).first_broken
    assert (broken.problem, broken.seq, broken.last_row) == ("truncated", 8, 10)
    assert "rows 8 to 10 are missing" in broken.message


def test_cut_then_new_rows_is_still_caught(anchored, session):
    tamper.unprotect(session)
    tamper.cut_after(session, 7)
    _append(session, 6, start=100)  # the app goes on writing over the gap
    broken = _verify(anchored, session).first_broken
    assert (broken.problem, broken.seq) == ("rewritten", 8)


def test_a_plain_edit_is_still_caught_by_the_chain(anchored, session):
    tamper.unprotect(session)
    from sqlalchemy import text

    session.execute(text("UPDATE audit_events SET action = 'x' WHERE id = 11"))
    session.commit()
    broken = _verify(anchored, session).first_broken
    assert (broken.problem, broken.seq) == ("edited", 11)


def test_verification_is_incremental_after_a_verified_checkpoint(anchored, session):
    first = _verify(anchored, session)
    assert first.mode == "full" and first.rows_checked == 12
    again = _verify(anchored, session)
    assert again.ok and again.mode == "incremental"
    assert (again.verified_from, again.rows_checked) == (11, 2)
    # the anchors are compared every time: re-hashing is caught incrementally too
    tamper.unprotect(session)
    tamper.edit_and_rehash(session, 2)
    broken = _verify(anchored, session).first_broken
    assert (broken.problem, broken.seq) == ("rewritten", 2)


def test_a_plain_edit_before_the_verified_position_needs_full(anchored, session):
    assert _verify(anchored, session).ok  # position: checkpoint at row 10
    tamper.unprotect(session)
    from sqlalchemy import text

    session.execute(text("UPDATE audit_events SET action = 'x' WHERE id = 4"))
    session.commit()
    assert _verify(anchored, session).mode == "incremental"  # rows 11.. only
    full = _verify(anchored, session, full=True)
    assert (full.first_broken.problem, full.first_broken.seq) == ("edited", 4)


def test_a_checkpoint_with_a_bad_signature_is_named(anchored, session):
    path = anchoring.ledger_paths(anchored).directory / "00000001-checkpoint.json"
    doc = json.loads(path.read_text())
    doc["payload"]["head"] = "f" * 64
    path.write_text(json.dumps(doc))
    broken = _verify(anchored, session).first_broken
    assert (broken.problem, broken.checkpoint, broken.file) == (
        "bad_signature", 1, "00000001-checkpoint.json")


def test_a_checkpoint_signed_by_another_key_is_named(anchored, session, tmp_path):
    path = anchoring.ledger_paths(anchored).directory / "00000002-checkpoint.json"
    doc = json.loads(path.read_text())
    other = anchoring.Signer(tmp_path / "other-key.pem")
    doc["payload"]["key"] = other.key_id
    doc["signature"] = other.sign(doc["payload"])
    path.write_text(json.dumps(doc))
    broken = _verify(anchored, session).first_broken
    assert (broken.problem, broken.checkpoint) == ("foreign_key", 2)
    assert other.key_id in broken.message


def test_missing_checkpoint_entries_are_named(anchored, engine, session):
    for i in range(3):
        _append(session, 5, start=20 + 5 * i)
        _checkpoint(anchored, engine)
    directory = anchoring.ledger_paths(anchored).directory
    (directory / "00000002-checkpoint.json").unlink()
    (directory / "00000003-checkpoint.json").unlink()
    broken = _verify(anchored, session).first_broken
    assert (broken.problem, broken.checkpoint, broken.last_row) == ("missing_checkpoints", 2, 3)
    assert "entries 2 to 3 are missing" in broken.message


def test_a_rewritten_history_is_never_signed(anchored, engine, session):
    tamper.unprotect(session)
    tamper.edit_and_rehash(session, 8)
    with pytest.raises(anchoring.AnchorError, match="does not match checkpoint 2"):
        _checkpoint(anchored, engine)


def test_checkpoints_follow_commits_every_n_rows_or_m_minutes(ledger_settings, engine):
    anchoring.attach(engine, ledger_settings)
    directory = anchoring.ledger_paths(ledger_settings).directory
    with Session(engine) as session:
        _append(session, 1)  # the first commit anchors at once
        assert [e.seq for e in anchoring.read_entries(anchoring.DirectorySink(directory))[0]] \
            == [1]
        for i in range(4):
            _append(session, 1, start=10 + i)
        assert len(anchoring.read_entries(anchoring.DirectorySink(directory))[0]) == 1
        _append(session, 1, start=20)  # row 6: 5 rows since the last checkpoint
        _append(session, 1, start=21, at=T0 + timedelta(minutes=59))
        _append(session, 1, start=22, at=T0 + timedelta(minutes=61))  # an hour passed
    entries = anchoring.read_entries(anchoring.DirectorySink(directory))[0]
    assert [e.seq for e in entries] == [1, 6, 8]
    assert entries[-1].payload["since"] == 6 and len(entries[-1].payload["digest"]) == 16


def test_checkpoints_are_emailed_to_the_irb(ledger_settings, engine, session, smtp):
    address = f"irb-{id(session)}@example.org"
    settings = ledger_settings.model_copy(update={
        "ledger_checkpoint_email": f" {address} ", "smtp_host": "127.0.0.1",
        "smtp_port": smtp.port, "notify_channel": "smtp"})
    _append(session, 3)
    entry = _checkpoint(settings, engine)
    [mail] = smtp.wait_for(address)
    assert "ledger checkpoint 1 (row 3)" in mail.message["Subject"]
    attached = {part.get_filename(): part.get_content()
                for part in mail.message.iter_attachments()}
    assert json.loads(attached[entry.name])["payload"]["head"] == entry.head
    saved = anchoring.parse_entry(entry.name, attached[entry.name].encode()
                                  if isinstance(attached[entry.name], str)
                                  else attached[entry.name])
    public = anchoring.Signer(anchoring.ledger_paths(settings).key_file).public
    assert saved.signed_by(public)  # the IRB's copy checks out on its own

"""The `wellpanel` command, run as a real process against both databases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from sqlalchemy import text
from sqlmodel import select

from app.auth import service as auth
from app.auth.models import StaffMember
from app.db import utcnow
from tests.conftest import STUDY_FILE

WELLPANEL = [sys.executable, "-m", "app.cli"]


def run(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"WELLPANEL_DATABASE_URL": db_url, "WELLPANEL_ENVIRONMENT": "test",
                        "WELLPANEL_SECRET_KEY": "cli-test-secret-0123"}
    return subprocess.run([*WELLPANEL, *args], capture_output=True, text=True, env=env,
                          cwd=Path(__file__).resolve().parents[2], timeout=120)


def test_study_load_is_idempotent(db_url):
    first = run(db_url, "study", "load", str(STUDY_FILE))
    second = run(db_url, "study", "load", str(STUDY_FILE))
    assert first.returncode == 0 and "protocol version 1 (new protocol version)" in first.stdout
    assert "published consent 1.0, 1.1" in first.stdout
    assert second.returncode == 0 and "protocol version 1 (unchanged)" in second.stdout


def test_study_load_refuses_a_bad_file_clearly(db_url, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("key: Not Valid\n", "utf-8")
    result = run(db_url, "study", "load", str(bad))
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "bad.yaml" in result.stderr
    assert "Traceback" not in result.stderr


def test_staff_add_prints_the_token_once_and_stores_its_hash(db_url, session):
    result = run(db_url, "staff", "add", "Dana", "--role", "irb")
    assert result.returncode == 0
    token = result.stdout.strip().splitlines()[-1]
    member = session.exec(select(StaffMember)).one()
    assert member.role == "irb" and member.token_hash != token
    found = auth.staff_for_token(session, token, now=utcnow(), ttl=timedelta(days=90))
    assert found is not None and found.name == "Dana"
    refused = run(db_url, "staff", "add", "Eve", "--role", "king")
    assert refused.returncode == 1 and "role" in refused.stderr


def test_audit_verify_fails_after_a_ledger_row_is_edited(db_url, session):
    assert run(db_url, "study", "load", str(STUDY_FILE)).returncode == 0
    intact = run(db_url, "audit", "verify", "--json")
    assert intact.returncode == 0 and json.loads(intact.stdout)["ok"] is True
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("ALTER TABLE audit_events DISABLE TRIGGER USER"))
    else:
        session.execute(text("DROP TRIGGER audit_events_no_update"))
    session.execute(text("UPDATE audit_events SET details = '{\"approval_ref\": \"forged\"}' "
                         "WHERE id = 1"))
    session.commit()
    broken = run(db_url, "audit", "verify")
    assert broken.returncode == 1
    assert "BROKEN at row 1 (edited)" in broken.stderr
    report = json.loads(run(db_url, "audit", "verify", "--json").stdout)
    assert {k: report["first_broken"][k] for k in ("seq", "problem", "message")} == {
        "seq": 1, "problem": "edited", "message": "row 1 was changed after it was written"}

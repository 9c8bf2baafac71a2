"""`wellpanel simulate` as a real process: migrates and loads the study itself, prints the
throughput and the true effects, refuses a second run unless --append."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def wellpanel(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"WELLPANEL_DATABASE_URL": f"sqlite:///{db}",
                        "WELLPANEL_ENVIRONMENT": "test",
                        "WELLPANEL_SECRET_KEY": "cli-test-secret-0123"}
    return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=300)


def test_simulate_fills_a_new_database_and_refuses_to_do_it_twice(tmp_path):
    db, truth = tmp_path / "new.db", tmp_path / "truth.json"
    first = wellpanel(db, "simulate", "--participants", "8", "--waves", "2", "--seed", "4",
                      "--no-progress", "--truth", str(truth))
    assert first.returncode == 0, first.stderr
    assert "keep4o-panel: 8 participants" in first.stdout and "responses/s" in first.stdout
    assert "who5: within +0.4, between -0.9" in first.stdout
    effects = json.loads(truth.read_text("utf-8"))["effects"]
    assert effects["who5"]["within"] == 0.4 and effects["ai_dependence"]["intercept"] == 2.2
    with sqlite3.connect(db) as conn:
        consented = conn.execute("SELECT count(DISTINCT participant_id) FROM consent_records "
                                 "WHERE decision = 'consent'").fetchone()[0]
    assert consented == 8

    again = wellpanel(db, "simulate", "--participants", "8", "--waves", "2", "--no-progress")
    assert again.returncode == 2
    assert again.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "--append" in again.stderr
    assert "Traceback" not in again.stderr  # (--append itself: tests/app/simulate/test_service)


def test_bad_arguments_are_refused_without_a_traceback(tmp_path):
    result = wellpanel(tmp_path / "x.db", "simulate", "--participants", "5", "--waves", "99",
                       "--no-progress")
    assert result.returncode == 2
    assert "waves" in result.stderr and "Traceback" not in result.stderr


def test_a_data_package_straight_from_the_simulator_needs_no_database(tmp_path):
    from analysis.panel import load_panel

    out = tmp_path / "package"
    result = wellpanel(tmp_path / "unused.db", "simulate", "--participants", "30", "--waves",
                       "4", "--datapackage", str(out))
    assert result.returncode == 0, result.stderr
    panel = load_panel(out)
    assert panel.n_participants == 30 and panel.profile == "simulated"
    assert not (tmp_path / "unused.db").exists()

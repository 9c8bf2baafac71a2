"""`wellpanel export panel` through Typer (registered on a bare app, as app/cli.py will), and an
export of participants who went through the real API."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
from typer.testing import CliRunner

from analysis.panel import load_panel
from app.export.service import ExportOptions, export_panel
from tests.support.flows import joined_and_consented

runner = CliRunner()


def test_export_panel_command(cli, population, tmp_path):
    out = tmp_path / "panel"
    result = runner.invoke(cli, ["export", "panel", "--out", str(out), "--format", "parquet",
                                 "--profile", "research", "--dua", "DUA-1", "--actor", "bob",
                                 "--key-file", str(population.key_file), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "exported keep4o-panel (research, parquet)" in result.output
    assert "participants.parquet" in result.output and "audit ledger row" in result.output
    assert load_panel(out).profile == "research"
    as_json = runner.invoke(cli, ["export", "panel", "--out", str(tmp_path / "j"), "--json"])
    assert as_json.exit_code == 0, as_json.output
    body = json.loads(as_json.output)
    assert body["rows"]["participants"] == len(population.exported)
    assert body["files"]["participants.csv"]["sha256"]


@pytest.mark.parametrize(("args", "message"), [
    (["--format", "xls"], "unknown format 'xls'"),
    (["--profile", "public"], "unknown profile 'public'"),
    (["--profile", "research"], "the research profile needs --dua"),
    (["--key-file", "/nonexistent/key"], "cannot read the key file"),
])
def test_bad_input_exits_2_with_one_line(cli, population, tmp_path, args, message):
    out = tmp_path / "out"
    result = runner.invoke(cli, ["export", "panel", "--out", str(out), *args])
    assert result.exit_code == 2
    assert f"error: {message}" in result.output
    assert not out.exists()


def test_existing_output_exits_2(cli, population, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "x").write_text("x", "utf-8")
    result = runner.invoke(cli, ["export", "panel", "--out", str(out)])
    assert result.exit_code == 2 and "not empty" in result.output


BAR = re.compile(rb"export:\s+\d+%\|")


def _run(args: list[str], db_url: str, *, tty: bool, columns: int = 100) -> tuple[int, bytes]:
    """Run ``wellpanel`` in a subprocess; stderr on a pseudo-terminal when ``tty``, else a
    pipe. Returns (exit status, what arrived on stderr)."""
    env = os.environ | {"WELLPANEL_DATABASE_URL": db_url, "WELLPANEL_ENVIRONMENT": "test",
                        "WELLPANEL_SECRET_KEY": "test-secret-0123456789"}
    command = [str(Path(sys.executable).with_name("wellpanel")), *args]
    if not tty:
        proc = subprocess.run(command, env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False,
                              timeout=300)
        return proc.returncode, proc.stderr
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    child = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    return child.wait(timeout=300), seen


@pytest.mark.parametrize("backend", ["sqlite"])  # one database is enough for the terminal
def test_progress_bar_only_on_a_terminal(db_url, population, tmp_path):
    args = ["export", "panel", "--format", "parquet", "--out"]
    status, shown = _run([*args, str(tmp_path / "tty")], db_url, tty=True)
    assert status == 0, shown
    assert BAR.search(shown) and b" answers" in shown, shown
    assert shown.count(b"\r") >= 2  # drawn, then redrawn/cleared in place
    status, zero_width = _run([*args, str(tmp_path / "tty0")], db_url, tty=True, columns=0)
    assert status == 0 and BAR.search(zero_width), zero_width
    status, quiet = _run([*args, str(tmp_path / "quiet"), "--quiet"], db_url, tty=True)
    assert status == 0 and quiet == b""
    status, piped = _run([*args, str(tmp_path / "pipe")], db_url, tty=False)
    assert status == 0 and piped == b""  # not a terminal: no bar, nothing on stderr
    assert (tmp_path / "pipe" / "datapackage.json").is_file()


def test_quiet_prints_nothing_but_errors(cli, population, tmp_path):
    result = runner.invoke(cli, ["export", "panel", "--out", str(tmp_path / "q"), "--quiet"])
    assert result.exit_code == 0 and result.output == ""
    assert (tmp_path / "q" / "datapackage.json").is_file()
    failed = runner.invoke(cli, ["export", "panel", "--out", str(tmp_path / "r"), "--quiet",
                                 "--profile", "research"])
    assert failed.exit_code == 2 and "error: the research profile needs --dua" in failed.output


def test_no_progress_output_when_not_a_terminal(cli, population, tmp_path):
    result = runner.invoke(cli, ["export", "panel", "--out", str(tmp_path / "n")])
    assert result.exit_code == 0, result.output
    assert "export:" not in result.output and "\r" not in result.output
    assert result.output.startswith("exported keep4o-panel (strict, csv)")


# ---- through the API --------------------------------------------------------------------------

BASELINE = {"age_band": "age_25_34", "gender": "woman", "country": "de",
            "living_situation": "alone", "ai_use_since": "year_2024",
            "ai_personal_use_since": "year_2024", "gpt4o_before_retirement": "daily",
            "gpt4o_after_retirement": "weekly", "gpt4o_after_how": ["api_direct"]}
USAGE = {"used_models": ["gpt4o_api", "claude"], "hours_gpt4o_api": 6, "hours_claude": 2.5,
         "purposes": ["emotional_support", "work"], "ai_framing": 4, "lost_access": "yes",
         "lost_access_models": ["gpt4o_chatgpt"], "lost_access_feeling": 3}


def test_participants_who_answered_through_the_api(client, smtp, engine, tmp_path):
    emails = [f"api{i}@example.org" for i in range(5)]
    for i, email in enumerate(emails):
        person = joined_and_consented(client, smtp, email)
        surveys = {s["instrument"]: s["id"] for s in client.get(
            "/api/v1/me/surveys", headers=person.headers).json()}
        # two PHQ-9 bands among the five: the study's l-diversity (l=2 on phq9_band) holds
        phq9 = {f"phq9_{j}": (i % 2 if j < 9 else 0) for j in range(1, 10)}
        for key, answers in (("baseline", BASELINE), ("ai_usage", USAGE),
                             ("who5", {f"who5_{j}": 3 for j in range(1, 6)}), ("phq9", phq9)):
            r = client.post(f"/api/v1/me/surveys/{surveys[key]}/responses",
                            json={"answers": answers},
                            headers=person.headers | {"Idempotency-Key": f"k-{i}-{key}"})
            assert r.status_code == 201, r.text
    out = tmp_path / "api"
    result = export_panel(engine, ExportOptions(out=out, include_items=True))
    panel = load_panel(out)
    assert len(panel.participants) == 5
    p = panel.participants.iloc[0]
    # five identical answers: one class of five, released at the finest level
    assert (p["age_band"], p["gender"], p["region"], p["living_situation"]) == (
        "25-34", "woman", "Western Europe", "alone")
    assert bool(p["used_4o_before_retirement"]) is True
    assert result.deidentification["quasi_identifiers"]["suppressed"] == 0
    wide = panel.wide.iloc[0]
    assert wide["who5"] == 60 and wide["hours_4o"] == 6 and wide["hours_total"] == 8.5
    assert wide["framing"] == 4 and bool(wide["companion_use"]) and bool(wide["access_loss"])
    usage = panel.usage[panel.usage["pid"] == wide["pid"]].set_index("model")
    assert bool(usage.loc["claude", "used"]) and usage.loc["gemini", "hours_per_week"] == 0
    assert usage.loc["gpt4o_api", "access_loss_distress"] == 3
    for f in out.iterdir():
        content = f.read_bytes()
        assert not any(e.encode() in content for e in emails)
        assert b"Alex Example" not in content  # the consent signature name

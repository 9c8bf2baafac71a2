"""`wellpanel demo` from nothing: a new person can join, follow the link and reach consent."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.pg import free_port


def test_demo_serves_a_working_join_and_mailbox(tmp_path: Path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WELLPANEL_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "demo", "--port", str(port),
         "--database", str(tmp_path / "demo.db")],
        cwd=Path(__file__).resolve().parents[2], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        # A hang guard, not a measurement: seeding the demo study takes seconds, minutes on a
        # machine loaded by other jobs.
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(f"{base}/join", follow_redirects=True).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, process.stdout.read()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "demo did not start"
            time.sleep(0.3)
        # seeded: the console has a simulated study to show (nobody of it can be contacted)
        with sqlite3.connect(tmp_path / "demo.db") as db:
            statuses = dict(db.execute(
                "SELECT status, count(*) FROM participants GROUP BY status").fetchall())
            answered = db.execute("SELECT count(*) FROM survey_responses").fetchone()[0]
            emails = [e for (e,) in db.execute("SELECT email FROM contacts")]
        assert statuses.get("completed", 0) >= 20 and answered >= 40 * 9
        assert "active" not in statuses
        assert emails and all(e.endswith("@example.invalid") for e in emails)
        with httpx.Client(base_url=base) as browser:
            page = browser.get("/join/keep4o-panel")
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
            done = browser.post("/join/keep4o-panel", data={
                "csrf_token": csrf, "email": "visitor@example.org", "timezone": "Europe/Berlin",
                "screening_adult": "yes", "screening_uses_ai_chat": "yes"})
            assert "/demo/mailbox" in done.text
            link = None
            for _ in range(50):  # the message goes out just after the page is answered
                mailbox = browser.get("/demo/mailbox").text
                found = re.search(r"http://127\.0\.0\.1:\d+/p/login/[\w-]+", mailbox)
                if found:
                    link = found.group(0)
                    break
                time.sleep(0.1)
            assert link, "no magic link in the demo mailbox"
            assert "visitor@example.org" not in mailbox
            consent = browser.get(link, follow_redirects=True)
            assert consent.url.path == "/p/consent" and "IRB-2026-0412" in consent.text
    finally:
        process.terminate()
        output = process.communicate(timeout=20)[0]
    assert "researcher token:" in output and "irb token:" in output and "/join" in output
    assert "40 simulated participants" in output

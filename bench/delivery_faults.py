"""Benchmark: what a mail server that accepts and never answers costs, in seconds.

tests/app/notify/test_delivery_faults.py checks these behaviours by the order of events and the
state they leave (no timing assertions on shared machines); this measures the times. On a
throw-away SQLite database with the shipped study and an SMTP tarpit (tests/support/tarpit.py),
one JSON object per line:

- ``smtp_give_up``: how long SMTPChannel.send takes to give up on a silent server (bounded by the
  connect timeout) and on one that greets and falls silent (the send timeout), beside the setting;
- ``requests``: enrollments and concurrent /healthz reads while the app's deliverer is stuck on the
  tarpit, beside the same requests when the mail server hangs up at once (nothing stuck);
- ``tick``: a scheduler tick with twenty messages due and a silent server, beside one timeout.

Run: ``.venv/bin/python bench/delivery_faults.py [--repeat 5]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TIMEOUT = 1.0  # seconds, both SMTP timeouts unless said otherwise


def emit(**fields: Any) -> None:
    print(json.dumps({"bench": "delivery_faults", **fields}), flush=True)


def spread(seconds: list[float]) -> dict[str, float]:
    return {"n": len(seconds), "median_s": round(statistics.median(seconds), 3),
            "max_s": round(max(seconds), 3)}


def timed(call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def settings_for(url: str, folder: Path, port: int, **timeouts: float) -> Any:
    from app.config import Settings

    return Settings(database_url=url, environment="test", secret_key="bench-secret-0123456789",
                    smtp_host="127.0.0.1", smtp_port=port, notify_channel="smtp",
                    base_url="http://testserver", log_json=False, rate_limits_enabled=False,
                    export_dir=folder / "exports", ledger_dir=folder / "ledger", **timeouts)


def smtp_give_up(url: str, folder: Path, repeat: int) -> None:
    from app.notify.channels import Message, SMTPChannel
    from tests.support.tarpit import Tarpit

    for greet, phase in ((False, "smtp_connect_timeout"), (True, "smtp_send_timeout")):
        seconds = []
        for _ in range(repeat):
            server = Tarpit(greet=greet).start()
            try:
                channel = SMTPChannel(settings_for(url, folder, server.port,
                                                   smtp_connect_timeout=TIMEOUT,
                                                   smtp_send_timeout=TIMEOUT))
                started = time.perf_counter()
                with contextlib.suppress(OSError):  # TimeoutError, SMTPServerDisconnected
                    channel.send(Message(to="x@example.org", subject="s", body="b",
                                         language="en", key="k"))
                seconds.append(time.perf_counter() - started)
            finally:
                server.stop()
        emit(smtp_give_up={"server": "greets then silent" if greet else "silent",
                           "bounded_by": phase, "setting_s": TIMEOUT, **spread(seconds)})


def requests(url: str, folder: Path, repeat: int, *, stuck: bool) -> None:
    from fastapi.testclient import TestClient

    from app.main import create_app
    from tests.support.flows import ELIGIBLE, STUDY
    from tests.support.tarpit import Tarpit

    tarpit = Tarpit().start()
    if not stuck:
        tarpit.release()  # the baseline: the mail server hangs up at once
    # the timeouts outlast the measured requests, so the deliverer stays stuck through them
    app = create_app(settings_for(url, folder, tarpit.port, smtp_connect_timeout=60,
                                  smtp_send_timeout=60, outbox_lease_seconds=121))
    prefix = "stuck" if stuck else "free"
    enrollments: list[float] = []
    reads: list[float] = []
    try:
        with TestClient(app) as client:
            def enroll(i: int) -> None:
                response = client.post(f"/api/v1/studies/{STUDY}/enrollments", json={
                    "email": f"{prefix}{i}@example.org", "screening": ELIGIBLE})
                assert response.status_code == 202, response.text

            def read() -> None:
                reads.append(timed(lambda: client.get("/healthz").raise_for_status()))

            enroll(0)
            while stuck and tarpit.connections < 1:
                time.sleep(0.01)
            for i in range(1, repeat + 1):
                enrollments.append(timed(lambda i=i: enroll(i)))
                readers = [threading.Thread(target=read) for _ in range(4)]
                for t in readers:
                    t.start()
                for t in readers:
                    t.join()
            busy = not app.state.deliverer.wait_idle(timeout=0)
            tarpit.release()
            app.state.deliverer.wait_idle(timeout=120)
    finally:
        tarpit.stop()
        app.state.engine.dispose()
    emit(requests={"case": "deliverer stuck" if stuck else "baseline: mail server hangs up",
                   "deliverer_busy_after_them": busy,
                   "enrollment": spread(enrollments), "healthz_4_concurrent": spread(reads)})


def tick(url: str, folder: Path) -> None:
    from sqlmodel import Session

    from app.db import make_engine, utcnow
    from app.notify import service as notify
    from app.notify.channels import SMTPChannel
    from app.scheduling.dispatcher import tick as run_tick
    from tests.support.factory import consented_participants
    from tests.support.tarpit import Tarpit

    engine = make_engine(url)
    now = utcnow()
    with Session(engine) as session:
        for person in consented_participants(session, 20, now=now, prefix="tick"):
            notify.queue(session, person.id, "magic_link", dedupe_key=f"tick:{person.id}",
                         now=now)
        session.commit()
    tarpit = Tarpit().start()
    try:
        settings = settings_for(url, folder, tarpit.port, smtp_connect_timeout=TIMEOUT,
                                smtp_send_timeout=TIMEOUT)
        started = time.perf_counter()
        report = run_tick(engine, settings, SMTPChannel(settings), now=now)
        elapsed = time.perf_counter() - started
    finally:
        tarpit.stop()
        engine.dispose()
    emit(tick={"messages_due": report.retry + report.sent, "sent": report.sent,
               "tarpit_connections": tarpit.connections, "seconds": round(elapsed, 3),
               "one_timeout_s": TIMEOUT})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    from sqlmodel import Session

    from app import migrate
    from app.config import PROJECT_ROOT
    from app.db import make_engine
    from app.studies import service as studies

    folder = Path(tempfile.mkdtemp(prefix="wellpanel-bench-delivery-"))
    url = f"sqlite:///{folder / 'bench.db'}"
    migrate.upgrade(url)
    engine = make_engine(url)
    with Session(engine) as session:
        studies.load_study(session, PROJECT_ROOT / "surveys" / "studies" / "keep4o-panel.yaml",
                           PROJECT_ROOT / "surveys", actor="bench")
        session.commit()
    engine.dispose()
    emit(setup={"database": "sqlite", "repeat": args.repeat, "folder": str(folder)})
    smtp_give_up(url, folder, args.repeat)
    requests(url, folder, args.repeat, stuck=True)
    requests(url, folder, args.repeat, stuck=False)
    tick(url, folder)


if __name__ == "__main__":
    main()

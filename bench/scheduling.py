"""Benchmark: planning 26 weeks for 100,000 participants, then one tick with 10,000 invitations.

Starts a throw-away PostgreSQL server (as the tests do), loads the shipped study
(surveys/studies/keep4o-panel.yaml, its default schedule) and adds ``--participants`` active
participants in six time zones. A tenth of them enrolled in the day before the tick time T, the
rest after it, so at T exactly one occasion per early participant (their baseline) is due.

- ``plan``: ``materialize_many`` plans ``--weeks`` weeks for everyone (the BulkPlanner and a bulk
  insert: COPY on PostgreSQL). Baseline, same run: the very rows it wrote, copied out to a file,
  the table emptied, and loaded back with a plain ``COPY survey_instances FROM STDIN``.
- ``tick``: the dispatcher's ``open_due`` at T (on PostgreSQL one statement per batch: claim
  due instances with UPDATE ... RETURNING and SKIP LOCKED, and insert one invitation per
  occasion from them with INSERT ... SELECT ... ON CONFLICT DO NOTHING). Baseline, same run, same
  rows: one plain ``UPDATE survey_instances SET status = 'open'`` of the due rows and a COPY of
  the same outbox rows. Both are timed ``--rounds`` times, alternately (each undone before the
  next), and compared by their medians, so a busy machine weighs on both alike. The rest of a
  tick (rolling the planning horizon forward, expiring, reminders; delivery excluded) is timed
  separately, once, and reported next to it: the baseline has no counterpart for it.

Prints one JSON object per line with the rate next to the baseline's (target: at least half of
it) and the peak resident memory of this process.

Run: ``.venv/bin/python bench/scheduling.py [--participants 100000] [--weeks 26] [--rounds 3]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

T = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)  # the tick time
ZONES = ("Europe/Berlin", "America/New_York", "Asia/Shanghai", "Australia/Sydney",
         "America/Sao_Paulo", "Asia/Kolkata")


def emit(**fields: Any) -> None:
    print(json.dumps({"bench": "scheduling", **fields}), flush=True)


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def rate(n: int, seconds: float) -> float:
    return round(n / seconds, 1) if seconds > 0 else float("inf")


# ---- setup -------------------------------------------------------------------------------------

def setup(url: str, dsn: str, participants: int, due: int, seed: int = 1) -> int:
    """Migrate, load the study, COPY ``participants`` active participants (``due`` of them
    enrolled in the day before T); returns the study id."""
    import psycopg
    from sqlmodel import Session

    from app import migrate
    from app.config import PROJECT_ROOT
    from app.db import make_engine
    from app.studies import service as studies

    migrate.upgrade(url)
    engine = make_engine(url)
    with Session(engine) as s:
        key = studies.load_study(s, PROJECT_ROOT / "surveys" / "studies" / "keep4o-panel.yaml",
                                 PROJECT_ROOT / "surveys", actor="bench").study_key
        study_id = studies.get_study(s, key).id
    engine.dispose()
    rng = random.Random(seed)
    with psycopg.connect(dsn) as conn, conn.cursor() as cur, cur.copy(
            "COPY participants (id, study_id, status, language, timezone, created_at, "
            "enrolled_at) FROM STDIN") as copy:
        for i in range(participants):
            if i < due:  # in the day before T: their baseline is due at T
                enrolled = T - timedelta(seconds=rng.randint(60, 86_400))
            else:  # later, up to twelve days after T: nothing of theirs is due at T
                enrolled = T + timedelta(seconds=rng.randint(60, 12 * 86_400))
            copy.write_row((str(uuid.UUID(int=rng.getrandbits(128), version=4)), study_id,
                            "active", "en", ZONES[i % len(ZONES)], enrolled, enrolled))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE participants")
    return study_id


def planees(engine: Any) -> list[Any]:
    from sqlmodel import Session, col, select

    from app.participants.models import Participant
    from app.scheduling.service import Planee

    with Session(engine) as s:
        return [Planee(*row) for row in s.exec(
            select(Participant.id, Participant.study_id, Participant.enrolled_at,
                   Participant.timezone).order_by(col(Participant.id))).all()]


# ---- planning ----------------------------------------------------------------------------------

def plan(engine: Any, people: list[Any], weeks: int) -> dict[str, Any]:
    from sqlmodel import Session

    from app.scheduling.service import materialize_many

    t0 = time.perf_counter()
    with Session(engine) as s:
        rows = materialize_many(s, people, now=T, until=T + timedelta(weeks=weeks))
    return {"rows": rows, "seconds": time.perf_counter() - t0}


def plan_baseline(dsn: str, workdir: Path) -> dict[str, Any]:
    """The rows just planned, copied out, the table emptied, and a plain COPY back in."""
    import psycopg

    dump = workdir / "survey_instances.copy"
    with psycopg.connect(dsn) as conn, conn.cursor() as cur, open(dump, "wb") as f, \
            cur.copy("COPY survey_instances TO STDOUT (FORMAT binary)") as copy:
        for block in copy:
            f.write(block)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE survey_instances CASCADE")
        conn.execute("CHECKPOINT")
    t0 = time.perf_counter()
    with psycopg.connect(dsn) as conn, conn.cursor() as cur, open(dump, "rb") as f, \
            cur.copy("COPY survey_instances FROM STDIN (FORMAT binary)") as copy:
        while block := f.read(1 << 20):
            copy.write(block)
    seconds = time.perf_counter() - t0
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT count(*) FROM survey_instances").fetchone()[0]  # type: ignore[index]
    dump.unlink()
    return {"rows": rows, "seconds": seconds}


# ---- the tick ----------------------------------------------------------------------------------

DUE = ("status = 'planned' AND scheduled_at <= %(t)s AND closes_at > %(t)s")


def tick_baseline(dsn: str) -> dict[str, Any]:
    """One plain UPDATE of the due rows and a COPY of one outbox row per occasion; then both
    undone, so the dispatcher meets the same rows."""
    import psycopg
    from psycopg.types.json import Jsonb

    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        t0 = time.perf_counter()
        cur.execute(f"UPDATE survey_instances SET status = 'open', opened_at = %(t)s "  # noqa: S608
                    f"WHERE {DUE} RETURNING participant_id, schedule_entry, wave, closes_at",
                    {"t": T})
        occasions = {(p, e, w): c for p, e, w, c in cur.fetchall()}
        opened = cur.rowcount
        with cur.copy("COPY outbox_messages (participant_id, kind, dedupe_key, status, attempts, "
                      "next_attempt_at, created_at, payload) FROM STDIN") as copy:
            for (p, e, w), closes in occasions.items():
                copy.write_row((p, "invitation", f"invitation:{p}:{e}:{w}", "pending", 0, T, T,
                                Jsonb({"entry": e, "wave": w, "closes_at": closes.isoformat()})))
        conn.commit()
        seconds = time.perf_counter() - t0
    undo_tick(dsn)
    return {"opened": opened, "invitations": len(occasions), "seconds": seconds}


def undo_tick(dsn: str) -> None:
    """Back to the state before the tick: due rows planned again, no outbox rows, vacuumed."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        conn.execute("UPDATE survey_instances SET status = 'planned', opened_at = NULL "
                     "WHERE status = 'open'")
        conn.execute("DELETE FROM outbox_messages")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE survey_instances")
        conn.execute("VACUUM ANALYZE outbox_messages")


def open_due(engine: Any) -> dict[str, Any]:
    """The dispatcher's open-and-queue step at T, the one the baseline mirrors."""
    from sqlmodel import Session

    from app.scheduling import dispatcher

    with Session(engine, expire_on_commit=False) as s:
        t0 = time.perf_counter()
        opened, invitations = dispatcher.open_due(s, T)
        return {"opened": opened, "invitations": invitations,
                "seconds": time.perf_counter() - t0}


def rest_of_tick(engine: Any) -> dict[str, Any]:
    """What else a tick does (no delivery): roll the planning horizon forward, expire, remind."""
    from sqlmodel import Session

    from app.scheduling import dispatcher, service

    with Session(engine, expire_on_commit=False) as s:
        t0 = time.perf_counter()
        planned = service.materialize_all(s, now=T)
        t1 = time.perf_counter()
        expired = dispatcher.expire_overdue(s, T)
        reminders = dispatcher.queue_reminders(s, T)
        t2 = time.perf_counter()
    return {"horizon_planned": planned, "horizon_seconds": t1 - t0, "expired": expired,
            "reminders": reminders, "rest_seconds": t2 - t1}


def tick_rounds(engine: Any, dsn: str, rounds: int) -> tuple[list[Any], list[Any]]:
    """Baseline and dispatcher alternately on the same rows; the dispatcher's last round stays."""
    baselines, ours = [], []
    for i in range(rounds):
        baselines.append(tick_baseline(dsn))
        ours.append(open_due(engine))
        if i < rounds - 1:
            undo_tick(dsn)
    return baselines, ours


# ---- main --------------------------------------------------------------------------------------

def run(url: str, dsn: str, participants: int, weeks: int, workdir: Path, rounds: int = 3
        ) -> list[dict[str, Any]]:
    """The whole benchmark on an empty database; returns the result lines."""
    from app.db import make_engine

    due = max(1, participants // 10)
    setup(url, dsn, participants, due)
    engine = make_engine(url)
    people = planees(engine)
    rss_before = peak_rss_mb()
    ours = plan(engine, people, weeks)
    rss_plan = peak_rss_mb()
    base = plan_baseline(dsn, workdir)
    lines = [{"case": "plan", "participants": participants, "weeks": weeks,
              "occurrences": ours["rows"], "seconds": round(ours["seconds"], 2),
              "occurrences_per_second": rate(ours["rows"], ours["seconds"]),
              "baseline": "plain COPY of the same rows", "baseline_rows": base["rows"],
              "baseline_seconds": round(base["seconds"], 2),
              "baseline_per_second": rate(base["rows"], base["seconds"]),
              "ratio_to_baseline": round(base["seconds"] / ours["seconds"], 3),
              "target_ratio": 0.5, "meets_target": base["seconds"] / ours["seconds"] >= 0.5,
              "peak_rss_mb": rss_plan, "rss_before_mb": rss_before}]
    bases, ours_runs = tick_rounds(engine, dsn, rounds)
    rest = rest_of_tick(engine)
    engine.dispose()
    tb, ours_tick = bases[-1], ours_runs[-1]
    base_s = statistics.median(b["seconds"] for b in bases)
    ours_s = statistics.median(o["seconds"] for o in ours_runs)
    lines.append({
        "case": "tick", "due_invitations": ours_tick["invitations"],
        "opened": ours_tick["opened"], "rounds": rounds, "seconds": round(ours_s, 3),
        "invitations_per_second": rate(ours_tick["invitations"], ours_s),
        "baseline": "one plain UPDATE of the same rows + COPY of the same outbox rows",
        "baseline_opened": tb["opened"], "baseline_invitations": tb["invitations"],
        "baseline_seconds": round(base_s, 3),
        "baseline_per_second": rate(tb["invitations"], base_s),
        "ratio_to_baseline": round(base_s / ours_s, 3),
        "target_ratio": 0.5, "meets_target": base_s / ours_s >= 0.5,
        "seconds_per_round": [round(o["seconds"], 3) for o in ours_runs],
        "baseline_seconds_per_round": [round(b["seconds"], 3) for b in bases],
        "rest_of_tick": "horizon roll-forward, expiry, reminders (no baseline counterpart)",
        "whole_tick_seconds": round(ours_s + rest["horizon_seconds"] + rest["rest_seconds"], 2),
        "horizon_seconds": round(rest["horizon_seconds"], 2),
        "horizon_planned": rest["horizon_planned"], "expired": rest["expired"],
        "reminders": rest["reminders"], "expire_and_reminders_seconds":
            round(rest["rest_seconds"], 2), "peak_rss_mb": peak_rss_mb()})
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--participants", type=int, default=100_000)
    ap.add_argument("--weeks", type=int, default=26)
    ap.add_argument("--rounds", type=int, default=3,
                    help="tick and baseline, alternately, this many times each (median)")
    args = ap.parse_args()
    from tests.support.pg import PostgresServer

    server = PostgresServer.start()
    try:
        name = server.create_database()
        emit(stage="setup", python=platform.python_version(), cpus=os.cpu_count(),
             participants=args.participants, weeks=args.weeks)
        with tempfile.TemporaryDirectory(prefix="wellpanel-bench-scheduling-") as workdir:
            for line in run(server.url(name), server.admin_dsn(name), args.participants,
                            args.weeks, Path(workdir), args.rounds):
                emit(**line)
        server.drop_database(name)
    finally:
        server.stop()


if __name__ == "__main__":
    main()

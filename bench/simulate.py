"""Benchmark: `wellpanel simulate` throughput, committed in batches, on SQLite and PostgreSQL.

Fills a fresh database (the shipped study) with ``--participants`` x ``--waves`` simulated
participants through the services, once with the default batching (the services' commits only
flush, one real commit per batch of steps) and, as the baseline measured in the same run,
once committing every step (``batch_size=1``, what calling the services one request at a time
costs). Prints one JSON object per line: responses stored, seconds, responses per second, and
the speed-up over the baseline. PostgreSQL is a throw-away server started as the tests do, with
fsync off (commits cost it less than a real server's). Long batches (hundreds of steps) made
PostgreSQL slower than a commit per step here, hence the default of a few tens.

Run: ``.venv/bin/python bench/simulate.py [--participants 150] [--waves 10] [--no-postgres]``
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.simulate.service import DEFAULT_BATCH  # noqa: E402


def emit(**fields: Any) -> None:
    print(json.dumps({"bench": "simulate", **fields}), flush=True)


def run_once(url: str, participants: int, waves: int, batch: int) -> dict[str, Any]:
    from app import migrate
    from app.config import PROJECT_ROOT
    from app.db import make_engine
    from app.simulate.service import SimulateOptions, simulate

    migrate.upgrade(url)
    engine = make_engine(url)
    try:
        result = simulate(engine, SimulateOptions(participants=participants, waves=waves,
                                                  seed=0, batch_size=batch),
                          surveys_dir=PROJECT_ROOT / "surveys",
                          now=datetime(2026, 11, 30, tzinfo=UTC))
    finally:
        engine.dispose()
    return {"responses": result.responses, "steps": result.steps,
            "seconds": round(result.seconds, 2),
            "responses_per_s": round(result.responses_per_second, 1)}


def compare(backend: str, urls: list[str], participants: int, waves: int, batch: int) -> None:
    run_once(urls[2], 5, 2, batch)  # warm-up: imports, caches, the server's first plans
    single = run_once(urls[1], participants, waves, 1)
    batched = run_once(urls[0], participants, waves, batch)
    emit(backend=backend, participants=participants, waves=waves, batch_size=batch, **batched,
         baseline="commit every step (batch_size=1)",
         baseline_responses_per_s=single["responses_per_s"],
         baseline_seconds=single["seconds"],
         speedup=round(batched["responses_per_s"] / single["responses_per_s"], 2))


def main() -> None:
    import logging

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=150)
    parser.add_argument("--waves", type=int, default=10)
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="steps per commit")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    logging.getLogger("alembic").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench-simulate-") as tmp:
        compare("sqlite", [f"sqlite:///{tmp}/{n}.db" for n in "abc"], args.participants,
                args.waves, args.batch)
    if args.no_postgres:
        return
    from tests.support.pg import PostgresServer

    server = PostgresServer.start()
    try:
        urls = [server.url(server.create_database()) for _ in range(3)]
        compare("postgresql", urls, args.participants, args.waves,
                args.batch)
    finally:
        server.stop()


if __name__ == "__main__":
    main()

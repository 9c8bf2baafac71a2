"""Benchmark: survey submissions through the real API on PostgreSQL, next to a bare endpoint.

Starts a throw-away PostgreSQL server (as the tests do), loads the shipped study and seeds
``--participants`` consented participants with their baseline surveys open (WHO-5, PHQ-9 and
GAD-7 each: three submissions per participant), each with a magic-link token. Then two servers
with the same uvicorn settings (``--workers``, default 1; no access log), measured alternately,
``--rounds`` times each, so a busy machine weighs on both alike:

- ``bare``: bench/apps/bare.py, a FastAPI app whose handler only validates the same JSON body with
  the same pydantic model (ResponseSubmit) on the same path: the floor for HTTP + parsing;
- ``submit``: ``uvicorn app.asgi:app``, ``POST /api/v1/me/surveys/{id}/responses`` with the
  participant's token and an Idempotency-Key: auth, consent gate, answer validation, scoring,
  the audit ledger append, commit.

``--concurrency`` async httpx clients in this process send every request (the same load
generator for both, so its own cost is in both figures). Prints one JSON object per line:
requests per second and p50/p99 latency for each round and over all rounds, and the ratios
(target: submit reaches at least half the bare throughput, with p99 under 3x the bare one's).

``--profile out.svg`` records the submit server with py-spy while it runs (only samples holding the
GIL, i.e. CPU; a name not ending in .svg gets py-spy's raw collapsed stacks). The
``server_cpu_ms_per_request`` figure (user + system CPU of the server processes over the timed
run) is the steadiest one on a shared machine: requests per second of both endpoints move with
whatever else runs, and the bare endpoint is bounded by this load generator, not by its server.

Run: ``.venv/bin/python bench/api.py [--participants 1000] [--concurrency 32] [--workers 1]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def emit(**fields: Any) -> None:
    print(json.dumps({"bench": "api", **fields}), flush=True)


def server_cpu_seconds(server: Any) -> float:
    """User + system CPU time of the server and its workers so far (Linux /proc)."""
    total = 0
    for pid in server.pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def summarize(name: str, outcomes: list[Any], elapsed: float, cpu: float,
              **extra: Any) -> dict[str, Any]:
    from tests.reliability.harness import percentile

    ok = [o for o in outcomes if o.status is not None and 200 <= o.status < 300]
    statuses: dict[str, int] = {}
    for o in outcomes:
        statuses[str(o.status)] = statuses.get(str(o.status), 0) + 1
    latencies = [o.seconds for o in outcomes]
    return {"endpoint": name, **extra, "requests": len(outcomes), "ok": len(ok),
            "statuses": statuses, "seconds": round(elapsed, 2),
            "rps": round(len(outcomes) / elapsed, 1),
            "p50_ms": round(percentile(latencies, 0.50) * 1000, 1),
            "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
            "server_cpu_ms_per_request": round(cpu * 1000 / len(outcomes), 2),
            "server_cpu_share": round(cpu / elapsed, 2)}


def timed_load(server: Any, jobs: list[Any], concurrency: int) -> tuple[list[Any], float, float]:
    from tests.reliability.harness import run_load

    cpu_before = server_cpu_seconds(server)
    started = time.perf_counter()
    outcomes = asyncio.run(run_load([server.base_url], jobs, concurrency=concurrency))
    return outcomes, time.perf_counter() - started, server_cpu_seconds(server) - cpu_before


def start_profile(server: Any, path: str) -> subprocess.Popen[bytes]:
    spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "-o", path,
                            "--subprocesses", "--pid", str(server.proc.pid), "--nonblocking",
                            "--gil", "--rate", "400"]
                           + (["--format", "raw"] if not path.endswith(".svg") else []),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    return spy


def compare(bare: Any, real: Any, jobs: list[Any], concurrency: int, rounds: int,
            profile: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Alternate bare and submit runs, `rounds` times each, so that whatever else the machine is
    doing weighs on both alike; every submission job is answered once (the bare endpoint stores
    nothing, so it gets the same bodies)."""
    from tests.reliability.harness import run_load

    warm, timed = jobs[:concurrency], jobs[concurrency:]
    for server in (bare, real):  # imports, connection pools, caches: not counted
        asyncio.run(run_load([server.base_url], warm, concurrency=concurrency))
    totals: dict[str, list[Any]] = {"bare": [[], 0.0, 0.0], "submit": [[], 0.0, 0.0]}
    spy = start_profile(real, profile) if profile else None
    size = -(-len(timed) // rounds)
    for i in range(rounds):
        chunk = timed[i * size:(i + 1) * size]
        for name, server in (("bare", bare), ("submit", real)):
            outcomes, elapsed, cpu = timed_load(server, chunk, concurrency)
            emit(**summarize(name, outcomes, elapsed, cpu, round=i + 1))
            totals[name][0] += outcomes
            totals[name][1] += elapsed
            totals[name][2] += cpu
    if spy is not None:
        spy.send_signal(2)
        spy.wait(30)
    results = {name: summarize(name, *totals[name], round="all") for name in totals}
    for result in results.values():
        emit(**result)
    return results["bare"], results["submit"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--participants", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating bare/submit runs (each submission is sent once)")
    parser.add_argument("--submit-app", default="app.asgi:app",
                        help="the ASGI app to measure (e.g. a variant under bench/apps)")
    parser.add_argument("--profile", help="write a py-spy flame graph of the submit server")
    args = parser.parse_args()

    from app.db import utcnow
    from tests.reliability.harness import ServerProcess, seed
    from tests.support.pg import PostgresServer

    pg = PostgresServer.start()
    servers: list[ServerProcess] = []
    try:
        url = pg.url(pg.create_database())
        t0 = time.perf_counter()
        jobs = seed(url, args.participants, now=utcnow())
        emit(setup={"participants": args.participants, "submissions": len(jobs),
                    "concurrency": args.concurrency, "uvicorn_workers": args.workers,
                    "database": "postgresql", "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "seed_seconds": round(time.perf_counter() - t0, 1)})
        logs = Path(tempfile.mkdtemp(prefix="wellpanel-bench-api-"))
        bare = ServerProcess(url, app="bench.apps.bare:app", workers=args.workers,
                             log_path=logs / "bare.log").start()
        servers.append(bare)
        real = ServerProcess(url, app=args.submit_app, workers=args.workers,
                             log_path=logs / "submit.log").start()
        servers.append(real)
        baseline, submit = compare(bare, real, jobs, args.concurrency, args.rounds, args.profile)
        throughput = submit["rps"] / baseline["rps"]
        p99 = submit["p99_ms"] / baseline["p99_ms"]
        emit(result={"submit_rps": submit["rps"], "bare_rps": baseline["rps"],
                     "throughput_ratio": round(throughput, 3),
                     "p99_ratio": round(p99, 2),
                     "target": "throughput_ratio >= 0.5 and p99_ratio <= 3",
                     "met": throughput >= 0.5 and p99 <= 3,
                     "all_stored": submit["ok"] == submit["requests"]},
             logs=str(logs))
    finally:
        for server in servers:
            server.stop()
        pg.stop()


if __name__ == "__main__":
    main()

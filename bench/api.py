"""Benchmark: survey submissions through the real API on PostgreSQL, beside two baselines, with wrk.

Starts a throw-away PostgreSQL server (as the tests do), loads the shipped study and seeds
``--participants`` consented participants with their baseline surveys open (WHO-5, PHQ-9 and
GAD-7 each: three submissions per participant), each with a magic-link token. Then three servers
with the same uvicorn settings (``--workers``, default 1; no access log):

- ``bare``: bench/apps/bare.py validates the same JSON body with the same pydantic model
  (ResponseSubmit) on the same path: the floor for HTTP + parsing;
- ``bare-db``: bench/apps/bare_db.py validates it the same way, INSERTs it into a table of the same
  PostgreSQL through the app's engine settings (SQLAlchemy, psycopg 3, one pool) and commits:
  the floor for any endpoint that stores a submission;
- ``submit``: ``uvicorn app.asgi:app`` (or ``--submit-app``),
  ``POST /api/v1/me/surveys/{id}/responses``: auth, consent gate, answer validation, scoring, the
  audit ledger append, commit.

The load comes from wrk (Debian's ``wrk``; ``make bench-deps`` installs it), a C load generator,
with bench/api.lua: every request is a distinct, valid submission (a pre-seeded instance id and
its participant's token, its own Idempotency-Key), the same bodies in the same order for all
three servers. ``ceiling`` is wrk against ``GET /noop`` (204, no work) on the bare server: the
rate this generator reaches on this machine, so a reader sees it is not what bounds the others.

Each round runs the four, in an order that rotates from round to round, for ``--duration``
seconds each, ``--rounds`` times (a busy machine weighs on all alike). Every answer to a
submission must be 2xx: one that is not (or a socket error) stops the run with exit status 1,
since a benchmark of errors measures nothing. Prints one JSON object per line: per run and over
all rounds, requests per second, p50/p99 latency (over all rounds: merged from each run's
quantiles), the server's CPU per request (user + system CPU of the server processes, read once
the requests still in flight when wrk stopped have finished, divided by the requests sent), the
database server's CPU per request and the load generator's CPU share; then the targets with
pass/fail: submit throughput >= 0.5x bare-db, server CPU < 1.5 ms per submission, submit p99 <=
3x bare-db p99.

``--profile out.svg`` records the submit server with py-spy during the timed rounds (only samples
holding the GIL, i.e. CPU; a name not ending in .svg gets py-spy's raw collapsed stacks); py-spy
takes CPU of its own, so read figures from a run without it.

``--submit-app`` and ``--submit-env NAME=VALUE`` measure a variant of the submit server (e.g.
``--submit-env WELLPANEL_RATE_LIMITS_ENABLED=false``: what the shared rate limiter costs).

Run: ``.venv/bin/python bench/api.py [--participants 1000] [--rounds 3] [--duration 3]
[--concurrency 32] [--threads 2] [--workers 1]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LUA = ROOT / "bench" / "api.lua"
SERVERS = ("ceiling", "bare", "bare-db", "submit")
POSTING = ("bare", "bare-db", "submit")  # the ones sent submissions
WRK_TIMEOUT = "30s"  # a slow answer is measured, not dropped as a timeout


class BenchFailed(SystemExit):
    """A run whose answers were not all 2xx: its figures would measure errors."""


def emit(**fields: Any) -> None:
    print(json.dumps({"bench": "api", **fields}), flush=True)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes so far (Linux /proc)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def postgres_pids(pg: Any) -> list[int]:
    """The postmaster and its children (backends, checkpointer, WAL writer...)."""
    postmaster = int((Path(pg.data_dir) / "postmaster.pid").read_text().split()[0])
    out = subprocess.run(["pgrep", "-P", str(postmaster)], capture_output=True, text=True).stdout
    return [postmaster, *(int(p) for p in out.split())]


def generator_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk, once waited for
    return usage.ru_utime + usage.ru_stime


def settle(server: Any, quiet: float = 0.2, limit: float = 10.0) -> None:
    """Wait until the server stops using CPU: the requests wrk had sent when it stopped are
    still being served, and their CPU belongs to this run."""
    deadline = time.monotonic() + limit
    last = cpu_seconds(server.pids)
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = cpu_seconds(server.pids)
        if now - last < 0.01:
            return
        last = now


def write_pool(jobs: list[Any], path: Path) -> None:
    with path.open("w") as f:
        for job in jobs:
            body = json.dumps({"answers": job.answers}, separators=(",", ":"))
            f.write(f"{job.instance_id}\t{job.token}\t{body}\n")


def run_wrk(server: Any, mode: str, args: argparse.Namespace, pool: Path, offset: int,
            duration: int, pg: Any) -> tuple[dict[str, Any], float, float, float]:
    """One wrk run; returns wrk's figures (from bench/api.lua's done()), the server's CPU, the
    database's CPU and wrk's own CPU over it."""
    cmd = ["wrk", "-t", str(args.threads), "-c", str(args.concurrency), "-d", f"{duration}s",
           "--timeout", WRK_TIMEOUT, "-s", str(LUA), server.base_url, "--", mode, str(pool),
           str(offset), str(args.threads)]
    server_before, db_before = cpu_seconds(server.pids), cpu_seconds(postgres_pids(pg))
    generator_before = generator_cpu_seconds()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120)
    generator = generator_cpu_seconds() - generator_before
    settle(server)
    server_cpu = cpu_seconds(server.pids) - server_before
    db_cpu = cpu_seconds(postgres_pids(pg)) - db_before
    lines = [line for line in done.stdout.splitlines() if line.startswith("WRKJSON ")]
    if done.returncode != 0 or not lines:
        raise BenchFailed(f"wrk failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return json.loads(lines[-1].removeprefix("WRKJSON ")), server_cpu, db_cpu, generator


def check_answers(name: str, figures: dict[str, Any], pool_size: int) -> None:
    """Stop the benchmark, loudly, at the first run with an answer that is not 2xx."""
    threads = figures["threads"]
    bad = sum(t["non_2xx"] for t in threads)
    socket_errors = sum(figures["socket_errors"].values())
    if not bad and not socket_errors:
        return
    statuses = Counter()
    for t in threads:
        statuses.update(t["statuses"])
    hint = ""
    if name == "submit" and max(t["laps"] for t in threads) > 0:
        hint = (f"; the pool of {pool_size} seeded submissions ran out, so entries were sent "
                "again: seed more --participants, or shorten --duration or --rounds")
    first = next((t["first_bad"] for t in threads if t["first_bad"]), "")
    emit(error={"endpoint": name, "non_2xx": bad, "socket_errors": figures["socket_errors"],
                "statuses": dict(statuses), "first_bad_answer": first})
    raise BenchFailed(f"bench/api.py: {name}: {bad} answers not 2xx and {socket_errors} socket "
                      f"errors (first: {first[:200]!r}){hint}")


def weighted_percentile(samples: list[tuple[float, float]], q: float) -> float:
    """The q-quantile of (value, weight) pairs."""
    ordered = sorted(samples)
    total = sum(w for _, w in ordered)
    running = 0.0
    for value, weight in ordered:
        running += weight
        if running >= q * total:
            return value
    return ordered[-1][0] if ordered else float("nan")


class Tally:
    """One server's runs, for the figures over all rounds."""

    def __init__(self) -> None:
        self.answered = 0
        self.sent = 0
        self.seconds = 0.0
        self.server_cpu = 0.0
        self.db_cpu = 0.0
        self.generator_cpu = 0.0
        self.quantiles: list[tuple[float, float]] = []
        self.statuses: Counter[str] = Counter()

    def add(self, figures: dict[str, Any], server_cpu: float, db_cpu: float,
            generator: float) -> None:
        self.answered += figures["requests"]
        self.sent += sum(t["sent"] for t in figures["threads"])
        self.seconds += figures["duration_us"] / 1e6
        self.server_cpu += server_cpu
        self.db_cpu += db_cpu
        self.generator_cpu += generator
        weight = figures["requests"] / max(1, len(figures["quantiles_us"]))
        self.quantiles += [(q, weight) for q in figures["quantiles_us"]]
        for t in figures["threads"]:
            self.statuses.update(t["statuses"])


def describe(name: str, figures: dict[str, Any], server_cpu: float, db_cpu: float,
             generator: float, **extra: Any) -> dict[str, Any]:
    seconds = figures["duration_us"] / 1e6
    sent = sum(t["sent"] for t in figures["threads"])
    statuses: Counter[str] = Counter()
    for t in figures["threads"]:
        statuses.update(t["statuses"])
    return figures_line(name, answered=figures["requests"], sent=sent, seconds=seconds,
                        p50_us=figures["latency_us"]["p50"],
                        p99_us=figures["latency_us"]["p99"], server_cpu=server_cpu,
                        db_cpu=db_cpu, generator=generator, statuses=dict(statuses), **extra)


def figures_line(name: str, *, answered: int, sent: int, seconds: float, p50_us: float,
                 p99_us: float, server_cpu: float, db_cpu: float, generator: float,
                 statuses: dict[str, int], **extra: Any) -> dict[str, Any]:
    # CPU is divided by the requests sent: those still in flight when wrk stopped were served
    # too (settle() waited for them), though wrk counts only the answers it read.
    return {"endpoint": name, **extra, "requests": answered, "sent": sent,
            "statuses": statuses, "seconds": round(seconds, 2),
            "rps": round(answered / seconds, 1),
            "p50_ms": round(p50_us / 1000, 1), "p99_ms": round(p99_us / 1000, 1),
            "server_cpu_ms_per_request": round(server_cpu * 1000 / max(1, sent), 3),
            "server_cpu_share": round(server_cpu / seconds, 2),
            "db_cpu_ms_per_request": round(db_cpu * 1000 / max(1, sent), 3),
            "generator_cpu_share": round(generator / seconds, 2)}


def overall(name: str, tally: Tally) -> dict[str, Any]:
    return figures_line(name, round="all", answered=tally.answered, sent=tally.sent,
                        seconds=tally.seconds,
                        p50_us=weighted_percentile(tally.quantiles, 0.50),
                        p99_us=weighted_percentile(tally.quantiles, 0.99),
                        server_cpu=tally.server_cpu, db_cpu=tally.db_cpu,
                        generator=tally.generator_cpu, statuses=dict(tally.statuses))


def start_profile(server: Any, path: str) -> subprocess.Popen[bytes]:
    spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "-o", path,
                            "--subprocesses", "--pid", str(server.proc.pid), "--nonblocking",
                            "--gil", "--rate", "400"]
                           + (["--format", "raw"] if not path.endswith(".svg") else []),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    return spy


def measure(servers: dict[str, Any], args: argparse.Namespace, pool: Path, pool_size: int,
            pg: Any) -> dict[str, dict[str, Any]]:
    """Warm every server up (not counted), then the rounds; returns the figures over all
    rounds per server."""
    offsets = dict.fromkeys(SERVERS, 0)  # each server walks the pool from its start

    def one(name: str, duration: int) -> tuple[dict[str, Any], float, float, float]:
        mode = "noop" if name == "ceiling" else "submit"
        figures, server_cpu, db_cpu, generator = run_wrk(
            servers[name], mode, args, pool, offsets[name], duration, pg)
        offsets[name] += args.threads * max(t["sent"] for t in figures["threads"])
        check_answers(name, figures, pool_size)
        return figures, server_cpu, db_cpu, generator

    for name in SERVERS:  # imports, connection pools, caches
        one(name, args.warmup)
    spy = start_profile(servers["submit"], args.profile) if args.profile else None
    tallies = {name: Tally() for name in SERVERS}
    try:
        for i in range(args.rounds):
            order = SERVERS[i % len(SERVERS):] + SERVERS[:i % len(SERVERS)]
            for name in order:
                run = one(name, args.duration)
                tallies[name].add(*run)
                emit(**describe(name, *run, round=i + 1))
    finally:
        if spy is not None:
            spy.send_signal(2)
            spy.wait(60)
    results = {name: overall(name, tallies[name]) for name in SERVERS}
    for result in results.values():
        emit(**result)
    return results


def targets(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    submit, bare_db, bare = results["submit"], results["bare-db"], results["bare"]
    throughput = submit["rps"] / bare_db["rps"]
    p99 = submit["p99_ms"] / bare_db["p99_ms"]
    cpu = submit["server_cpu_ms_per_request"]
    checks = {
        "throughput_vs_bare_db": {"value": round(throughput, 3), "target": ">= 0.5",
                                  "pass": throughput >= 0.5},
        "server_cpu_ms_per_submission": {"value": cpu, "target": "< 1.5", "pass": cpu < 1.5},
        "p99_vs_bare_db": {"value": round(p99, 2), "target": "<= 3", "pass": p99 <= 3},
    }
    return {"checks": checks, "met": all(c["pass"] for c in checks.values()),
            "submit_rps": submit["rps"], "bare_db_rps": bare_db["rps"], "bare_rps": bare["rps"],
            "generator_ceiling_rps": results["ceiling"]["rps"],
            "bare_share_of_ceiling": round(bare["rps"] / results["ceiling"]["rps"], 3),
            "submit_vs_bare": round(submit["rps"] / bare["rps"], 3),
            "submit_p99_ms": submit["p99_ms"], "bare_db_p99_ms": bare_db["p99_ms"],
            "all_2xx": True}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--participants", type=int, default=1000,
                        help="three submissions each; the submit runs must not use them all up")
    parser.add_argument("--concurrency", type=int, default=32, help="wrk connections")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers per server")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=3, help="seconds per timed run")
    parser.add_argument("--warmup", type=int, default=1, help="seconds per server, not counted")
    parser.add_argument("--submit-app", default="app.asgi:app",
                        help="the ASGI app to measure (e.g. a variant under bench/apps)")
    parser.add_argument("--submit-env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable for the submit server only (a variant, "
                        "e.g. WELLPANEL_RATE_LIMITS_ENABLED=false); repeatable")
    parser.add_argument("--profile", help="write a py-spy flame graph of the submit server")
    args = parser.parse_args()
    submit_env = dict(item.split("=", 1) for item in args.submit_env)
    if shutil.which("wrk") is None:
        sys.exit("bench/api.py needs wrk (Debian package wrk): run `make bench-deps`")

    from app.db import utcnow
    from bench.apps.bare_db import create_table
    from tests.reliability.harness import ServerProcess, seed
    from tests.support.pg import PostgresServer

    pg = PostgresServer.start()
    servers: dict[str, ServerProcess] = {}
    try:
        url = pg.url(pg.create_database())
        t0 = time.perf_counter()
        jobs = seed(url, args.participants, now=utcnow())
        create_table(url)
        logs = Path(tempfile.mkdtemp(prefix="wellpanel-bench-api-"))
        pool = logs / "pool.tsv"
        write_pool(jobs, pool)
        wrk_version = subprocess.run(["wrk", "--version"], capture_output=True,
                                     text=True).stdout.split("\n")[0]
        emit(setup={"participants": args.participants, "submissions": len(jobs),
                    "load_generator": wrk_version, "wrk_threads": args.threads,
                    "connections": args.concurrency, "rounds": args.rounds,
                    "seconds_per_run": args.duration, "uvicorn_workers": args.workers,
                    "database": "postgresql", "cpus": os.cpu_count(),
                    "load_average": [round(x, 2) for x in os.getloadavg()],
                    "python": platform.python_version(), "profiled": bool(args.profile),
                    "submit_app": args.submit_app, "submit_env": submit_env,
                    "seed_seconds": round(time.perf_counter() - t0, 1)}, logs=str(logs))
        apps = {"bare": "bench.apps.bare:app", "bare-db": "bench.apps.bare_db:app",
                "submit": args.submit_app}
        for name, app in apps.items():
            servers[name] = ServerProcess(url, app=app, workers=args.workers,
                                          log_path=logs / f"{name}.log",
                                          env_extra=submit_env if name == "submit" else {}
                                          ).start()
        servers["ceiling"] = servers["bare"]  # GET /noop on the bare server
        results = measure(servers, args, pool, len(jobs), pg)
        emit(result=targets(results))
    finally:
        for name, server in servers.items():
            if name != "ceiling":
                server.stop()
        pg.stop()


if __name__ == "__main__":
    main()

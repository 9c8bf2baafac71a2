"""Benchmark: verifying an audit ledger of 1,000,000 rows, full against incremental.

Builds a ledger of ``--rows`` rows (a realistic mix of actions and details, each hashed as
app.audit.service.append hashes it) in a throw-away SQLite database (or ``--database-url``, an
empty migrated PostgreSQL database), with a signed checkpoint every ``--every`` rows written by
the real checkpointing code (app.audit.anchor) into a temporary directory. Then, in the same run:

- ``full``: ``wellpanel audit verify`` (app.audit.checks.verify, full=True): every row's hash
  recomputed and every checkpoint's signature and head compared. This is the baseline.
- ``chain_only``: the chain alone (app.audit.service.verify), what verification was before the
  checkpoints, for reference.
- ``incremental``: after ``--new`` more rows are appended (the IRB page's case: a few rows since
  the last visit), ``verify`` from the last verified checkpoint: the checkpoints are still all
  compared, only rows after that checkpoint are recomputed.

Each is timed ``--rounds`` times and reported by its median; the incremental figure is also
given as a fraction of the full one. Prints one JSON object per line.

Run: ``.venv/bin/python bench/ledger_verify.py [--rows 1000000] [--every 1000] [--rounds 3]``
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import insert  # noqa: E402
from sqlmodel import Session  # noqa: E402

from app import migrate  # noqa: E402
from app.audit import anchor as anchoring  # noqa: E402
from app.audit import checks  # noqa: E402
from app.audit import service as audit  # noqa: E402
from app.audit.models import AuditEvent  # noqa: E402
from app.config import Settings  # noqa: E402
from app.db import make_engine  # noqa: E402

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
ACTIONS = [("response.store", "survey_instance"), ("consent.sign", "consent_record"),
           ("staff.view_consent_log", None), ("safety.flag", "safety_event"),
           ("participant.settings", "participant")]


def _row(seq: int, prev: str) -> dict:
    action, kind = ACTIONS[seq % len(ACTIONS)]
    at = T0 + timedelta(seconds=seq * 3)
    details = {"instrument": "phq9", "version": "1.0", "language": "de",
               "response_sha256": f"{seq:064x}", "scored": True}
    row = {"id": seq, "occurred_at": at, "actor": f"participant:{seq % 5000:08d}-0000-4000-8000"
           "-000000000000", "action": action, "target": f"{kind}:{seq}" if kind else None,
           "details": details, "old_value": None, "new_value": {"status": "active"},
           "prev_hash": prev}
    row["row_hash"] = audit.compute_hash(
        seq=seq, occurred_at=at, actor=row["actor"], action=action, target=row["target"],
        details=details, old_value=None, new_value=row["new_value"], prev_hash=prev)
    return row


def build(settings: Settings, rows: int, every: int, start: int = 1, prev: str | None = None
          ) -> tuple[str, float]:
    engine = make_engine(settings.database_url, begin_immediate=False)
    anchor = anchoring.Anchor(settings)
    prev = prev or audit.GENESIS_HASH
    began = time.perf_counter()
    table = AuditEvent.__table__  # type: ignore[attr-defined]
    seq = start
    with engine.connect() as connection:
        while seq < start + rows:
            block = []
            for _ in range(min(every, start + rows - seq)):
                row = _row(seq, prev)
                block.append(row)
                prev, seq = row["row_hash"], seq + 1
            connection.execute(insert(table), block)
            connection.commit()
            anchor.checkpoint(connection, now=block[-1]["occurred_at"])
            connection.commit()
    engine.dispose()
    return prev, time.perf_counter() - began


def timed(settings: Settings, *, full: bool, chain_only: bool = False) -> tuple[float, dict]:
    engine = make_engine(settings.database_url, begin_immediate=False)
    try:
        with Session(engine) as session:
            began = time.perf_counter()
            if chain_only:
                report = audit.verify(session)
            else:
                report = checks.verify(session, checks.load_view(settings), full=full)
            seconds = time.perf_counter() - began
    finally:
        engine.dispose()
    assert report.ok, report.first_broken
    return seconds, {"rows_recomputed": report.rows_checked, "mode": report.mode,
                     "checkpoints": report.checkpoints_checked}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--every", type=int, default=1000, help="rows per checkpoint")
    parser.add_argument("--new", type=int, default=500, help="rows added before incremental")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database-url", help="an empty database (default: a SQLite file)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="wellpanel-bench-ledger-") as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'ledger.db'}"
        migrate.upgrade(url)
        settings = Settings(database_url=url, environment="test", ledger_dir=Path(tmp) / "cp",
                            log_json=False)
        head, seconds = build(settings, args.rows, args.every)
        backend = "sqlite" if url.startswith("sqlite") else "postgresql"
        print(json.dumps({"step": "build", "rows": args.rows, "checkpoint_every": args.every,
                          "seconds": round(seconds, 1), "backend": backend,
                          "python": platform.python_version()}), flush=True)
        results: dict[str, list[float]] = {"full": [], "chain_only": [], "incremental": []}
        info: dict[str, dict] = {}
        seq = args.rows + 1
        for _ in range(args.rounds):
            s, info["full"] = timed(settings, full=True)  # also stores the verified position
            results["full"].append(s)
            s, info["chain_only"] = timed(settings, full=True, chain_only=True)
            results["chain_only"].append(s)
            head, _ = build(settings, args.new, args.every, start=seq, prev=head)
            seq += args.new
            s, info["incremental"] = timed(settings, full=False)
            results["incremental"].append(s)
        full = statistics.median(results["full"])
        for name, values in results.items():
            median = statistics.median(values)
            print(json.dumps({"step": f"verify_{name}", "median_seconds": round(median, 3),
                              "runs": [round(v, 3) for v in values], **info[name],
                              "baseline_full_seconds": round(full, 3),
                              "fraction_of_full": round(median / full, 4)}), flush=True)


if __name__ == "__main__":
    main()

"""Background jobs shared by every process: one table, leases on the real clock, heartbeats.

- :mod:`app.jobs.models`: the ``jobs`` table.
- :mod:`app.jobs.service`: enqueue, claim under a lease, heartbeat, complete, fail with a
  bounded retry, release; reclaim after a lease runs out.
- :mod:`app.jobs.runner`: the per-process worker thread that runs claimed jobs with the
  handler a domain registered for their kind (export, analysis).
"""

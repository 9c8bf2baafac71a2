"""The job table.

A job is claimed by one process at a time under a lease: ``claimed_by`` (the process's worker
id), ``claim_token`` (this claim; every write of the holder checks it, so a holder whose lease
ran out and was taken over can no longer finish the job) and ``lease_until``, measured on the
real clock (it tells whether a process is alive, not where the study is).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, Text
from sqlmodel import Field, SQLModel

from app.db import UTCDateTime

# queued -> running -> done | failed; running -> queued again on a retry or a release
JOB_STATUSES = ("queued", "running", "done", "failed")
JOB_KINDS = ("export", "analysis")


class Job(SQLModel, table=True):
    """One unit of background work; its domain keeps the results (e.g. export_jobs)."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_run_after", "status", "run_after"),)

    id: str = Field(primary_key=True, max_length=36)
    kind: str = Field(max_length=30)
    subject: str | None = Field(default=None, max_length=100, index=True)  # e.g. export_job:<id>
    status: str = Field(default="queued", max_length=20)
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    attempts: int = 0
    max_attempts: int = 3
    run_after: datetime = Field(sa_type=UTCDateTime)  # not claimed before (retry backoff)
    # while running (and while reserved for the process holding its in-memory secrets)
    claimed_by: str | None = Field(default=None, max_length=32)
    claim_token: str | None = Field(default=None, max_length=32)
    lease_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    heartbeat_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = Field(sa_type=UTCDateTime)
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


"""Background exports started from the researcher API and console."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Text
from sqlmodel import Field, SQLModel

from app.db import UTCDateTime

# queued -> running -> done | failed
JOB_STATUSES = ("queued", "running", "done", "failed")


class ExportJob(SQLModel, table=True):
    """One export requested by a staff member; the files live under the export directory."""

    __tablename__ = "export_jobs"

    id: str = Field(primary_key=True, max_length=36)  # random UUID: not guessable in URLs
    staff_id: int = Field(foreign_key="staff_members.id", index=True)
    status: str = Field(default="queued", max_length=20, index=True)
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    progress: float = 0.0  # 0..1
    row_counts: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSON, nullable=False))
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    archive_path: str | None = Field(default=None, max_length=1000)
    archive_sha256: str | None = Field(default=None, max_length=64)
    report_status: str | None = Field(default=None, max_length=20)  # running | done | failed
    report_path: str | None = Field(default=None, max_length=1000)
    created_at: datetime = Field(sa_type=UTCDateTime, index=True)
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)

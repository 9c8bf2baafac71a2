from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import JSON, Column, String
from sqlmodel import Field, SQLModel

from app.db import UTCDateTime


class AuditEvent(SQLModel, table=True):
    """One ledger row. `id` is the chain position and is part of the hashed content."""

    __tablename__ = "audit_events"

    id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    occurred_at: datetime = Field(sa_type=UTCDateTime, index=True)
    actor: str = Field(max_length=200, index=True)
    action: str = Field(max_length=100, index=True)
    target: str | None = Field(default=None, max_length=200, index=True)
    details: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    old_value: Any = Field(default=None, sa_column=Column(JSON, nullable=True))
    new_value: Any = Field(default=None, sa_column=Column(JSON, nullable=True))
    prev_hash: str = Field(sa_column=Column(String(64), nullable=False))
    row_hash: str = Field(sa_column=Column(String(64), nullable=False, unique=True))


class AuditEventPublic(BaseModel):
    id: int
    occurred_at: datetime
    actor: str
    action: str
    target: str | None
    details: dict[str, Any]
    old_value: Any
    new_value: Any
    prev_hash: str
    row_hash: str


class BrokenLink(BaseModel):
    """The first problem found. In the chain: edited | deleted | inserted | reordered. Against
    the checkpoints: rewritten (rows differ from what a checkpoint recorded) | truncated (rows
    a checkpoint recorded are gone). In the checkpoints themselves: bad_signature |
    foreign_key (signed by another key) | missing_checkpoints | bad_checkpoint | no_key |
    sink_mismatch (two sinks hold different entries under one number)."""

    seq: int | None
    problem: str
    message: str
    checkpoint: int | None = None  # the sink entry's number, when one is involved
    file: str | None = None  # ... and its file name
    last_row: int | None = None  # a range's end (missing rows, missing entries)


class CheckpointInfo(BaseModel):
    n: int
    kind: str  # checkpoint | restore
    seq: int
    head: str
    at: datetime
    file: str
    key_id: str
    backup: dict[str, Any] | None = None
    forced: bool | None = None  # a restore: was it forced past a later checkpoint
    source: str | None = None  # a restore: the backup file's name


class RollbackInfo(BaseModel):
    """A restore recorded in the sink that set the ledger back: rows after `to_seq` that
    earlier checkpoints vouched for were given up on purpose."""

    checkpoint: int
    at: datetime
    to_seq: int
    from_seq: int | None  # the highest row an earlier checkpoint had recorded
    forced: bool
    source: str


class ChainReport(BaseModel):
    ok: bool
    rows_checked: int  # rows whose hashes were recomputed in this run
    head_seq: int | None
    head_hash: str | None
    first_broken: BrokenLink | None = None
    mode: str = "full"  # full | incremental (from the last verified checkpoint)
    verified_from: int = 1  # the first row recomputed
    anchored: bool = False  # checked against signed checkpoints
    sink: str | None = None
    key_id: str | None = None
    checkpoints_checked: int = 0
    latest_checkpoint: CheckpointInfo | None = None
    unanchored_rows: int = 0  # rows after the latest checkpoint (only the chain vouches)
    rollbacks: list[RollbackInfo] = []
    warnings: list[str] = []  # e.g. entries not in the bucket yet, a locked object written over
    note: str = (
        "Rows up to the latest checkpoint are compared with its signed head hash, kept outside "
        "the database; rows after it are vouched for by the chain alone until the next one."
    )

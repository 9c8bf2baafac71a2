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
    seq: int
    problem: str  # edited | deleted | inserted | reordered
    message: str


class ChainReport(BaseModel):
    ok: bool
    rows_checked: int
    head_seq: int | None
    head_hash: str | None
    first_broken: BrokenLink | None = None
    note: str = (
        "Removal of the newest rows is only visible against a head hash recorded earlier; "
        "compare head_seq and head_hash with the last report you kept."
    )

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import JSON, Column, Text
from sqlmodel import Field, SQLModel

from app.db import UTCDateTime


class OutboxMessage(SQLModel, table=True):
    """A message to send. The address is looked up at send time, never stored here."""

    __tablename__ = "outbox_messages"

    id: int | None = Field(default=None, primary_key=True)
    participant_id: str = Field(foreign_key="participants.id", index=True, max_length=36)
    kind: str = Field(max_length=30)  # see app/notify/render.py MESSAGE_KINDS
    dedupe_key: str = Field(max_length=200, unique=True)
    status: str = Field(default="pending", max_length=20, index=True)
    attempts: int = 0
    next_attempt_at: datetime = Field(sa_type=UTCDateTime, index=True)
    created_at: datetime = Field(sa_type=UTCDateTime)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # while `sending`: who holds it and until when (real clock); see app/notify/service.py
    claim_token: str | None = Field(default=None, max_length=32)
    claimed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    lease_until: datetime | None = Field(default=None, sa_type=UTCDateTime, index=True)


class StaffAlert(SQLModel, table=True):
    """An email to a staff member (an on-call safety alert, an escalation): not a participant
    message, but sent over the same channel through its own outbox (app/notify/staff_alerts.py).
    The address is a staff address from the study file; the text is rendered at send time."""

    __tablename__ = "staff_alerts"

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=30)
    subject_ref: str = Field(max_length=100, index=True)  # what it is about: safety_event:42
    recipient_name: str = Field(max_length=100)
    recipient: str = Field(max_length=320)
    dedupe_key: str = Field(max_length=200, unique=True)
    status: str = Field(default="pending", max_length=20, index=True)
    attempts: int = 0
    next_attempt_at: datetime = Field(sa_type=UTCDateTime, index=True)
    claimed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(sa_type=UTCDateTime)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


# ---- researcher view of delivery problems (never an address, never an internal id) ----------

class NotificationCount(BaseModel):
    kind: str
    status: str
    count: int


class NotificationFailure(BaseModel):
    id: int
    kind: str
    status: str  # failed, or pending with an error (will be retried)
    attempts: int
    last_error: str | None  # addresses scrubbed
    created_at: datetime
    next_attempt_at: datetime
    pseudonym: str  # the IRB pseudonym, as on the IRB pages


class NotificationReport(BaseModel):
    counts: list[NotificationCount]
    failures: list[NotificationFailure]

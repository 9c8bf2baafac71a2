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


class MailContact(SQLModel, table=True):
    """How a participant may be emailed, kept by the notify domain (never an address here).

    - unsubscribe_hash: SHA-256 of the participant's List-Unsubscribe token (app/notify/
      unsubscribe.py), so the link finds its participant; the token itself is derived, never
      stored.
    - one_click: what a mail client's one-click unsubscribe does, as the participant chose on
      the unsubscribe page: "stop" (email contact, the default) or "pause" (participation).
    - email_stopped_at: email contact stopped (no invitations or reminders; mail the person
      asks for, such as sign-in links, still goes). Not a withdrawal.
    - undeliverable_*: the mail server refused the address for good (an SMTP 5xx, or a
      provider's bounce). `undeliverable_address` is a keyed hash of the refused address, so a
      change of address lifts it without the address being kept here.
    """

    __tablename__ = "mail_contacts"

    participant_id: str = Field(primary_key=True, foreign_key="participants.id", max_length=36)
    unsubscribe_hash: str | None = Field(default=None, max_length=64, unique=True)
    one_click: str = Field(default="stop", max_length=10)
    email_stopped_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    undeliverable_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    undeliverable_code: int | None = None
    undeliverable_source: str | None = Field(default=None, max_length=20)  # smtp|webhook|dsn
    undeliverable_address: str | None = Field(default=None, max_length=64)
    updated_at: datetime = Field(sa_type=UTCDateTime)


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
    claim_token: str | None = Field(default=None, max_length=32)  # the holder while `sending`
    lease_until: datetime | None = Field(default=None, sa_type=UTCDateTime)  # real clock
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


class UndeliverableContact(BaseModel):
    pseudonym: str  # the IRB pseudonym
    since: datetime  # when the address was refused for good
    code: int | None  # the SMTP reply code (550...), None for a provider's bounce without one
    source: str  # smtp (refused while sending) | webhook (a provider's report) | dsn (mailbox)


class UndeliverableReport(BaseModel):
    count: int
    contacts: list[UndeliverableContact]


class NotificationReport(BaseModel):
    counts: list[NotificationCount]
    failures: list[NotificationFailure]
    undeliverable: UndeliverableReport | None = None  # current addresses refused for good

from __future__ import annotations

from datetime import datetime
from typing import Literal

from sqlmodel import Field, SQLModel

from app.db import UTCDateTime

StaffRole = Literal["researcher", "irb", "admin"]
STAFF_ROLES: tuple[str, ...] = ("researcher", "irb", "admin")


class ParticipantCredential(SQLModel, table=True):
    """A magic-link token or a browser session of a participant; only the hash is stored."""

    __tablename__ = "participant_credentials"

    id: int | None = Field(default=None, primary_key=True)
    participant_id: str = Field(foreign_key="participants.id", index=True, max_length=36)
    kind: str = Field(max_length=10)  # link | session
    token_hash: str = Field(max_length=64, unique=True)
    created_at: datetime = Field(sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class StaffMember(SQLModel, table=True):
    __tablename__ = "staff_members"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100, unique=True)
    role: str = Field(max_length=20)
    token_hash: str = Field(max_length=64, unique=True)
    created_at: datetime = Field(sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class StaffSession(SQLModel, table=True):
    """A staff member's browser session (cookie); only the hash is stored."""

    __tablename__ = "staff_sessions"

    id: int | None = Field(default=None, primary_key=True)
    staff_id: int = Field(foreign_key="staff_members.id", index=True)
    token_hash: str = Field(max_length=64, unique=True)
    csrf_token: str = Field(max_length=64)
    created_at: datetime = Field(sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)

from __future__ import annotations

from datetime import datetime
from typing import Literal

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from app.db import UTCDateTime

# safety: works the safety-event queue (acknowledges; may reveal a participant's contact when
# the study file's safety.reveal_contact_roles names it), and nothing else of the console.
StaffRole = Literal["researcher", "irb", "admin", "safety"]
STAFF_ROLES: tuple[str, ...] = ("researcher", "irb", "admin", "safety")


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
    """A staff account. Its token (only the hash is kept) expires `staff_token_ttl_days` after
    `token_issued_at` (rotation issues a new one); `revoked_at` ends it for good."""

    __tablename__ = "staff_members"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100, unique=True)
    role: str = Field(max_length=20)
    token_hash: str = Field(max_length=64, unique=True)
    created_at: datetime = Field(sa_type=UTCDateTime)
    token_issued_at: datetime = Field(sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # The TOTP secret, Fernet-encrypted with a key derived from WELLPANEL_SECRET_KEY (see
    # app.auth.totp); the last accepted time step, so a code is never accepted twice.
    totp_secret: str | None = Field(default=None, max_length=255)
    totp_last_step: int | None = Field(default=None)


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


class StaffLoginChallenge(SQLModel, table=True):
    """The second step of a staff login: the token was right, the TOTP code is still due.
    Short-lived, used once, and dead after a few wrong codes; only the hash is stored."""

    __tablename__ = "staff_login_challenges"

    id: int | None = Field(default=None, primary_key=True)
    staff_id: int = Field(foreign_key="staff_members.id", index=True)
    token_hash: str = Field(max_length=64, unique=True)
    created_at: datetime = Field(sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    wrong_codes: int = Field(default=0)


class StaffLoginFailure(SQLModel, table=True):
    """Failed staff logins counted per minute, client IP and channel (web, api, totp). The
    ledger gets the first failure of each such minute only (app.auth.service.
    record_failed_login); the exact count is kept here."""

    __tablename__ = "staff_login_failures"
    __table_args__ = (UniqueConstraint("window_start", "ip", "channel"),)

    id: int | None = Field(default=None, primary_key=True)
    window_start: datetime = Field(sa_type=UTCDateTime, index=True)
    ip: str = Field(max_length=64)
    channel: str = Field(max_length=10)
    attempts: int = Field(default=1)
    ledgered: bool = Field(default=False)


class StaffMemberPublic(SQLModel):
    """A staff member as listed (CLI, admin page, API): never the token or the TOTP secret."""

    id: int
    name: str
    role: str
    status: str  # active | revoked | expired
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None
    second_factor: bool

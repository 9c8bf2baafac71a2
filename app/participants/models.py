from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, EmailStr, field_validator
from pydantic import Field as PField
from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from app.config import SUPPORTED_LANGUAGES
from app.db import UTCDateTime
from app.participants.timezones import canonical_zone

# enrolled: joined, consent not yet given; active: consented; declined: declined consent;
# paused: no invitations for now; withdrawn: never contacted or scheduled again.
STATUSES = ("enrolled", "active", "declined", "paused", "withdrawn", "completed")


class Participant(SQLModel, table=True):
    __tablename__ = "participants"

    id: str = Field(primary_key=True, max_length=36)  # random UUID, never leaves the server
    study_id: int = Field(foreign_key="studies.id", index=True)
    status: str = Field(default="enrolled", max_length=20, index=True)
    language: str = Field(max_length=10)
    timezone: str = Field(max_length=64)
    created_at: datetime = Field(sa_type=UTCDateTime)
    enrolled_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    withdrawn_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class Contact(SQLModel, table=True):
    """Contact details, kept apart from research tables and never exported or logged."""

    __tablename__ = "contacts"
    __table_args__ = (UniqueConstraint("study_id", "email"),)

    participant_id: str = Field(primary_key=True, foreign_key="participants.id", max_length=36)
    study_id: int = Field(foreign_key="studies.id", index=True)
    email: str = Field(max_length=320)
    verified_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)


class EmailChange(SQLModel, table=True):
    """A requested new address, used only once confirmed from a link sent to that address.

    Kept beside ``contacts`` (never in research tables); erased with the contact on withdrawal.
    """

    __tablename__ = "email_changes"

    id: int | None = Field(default=None, primary_key=True)
    participant_id: str = Field(foreign_key="participants.id", index=True, max_length=36)
    new_email: str = Field(max_length=320)
    token_hash: str = Field(max_length=64, unique=True)
    created_at: datetime = Field(sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    confirmed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    cancelled_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # Once confirmed, the address it replaced can take the change back for a while: whoever
    # held a link must not be able to move the contact to their own mailbox silently.
    old_email: str | None = Field(default=None, max_length=320)
    undo_token_hash: str | None = Field(default=None, max_length=64, unique=True, index=True)
    undo_expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    undone_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class ScreeningTally(SQLModel, table=True):
    """Ineligible people leave nothing behind but this count."""

    __tablename__ = "screening_tallies"

    study_id: int = Field(primary_key=True, foreign_key="studies.id")
    outcome: str = Field(primary_key=True, max_length=20)  # eligible | ineligible
    count: int = 0


# ---- API schemas ---------------------------------------------------------------------------

def check_timezone(value: str) -> str:
    """A zone of the offered list; a deprecated alias (US/Eastern) becomes the zone it means."""
    zone = canonical_zone(value)
    if zone is None:
        raise ValueError(f"unknown time zone {value!r}; use an IANA name such as Europe/Berlin")
    return zone


def check_language(value: str) -> str:
    if value not in SUPPORTED_LANGUAGES:
        raise ValueError(
            f"unsupported language {value!r}; use one of {', '.join(SUPPORTED_LANGUAGES)}")
    return value


class EnrollmentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: EmailStr
    language: str = "en"
    timezone: str = "UTC"
    screening: dict[str, bool] = PField(max_length=50)

    _tz = field_validator("timezone")(check_timezone)
    _lang = field_validator("language")(check_language)

    @field_validator("email")
    @classmethod
    def _normalize_email(cls, value: str) -> str:
        return value.strip().lower()


class EnrollmentAnswer(BaseModel):
    eligible: bool
    message: str


class ParticipantMe(BaseModel):
    study: str
    status: str
    language: str
    timezone: str
    enrolled_at: datetime | None
    consent_version: str | None
    consent_current_version: str
    needs_consent: bool
    needs_reconsent: bool


class SettingsUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timezone: str | None = None
    language: str | None = None

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str | None) -> str | None:
        return None if value is None else check_timezone(value)

    @field_validator("language")
    @classmethod
    def _lang(cls, value: str | None) -> str | None:
        return None if value is None else check_language(value)


class EmailChangeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: EmailStr

    @field_validator("email")
    @classmethod
    def _normalize_email(cls, value: str) -> str:
        return value.strip().lower()


class EmailChangeConfirm(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str = PField(min_length=1, max_length=200)


class EmailChangeAnswer(BaseModel):
    """The same answer whether or not the address is free: it reveals no enrollment."""

    message: str


class UpcomingSurvey(BaseModel):
    instrument: str
    schedule_entry: str
    wave: int
    status: str
    opens_at: datetime
    closes_at: datetime
    local_time: str
    timezone: str

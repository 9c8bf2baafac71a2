from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from pydantic import Field as PField
from sqlalchemy import JSON, Column, Float, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.db import UTCDateTime

# planned -> open -> completed | expired; cancelled when withdrawn or superseded by an amendment
INSTANCE_STATUSES = ("planned", "open", "completed", "expired", "cancelled")


class SurveyInstance(SQLModel, table=True):
    """One administration of one instrument to one participant."""

    __tablename__ = "survey_instances"
    __table_args__ = (
        UniqueConstraint("participant_id", "protocol_version", "schedule_entry", "instrument_key",
                         "wave"),
    )

    id: str = Field(primary_key=True, max_length=36)  # random UUID: not guessable in URLs
    participant_id: str = Field(foreign_key="participants.id", index=True, max_length=36)
    protocol_version: int
    schedule_entry: str = Field(max_length=64)
    instrument_key: str = Field(max_length=64)
    instrument_version: str = Field(max_length=20)
    wave: int
    position: int  # order within the occasion (baseline first, etc.)
    status: str = Field(default="planned", max_length=20, index=True)
    scheduled_at: datetime = Field(sa_type=UTCDateTime, index=True)
    local_time: str = Field(max_length=32)  # the wall time in `timezone`, ISO without offset
    timezone: str = Field(max_length=64)
    closes_at: datetime = Field(sa_type=UTCDateTime, index=True)
    opened_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    first_viewed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    completed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(sa_type=UTCDateTime)


class SurveyResponse(SQLModel, table=True):
    """The raw answers exactly as accepted, with the instrument version and language."""

    __tablename__ = "survey_responses"
    __table_args__ = (UniqueConstraint("participant_id", "idempotency_key"),)

    id: int | None = Field(default=None, primary_key=True)
    instance_id: str = Field(foreign_key="survey_instances.id", unique=True, max_length=36)
    participant_id: str = Field(foreign_key="participants.id", index=True, max_length=36)
    instrument_key: str = Field(max_length=64)
    instrument_version: str = Field(max_length=20)
    language: str = Field(max_length=10)
    translation_status: str = Field(max_length=20)
    answers: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    submitted_at: datetime = Field(sa_type=UTCDateTime, index=True)
    idempotency_key: str = Field(max_length=200)
    request_sha256: str = Field(max_length=64)


class ResponseScore(SQLModel, table=True):
    __tablename__ = "response_scores"

    response_id: int = Field(primary_key=True, foreign_key="survey_responses.id")
    primary_name: str = Field(max_length=40)
    primary: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    raw: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    raw_sum: float = Field(sa_column=Column(Float, nullable=False))
    band: str | None = Field(default=None, max_length=40)
    valid: bool
    n_answered: int
    n_items: int
    prorated: bool
    subscales: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    scored_at: datetime = Field(sa_type=UTCDateTime)


class SafetyEvent(SQLModel, table=True):
    """An answer that needs a human to look (e.g. PHQ-9 item 9 above 0)."""

    __tablename__ = "safety_events"

    id: int | None = Field(default=None, primary_key=True)
    participant_id: str = Field(foreign_key="participants.id", index=True, max_length=36)
    response_id: int = Field(foreign_key="survey_responses.id", index=True)
    flag: str = Field(max_length=40)
    created_at: datetime = Field(sa_type=UTCDateTime, index=True)
    acknowledged_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    acknowledged_by: int | None = Field(default=None, foreign_key="staff_members.id")
    note: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # when the escalation contact was alerted (the study file's acknowledgement deadline passed)
    escalated_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


# ---- API schemas ---------------------------------------------------------------------------

class SurveySummary(BaseModel):
    id: str
    instrument: str
    title: str
    status: str
    wave: int
    opens_at: datetime
    closes_at: datetime
    local_time: str
    timezone: str


class ResponseSubmit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    answers: dict[str, Any] = PField(max_length=200)


class ScoresPublic(BaseModel):
    primary_name: str
    primary: float | None
    raw: float | None
    band: str | None
    band_label: str | None
    valid: bool
    n_answered: int
    n_items: int
    prorated: bool
    subscales: dict[str, float | None]


class CrisisResource(BaseModel):
    """One entry of the crisis help: a line of the participant's country, an emergency number
    (kind "emergency"; no phone when the country is unknown), or a directory."""

    kind: Literal["line", "emergency", "directory"] = "line"
    name: str
    phone: str | None = None
    url: str | None = None
    hours: str | None = None  # "24/7" or the opening times in the participant's language


class SubmissionResult(BaseModel):
    response_id: int
    instance_id: str
    instrument: str
    submitted_at: datetime
    replayed: bool
    scores: ScoresPublic | None
    show_crisis_resources: bool
    crisis_resources: list[CrisisResource]


class SafetyEventPublic(BaseModel):
    id: int
    pseudonym: str
    flag: str
    instrument: str
    created_at: datetime
    acknowledged_at: datetime | None
    note: str | None
    # What a reviewer needs to weigh the event (never an address): the answer that raised the
    # flag (e.g. PHQ-9 item 9), the instrument's score and band, how long it waited, who
    # acknowledged it, and when it escalated.
    study: str | None = None
    participant_status: str | None = None  # withdrawn: never to be contacted
    trigger_item: str | None = None
    trigger_value: Any = None
    trigger_label: str | None = None  # the chosen option's label, in English
    score_name: str | None = None
    score: float | None = None
    band: str | None = None
    band_label: str | None = None
    waiting_seconds: int | None = None  # until acknowledged, or until now while open
    acknowledged_by: str | None = None  # the staff member's name
    escalated_at: datetime | None = None

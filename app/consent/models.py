from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator
from pydantic import Field as PField
from sqlalchemy import JSON, Column, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.db import UTCDateTime


class ConsentVersion(SQLModel, table=True):
    """A published consent version. Never changed once published."""

    __tablename__ = "consent_versions"
    __table_args__ = (UniqueConstraint("study_id", "version"),)

    id: int | None = Field(default=None, primary_key=True)
    study_id: int = Field(foreign_key="studies.id", index=True)
    version: str = Field(max_length=20)
    ordinal: int  # publication order within the study
    approval_ref: str = Field(max_length=200)
    requires_reconsent: bool = False
    statements: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    signature_meaning: dict[str, str] = Field(sa_column=Column(JSON, nullable=False))
    published_at: datetime = Field(sa_type=UTCDateTime)


class ConsentDocument(SQLModel, table=True):
    __tablename__ = "consent_documents"
    __table_args__ = (UniqueConstraint("consent_version_id", "language"),)

    id: int | None = Field(default=None, primary_key=True)
    consent_version_id: int = Field(foreign_key="consent_versions.id", index=True)
    language: str = Field(max_length=10)
    sha256: str = Field(max_length=64)
    body_md: str = Field(sa_column=Column(Text, nullable=False))


class ConsentRecord(SQLModel, table=True):
    """What one person decided about one consent version. Append-only (triggers on PostgreSQL)."""

    __tablename__ = "consent_records"

    id: int | None = Field(default=None, primary_key=True)
    participant_id: str = Field(foreign_key="participants.id", index=True, max_length=36)
    consent_version_id: int = Field(foreign_key="consent_versions.id", index=True)
    decision: str = Field(max_length=10)  # consent | decline
    language: str = Field(max_length=10)
    document_sha256: str = Field(max_length=64)
    signature_name: str | None = Field(default=None, max_length=200)
    signature_meaning: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    statements: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    decided_at: datetime = Field(sa_type=UTCDateTime, index=True)
    identity_method: str = Field(max_length=40)
    identity_verified_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class ConsentCopy(SQLModel, table=True):
    """What the participant signed, frozen at signing: the document, the statements they ticked
    as worded in their language, the signature's meaning and the record's fields, as canonical
    JSON with its SHA-256 (also in the ledger's consent.sign row). The copy they download is
    made from this, after the hash is checked, never re-rendered from tables that may have
    changed since. Append-only (triggers)."""

    __tablename__ = "consent_copies"

    record_id: int = Field(primary_key=True, foreign_key="consent_records.id")
    sha256: str = Field(max_length=64)
    content: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(sa_type=UTCDateTime)


class Withdrawal(SQLModel, table=True):
    """A withdrawal in two steps: requested (with a scope), then confirmed."""

    __tablename__ = "withdrawals"

    id: int | None = Field(default=None, primary_key=True)
    participant_id: str = Field(foreign_key="participants.id", index=True, max_length=36)
    scope: str = Field(max_length=20)  # stop_contact | delete_data
    requested_at: datetime = Field(sa_type=UTCDateTime)
    confirm_token_hash: str = Field(max_length=64, unique=True)
    confirmed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    data_deleted: bool = False
    outcome_note: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


# ---- API schemas ---------------------------------------------------------------------------

WithdrawalScope = Literal["stop_contact", "delete_data"]


class ConsentSubmit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str = PField(min_length=1, max_length=20)
    language: str = PField(min_length=2, max_length=10)
    decision: Literal["consent", "decline"] = "consent"
    signature_name: str | None = PField(default=None, max_length=200)
    statements: list[str] = PField(default_factory=list, max_length=50)

    @field_validator("signature_name")
    @classmethod
    def _strip(cls, value: str | None) -> str | None:
        return value.strip() if value is not None else None


class LanguageStatus(BaseModel):
    """Who wrote one language version of a consent document and whether the ethics committee
    approved it (the study file's consent/versions/*/languages). A version that only lists its
    languages has them all covered by its approval, with no status given."""

    status: Literal["original", "study_translation"] | None = None
    approved: bool = True

    @property
    def kind(self) -> str:
        """original | approved_translation | study_translation | approved | not_approved"""
        if self.status == "original":
            return "original"
        if self.status == "study_translation":
            return "approved_translation" if self.approved else "study_translation"
        return "approved" if self.approved else "not_approved"


class ConsentRecordPublic(BaseModel):
    id: int
    study: str
    version: str
    decision: str
    language: str
    document_sha256: str
    signature_name: str | None
    signature_meaning: str | None
    statements: list[str]
    decided_at: datetime
    identity_method: str
    identity_verified_at: datetime | None
    # the version's approval and its language versions as they stood when the record was made
    approval_ref: str | None = None
    language_versions: dict[str, LanguageStatus] = PField(default_factory=dict)


class ConsentCopyEmail(BaseModel):
    queued: bool  # False: the same copy was asked for minutes ago and is on its way already
    per_day: int  # how many copies may be emailed in 24 hours


class StatementPublic(BaseModel):
    id: str
    text: str
    required: bool


class ConsentDocumentPublic(BaseModel):
    study: str
    version: str
    approval_ref: str
    language: str
    available_languages: list[str]
    requested_language_available: bool
    sha256: str
    body_markdown: str
    body_html: str
    statements: list[StatementPublic]
    signature_meaning: str
    language_versions: dict[str, LanguageStatus] = PField(default_factory=dict)


class WithdrawalRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scope: WithdrawalScope


class WithdrawalStarted(BaseModel):
    withdrawal_id: int
    scope: WithdrawalScope
    confirm_token: str
    what_happens: str


class WithdrawalConfirm(BaseModel):
    model_config = ConfigDict(extra="forbid")

    confirm_token: str = PField(min_length=10, max_length=200)


class WithdrawalDone(BaseModel):
    scope: WithdrawalScope
    confirmed_at: datetime
    data_deleted: bool
    note: str


class RequiredElementReview(BaseModel):
    """A required element of consent, the rules it comes from, and the section of every
    language's document that holds it (checked at study load)."""

    id: str
    title: str
    regulations: list[str]
    section: str


class ConsentVersionReview(BaseModel):
    study: str
    version: str
    ordinal: int
    approval_ref: str
    requires_reconsent: bool
    published_at: datetime
    current: bool
    languages: dict[str, str]  # language -> document SHA-256
    language_versions: dict[str, LanguageStatus] = PField(default_factory=dict)
    required_elements: list[RequiredElementReview] = PField(default_factory=list)


class ConsentLogEntry(BaseModel):
    """One line of the consent log an IRB reviewer sees: a decision or a withdrawal."""

    at: datetime
    action: str  # consent | decline | withdraw
    pseudonym: str
    study: str
    version: str | None
    language: str | None
    document_sha256: str | None
    identity_method: str | None
    statements: list[str]
    record_id: int | None
    scope: str | None = None
    data_deleted: bool | None = None


class ConsentHistory(BaseModel):
    pseudonym: str
    study: str
    status: str
    entries: list[ConsentLogEntry]

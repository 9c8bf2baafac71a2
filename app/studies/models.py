from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.db import UTCDateTime


class Study(SQLModel, table=True):
    __tablename__ = "studies"

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=64, unique=True)
    created_at: datetime = Field(sa_type=UTCDateTime)


class ProtocolVersion(SQLModel, table=True):
    """An immutable snapshot of a study file (with everything it references) as loaded."""

    __tablename__ = "protocol_versions"
    __table_args__ = (UniqueConstraint("study_id", "version"),)

    id: int | None = Field(default=None, primary_key=True)
    study_id: int = Field(foreign_key="studies.id", index=True)
    version: int
    sha256: str = Field(max_length=64)
    consent_current: str = Field(max_length=20)  # the consent version new signatures use
    content: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    loaded_at: datetime = Field(sa_type=UTCDateTime)
    loaded_by: str = Field(max_length=200)


class LoadResult(BaseModel):
    study_key: str
    protocol_version: int
    created: bool  # False when the same protocol was already loaded
    new_consent_versions: list[str]


class StudyPublic(BaseModel):
    key: str
    title: str
    description: str
    languages: list[str]
    protocol_version: int

"""Safety events: researchers list and acknowledge them; the irb role reads them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from app.audit import service as audit
from app.auth.deps import NowDep, SessionDep, SettingsDep, require_staff
from app.auth.models import StaffMember
from app.surveys import service as surveys
from app.surveys.models import SafetyEventPublic

router = APIRouter(tags=["staff"])
StaffDep = Annotated[StaffMember, Depends(require_staff("researcher", "irb"))]
ResearcherDep = Annotated[StaffMember, Depends(require_staff("researcher"))]


class SafetyAcknowledge(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str = Field(min_length=1, max_length=surveys.NOTE_MAX_CHARS)


def _list(staff: StaffMember, session: SessionDep, secret: str, open_only: bool,
          now: datetime) -> list[SafetyEventPublic]:
    events = surveys.safety_events(session, secret, open_only=open_only)
    audit.append(session, actor=f"staff:{staff.id}", action="staff.view_safety_events",
                 details={"rows": len(events), "open_only": open_only}, now=now)
    session.commit()
    return events


@router.get("/api/v1/researcher/safety-events", response_model=list[SafetyEventPublic])
def researcher_safety_events(staff: StaffDep, session: SessionDep, settings: SettingsDep,
                             now: NowDep, open_only: bool = False) -> list[SafetyEventPublic]:
    return _list(staff, session, settings.secret_key, open_only, now)


@router.get("/api/v1/irb/safety-events", response_model=list[SafetyEventPublic])
def irb_safety_events(staff: StaffDep, session: SessionDep, settings: SettingsDep,
                      now: NowDep, open_only: bool = False) -> list[SafetyEventPublic]:
    return _list(staff, session, settings.secret_key, open_only, now)


@router.post("/api/v1/researcher/safety-events/{event_id}/acknowledge",
             response_model=SafetyEventPublic)
def acknowledge_safety_event(event_id: int, body: SafetyAcknowledge, staff: ResearcherDep,
                             session: SessionDep, settings: SettingsDep,
                             now: NowDep) -> SafetyEventPublic:
    """404 for an unknown id, 409 if someone already acknowledged it."""
    event = surveys.acknowledge_safety_event(session, event_id, staff_id=staff.id,  # type: ignore[arg-type]
                                             note=body.note, now=now)
    return surveys.safety_event_public(session, settings.secret_key, event)

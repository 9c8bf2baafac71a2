"""Safety events: researchers and the safety role list and acknowledge them, the irb role reads
them, and staff the study file names may reveal a participant's contact to follow one up."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, ConfigDict, Field

from app.audit import service as audit
from app.auth.deps import NowDep, SessionDep, SettingsDep, require_staff
from app.auth.models import StaffMember
from app.safety import service as safety
from app.surveys import service as surveys
from app.surveys.models import SafetyEventPublic

router = APIRouter(tags=["staff"])
StaffDep = Annotated[StaffMember, Depends(require_staff("researcher", "irb", "safety"))]
HandlerDep = Annotated[StaffMember, Depends(require_staff("researcher", "safety"))]


class SafetyAcknowledge(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str = Field(min_length=1, max_length=surveys.NOTE_MAX_CHARS)


class ContactRevealRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=safety.REASON_MIN, max_length=safety.REASON_MAX,
                        description="Why the address is needed (written to the audit ledger)")


def _list(staff: StaffMember, session: SessionDep, secret: str, open_only: bool,
          now: datetime) -> list[SafetyEventPublic]:
    events = surveys.safety_events(session, secret, open_only=open_only, now=now)
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
def acknowledge_safety_event(event_id: int, body: SafetyAcknowledge, staff: HandlerDep,
                             session: SessionDep, settings: SettingsDep,
                             now: NowDep) -> SafetyEventPublic:
    """404 for an unknown id, 409 if someone already acknowledged it."""
    event = surveys.acknowledge_safety_event(session, event_id, staff_id=staff.id,  # type: ignore[arg-type]
                                             note=body.note, now=now)
    return surveys.safety_event_public(session, settings.secret_key, event)


@router.post("/api/v1/researcher/safety-events/{event_id}/contact",
             response_model=safety.ContactReveal)
def reveal_contact(event_id: int, body: ContactRevealRequest, staff: HandlerDep,
                   session: SessionDep, settings: SettingsDep, now: NowDep,
                   response: Response) -> safety.ContactReveal:
    """The participant's email address, to follow up on the event, for staff whose role or
    name the study file's safety block lists (403 reveal_not_allowed for others, recorded in
    the ledger too). Withdrawn or erased participants: no address, and the outcome says why."""
    try:
        revealed = safety.reveal_contact(session, settings.secret_key, event_id, staff,
                                         body.reason, via="api", now=now)
    except safety.RevealRefused:
        session.commit()  # the refusal stays on record
        raise
    session.commit()
    response.headers["Cache-Control"] = "no-store"  # an address: never kept in a cache
    return revealed

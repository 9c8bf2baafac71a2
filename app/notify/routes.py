"""Researchers see what the outbox could not deliver (counts, failures; never an address)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from app.auth.deps import SessionDep, SettingsDep, require_staff
from app.auth.models import StaffMember
from app.notify import service as notify
from app.notify.models import NotificationReport

router = APIRouter(prefix="/api/v1/researcher", tags=["staff"])
ResearcherDep = Annotated[StaffMember, Depends(require_staff("researcher"))]


@router.get("/notifications", response_model=NotificationReport)
def notifications(
    staff: ResearcherDep, session: SessionDep, settings: SettingsDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> NotificationReport:
    return NotificationReport(
        counts=notify.status_counts(session),
        failures=notify.list_failures(session, settings.secret_key, limit=limit))

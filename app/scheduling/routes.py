"""Researchers watch compliance: per instrument and wave, and who keeps missing surveys."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from app.audit import service as audit
from app.auth.deps import NowDep, SessionDep, SettingsDep, require_staff
from app.auth.models import StaffMember
from app.scheduling import compliance
from app.scheduling.compliance import ComplianceReport

router = APIRouter(prefix="/api/v1/researcher", tags=["researcher"])
ResearcherDep = Annotated[StaffMember, Depends(require_staff("researcher"))]


@router.get("/compliance", response_model=ComplianceReport)
def compliance_report(
    staff: ResearcherDep, session: SessionDep, settings: SettingsDep, now: NowDep,
    study: Annotated[str | None, Query(min_length=1, max_length=64,
                                       description="study key (default: the only study)")]
    = None,
    missed_in_a_row: Annotated[int, Query(ge=1, le=100, description=(
        "list participants whose longest run of missed sittings is at least this long"))] = 3,
) -> ComplianceReport:
    found = compliance.find_study(session, study)
    report = compliance.compliance(session, found, secret_key=settings.secret_key, now=now,
                                   missed_in_a_row=missed_in_a_row)
    # Pseudonyms of named participants are shown: who looked, and when, is on the ledger.
    audit.append(session, actor=f"staff:{staff.id}", action="staff.view_compliance",
                 target=f"study:{found.key}",
                 details={"missed_in_a_row": missed_in_a_row, "listed": report.missed.count},
                 now=now)
    session.commit()
    return report

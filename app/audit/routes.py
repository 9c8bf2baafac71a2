"""Audit chain verification for the irb role."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from app.audit import service as audit
from app.audit.models import ChainReport
from app.auth.deps import NowDep, SessionDep, require_staff
from app.auth.models import StaffMember

router = APIRouter(prefix="/api/v1/irb", tags=["irb"])


@router.get("/audit/verify", response_model=ChainReport)
def verify_chain(
    staff: Annotated[StaffMember, Depends(require_staff("irb"))], session: SessionDep,
    now: NowDep,
) -> ChainReport:
    report = audit.verify(session)
    audit.append(session, actor=f"staff:{staff.id}", action="staff.verify_audit_chain",
                 details={"ok": report.ok, "rows_checked": report.rows_checked}, now=now)
    session.commit()
    return report

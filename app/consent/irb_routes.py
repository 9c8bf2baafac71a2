"""Read-only consent review for the irb role (admins too)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from app.audit import service as audit
from app.auth.deps import NowDep, SessionDep, SettingsDep, require_staff
from app.auth.models import StaffMember
from app.consent import service as consent
from app.consent.models import ConsentHistory, ConsentLogEntry, ConsentVersionReview
from app.studies.models import Study

router = APIRouter(prefix="/api/v1/irb", tags=["irb"])
IrbDep = Annotated[StaffMember, Depends(require_staff("irb"))]


def _day_start(value: date | None) -> datetime | None:
    return datetime.combine(value, time.min, tzinfo=UTC) if value else None


@router.get("/consent-versions", response_model=list[ConsentVersionReview])
def consent_versions(staff: IrbDep, session: SessionDep) -> list[ConsentVersionReview]:
    return consent.review_versions(session)


@router.get("/consent-log", response_model=list[ConsentLogEntry],
            responses={200: {"content": {"text/csv": {}}}})
def consent_log(
    staff: IrbDep, session: SessionDep, settings: SettingsDep, now: NowDep,
    date_from: Annotated[date | None, Query(alias="from")] = None,
    date_to: Annotated[date | None, Query(alias="to", description="inclusive")] = None,
    version: Annotated[str | None, Query(max_length=20)] = None,
    action: Literal["consent", "decline", "withdraw"] | None = None,
    format: Literal["json", "csv"] = "json",
) -> list[ConsentLogEntry] | Response:
    entries = consent.consent_log(
        session, settings.secret_key, date_from=_day_start(date_from),
        date_to=_day_start(date_to + timedelta(days=1)) if date_to else None,
        version=version, action=action)
    audit.append(session, actor=f"staff:{staff.id}", action="staff.view_consent_log",
                 details={"from": str(date_from), "to": str(date_to), "version": version,
                          "action": action, "format": format, "rows": len(entries)}, now=now)
    session.commit()
    if format == "csv":
        return Response(consent.consent_log_csv(entries), media_type="text/csv",
                        headers={"Content-Disposition": 'attachment; filename="consent-log.csv"'})
    return entries


@router.get("/participants/{pseudonym}/consent-history", response_model=ConsentHistory)
def consent_history(
    pseudonym: str, staff: IrbDep, session: SessionDep, settings: SettingsDep, now: NowDep
) -> ConsentHistory:
    participant = consent.participant_by_pseudonym(session, settings.secret_key, pseudonym)
    entries = consent.consent_log(session, settings.secret_key, participant_id=participant.id)
    study = session.get(Study, participant.study_id)
    audit.append(session, actor=f"staff:{staff.id}", action="staff.view_consent_history",
                 target=f"participant:{participant.id}", now=now)
    session.commit()
    return ConsentHistory(pseudonym=pseudonym, study=study.key,  # type: ignore[union-attr]
                          status=participant.status, entries=entries)

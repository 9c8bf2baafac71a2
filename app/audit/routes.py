"""The audit ledger for the irb role (admins too): verification against the signed
checkpoints, the entries (filtered, paginated, CSV) and the latest checkpoints."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from app.audit import checks, listing
from app.audit import service as audit
from app.audit.models import ChainReport
from app.auth.deps import NowDep, SessionDep, SettingsDep, require_staff
from app.auth.models import StaffMember
from app.config import Settings
from app.core.errors import ValidationFailed

router = APIRouter(prefix="/api/v1/irb", tags=["irb"])
IrbDep = Annotated[StaffMember, Depends(require_staff("irb"))]


@router.get("/audit/verify", response_model=ChainReport)
def verify_chain(
    staff: IrbDep, session: SessionDep, settings: SettingsDep, now: NowDep,
    full: Annotated[bool, Query(description="recompute every row, not only those after the "
                                            "last verified checkpoint")] = False,
) -> ChainReport:
    report = checks.ledger_status(session, settings, full=full, recent=0).report
    audit.append(session, actor=f"staff:{staff.id}", action="staff.verify_audit_chain",
                 details={"ok": report.ok, "rows_checked": report.rows_checked,
                          "mode": report.mode}, now=now)
    session.commit()
    return report


@router.get("/audit/checkpoints", response_model=checks.LedgerStatus)
def checkpoints(
    staff: IrbDep, session: SessionDep, settings: SettingsDep, now: NowDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> checks.LedgerStatus:
    """The latest checkpoints (newest first), the public key that signs them, and an
    incremental verification against them."""
    status = checks.ledger_status(session, settings, recent=limit)
    audit.append(session, actor=f"staff:{staff.id}", action="staff.view_ledger_checkpoints",
                 details={"ok": status.report.ok}, now=now)
    session.commit()
    return status


def ledger_filter(session: SessionDep, settings: Settings, *, date_from: date | None,
                  date_to: date | None, action: str | None, actor: str | None,
                  pseudonym: str | None) -> listing.LedgerFilter:
    """The filter from query values; an unknown pseudonym is a validation error (never a
    silently empty list)."""
    from app.consent import service as consent
    from app.core.errors import NotFound

    def participant(value: str, field: str) -> str:
        try:
            return consent.participant_by_pseudonym(session, settings.secret_key, value).id
        except NotFound as exc:
            raise ValidationFailed("No participant has this pseudonym.",
                                   details={"field": field}) from exc

    if actor and actor.startswith("participant:"):
        actor = "participant:" + participant(actor.removeprefix("participant:"), "actor")
    person = participant(pseudonym, "pseudonym") if pseudonym else None
    return listing.LedgerFilter(
        date_from=datetime.combine(date_from, time.min, tzinfo=UTC) if date_from else None,
        date_to=(datetime.combine(date_to + timedelta(days=1), time.min, tzinfo=UTC)
                 if date_to else None),
        action=action or None, actor=actor or None, participant_id=person,
        related_targets=frozenset(consent.related_targets(session, person)) if person
        else frozenset())


def pseudonym_of(settings: Settings):  # type: ignore[no-untyped-def]
    from app.consent import service as consent

    return lambda participant_id: consent.irb_pseudonym(settings.secret_key, participant_id)


@router.get("/audit/entries", response_model=listing.LedgerPage,
            responses={200: {"content": {"text/csv": {}}}})
def entries(
    staff: IrbDep, session: SessionDep, settings: SettingsDep, now: NowDep,
    date_from: Annotated[date | None, Query(alias="from")] = None,
    date_to: Annotated[date | None, Query(alias="to", description="inclusive")] = None,
    action: Annotated[str | None, Query(max_length=100, description="exact, or a prefix "
                                        "ending in '.' such as consent.")] = None,
    actor: Annotated[str | None, Query(max_length=200, description="e.g. staff:3, system, "
                                       "participant:<pseudonym>")] = None,
    pseudonym: Annotated[str | None, Query(max_length=64, description="rows about this "
                                           "participant (IRB pseudonym)")] = None,
    before: Annotated[int | None, Query(ge=1, le=2**62, description="the next_before of the "
                                        "previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=listing.MAX_PAGE_SIZE)] = listing.PAGE_SIZE,
    format: Literal["json", "csv"] = "json",
) -> listing.LedgerPage | Response:
    f = ledger_filter(session, settings, date_from=date_from, date_to=date_to, action=action,
                      actor=actor, pseudonym=pseudonym)
    audit.append(session, actor=f"staff:{staff.id}",
                 action="staff.download_ledger" if format == "csv" else "staff.view_ledger",
                 details=f.describe() | {"before": before}, now=now)
    session.commit()
    if format == "csv":  # built here: the request's session ends with the endpoint
        return Response("".join(listing.csv_chunks(session, f, pseudonym_of(settings))),
                        media_type="text/csv",
                        headers={"Content-Disposition": 'attachment; filename="audit-ledger.csv"'})
    return listing.page(session, f, pseudonym_of(settings), before=before, limit=limit)

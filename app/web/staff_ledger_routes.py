"""The IRB's ledger pages: the entries (filtered, paginated, CSV) and the verification against
the signed checkpoints. They call the same services as the JSON API (app/audit/routes.py)."""

from __future__ import annotations

from datetime import date
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from app.audit import checks, listing
from app.audit import service as audit
from app.audit.routes import ledger_filter, pseudonym_of
from app.auth.deps import NowDep, SessionDep, SettingsDep
from app.core.errors import ValidationFailed
from app.web.console_common import Reviewer, staff_render

router = APIRouter()


def _day(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


def _form(request: Request) -> dict[str, Any]:
    q = request.query_params
    before = q.get("before", "")
    return {"from": _day(q.get("from")), "to": _day(q.get("to")),
            "action": (q.get("action") or "").strip()[:100],
            "actor": (q.get("actor") or "").strip()[:200],
            "pseudonym": (q.get("pseudonym") or "").strip()[:64],
            "before": int(before) if before.isdigit() and len(before) < 18 else None}


def _filter(request: Request, session: SessionDep, settings: SettingsDep
            ) -> tuple[dict[str, Any], listing.LedgerFilter | None, str | None]:
    form = _form(request)
    try:
        f = ledger_filter(session, settings, date_from=form["from"], date_to=form["to"],
                          action=form["action"], actor=form["actor"],
                          pseudonym=form["pseudonym"])
    except ValidationFailed as exc:
        return form, None, (exc.details or {}).get("field", "pseudonym")
    return form, f, None


@router.get("/irb/ledger", response_class=HTMLResponse)
def ledger_page(request: Request, member: Reviewer, session: SessionDep,
                settings: SettingsDep, now: NowDep) -> HTMLResponse:
    form, f, bad_field = _filter(request, session, settings)
    result = (listing.page(session, f, pseudonym_of(settings), before=form["before"])
              if f is not None else None)
    audit.append(session, actor=f"staff:{member.id}", action="staff.view_ledger",
                 details=(f.describe() if f else {"refused": bad_field})
                 | {"before": form["before"]}, now=now)
    session.commit()
    query = {k: str(v) for k, v in form.items() if v and k != "before"}
    return staff_render(request, "staff/ledger.html", member, form=form, page=result,
                        bad_field=bad_field, actions=listing.actions(session), query=query,
                        status_code=200 if bad_field is None else 422)


@router.get("/irb/ledger.csv")
def ledger_csv(request: Request, member: Reviewer, session: SessionDep, settings: SettingsDep,
               now: NowDep) -> Response:
    _form_values, f, bad_field = _filter(request, session, settings)
    if f is None:
        raise ValidationFailed("No participant has this pseudonym.",
                               details={"field": bad_field})
    audit.append(session, actor=f"staff:{member.id}", action="staff.download_ledger",
                 details=f.describe(), now=now)
    session.commit()
    return Response("".join(listing.csv_chunks(session, f, pseudonym_of(settings))),
                    media_type="text/csv",
                    headers={"Content-Disposition": 'attachment; filename="audit-ledger.csv"'})


@router.get("/irb/audit", response_class=HTMLResponse)
def audit_page(request: Request, member: Reviewer, session: SessionDep, settings: SettingsDep,
               now: NowDep) -> HTMLResponse:
    """Verification (incremental; ?full=1 recomputes every row), the latest checkpoints and the
    public key that signs them."""
    full = request.query_params.get("full") == "1"
    status = checks.ledger_status(session, settings, full=full)
    audit.append(session, actor=f"staff:{member.id}", action="staff.verify_audit_chain",
                 details={"ok": status.report.ok, "rows_checked": status.report.rows_checked,
                          "mode": status.report.mode}, now=now)
    session.commit()
    return staff_render(request, "staff/audit.html", member, report=status.report,
                        status=status)

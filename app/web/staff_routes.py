"""Staff pages: token login, and the read-only IRB review (consent versions, log, audit)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.audit import service as audit
from app.auth import service as auth
from app.auth.deps import STAFF_COOKIE, NowDep, SessionDep, SettingsDep
from app.auth.models import StaffMember
from app.consent import service as consent
from app.core.errors import Forbidden, NotFound, Unauthorized
from app.web.common import form_with_csrf, page_language, render

router = APIRouter(prefix="/staff", include_in_schema=False)

STAFF_SESSION_TTL = timedelta(hours=8)
NAV = [  # (path, locale key, roles allowed)
    ("/staff/irb/consent-versions", "staff.nav_versions", {"irb", "admin"}),
    ("/staff/irb/consent-log", "staff.nav_log", {"irb", "admin"}),
    ("/staff/irb/participant", "staff.nav_participant", {"irb", "admin"}),
    ("/staff/irb/audit", "staff.nav_audit", {"irb", "admin"}),
]


class StaffLoginRequired(Unauthorized):
    code = "staff_login_required"


def web_staff(request: Request, session: SessionDep, now: NowDep) -> StaffMember:
    token = request.cookies.get(STAFF_COOKIE)
    found = auth.staff_for_session(session, token, now=now) if token else None
    if found is None:
        raise StaffLoginRequired("Please log in with your staff token.")
    return found[0]


WebStaff = Annotated[StaffMember, Depends(web_staff)]


def _require_role(member: StaffMember, *roles: str) -> None:
    if member.role not in set(roles) | {"admin"}:
        raise Forbidden(f"The {member.role} role may not open this page.")


def _staff_render(request: Request, template: str, member: StaffMember | None,
                  status_code: int = 200, **context: Any) -> HTMLResponse:
    nav = [(p, k) for p, k, roles in NAV if member is not None and member.role in roles]
    return render(request, template, page_language(request), status_code=status_code,
                  member=member, nav=nav, **context)


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request) -> HTMLResponse:
    return _staff_render(request, "staff/login.html", None)


@router.post("/login")
async def login(request: Request, session: SessionDep, settings: SettingsDep,
                now: NowDep) -> Response:
    form = await form_with_csrf(request)
    member = auth.staff_for_token(session, str(form.get("token", "")).strip())
    if member is None:
        return _staff_render(request, "staff/login.html", None, status_code=401,
                             error="staff.login_failed")
    token, _csrf = auth.start_staff_session(session, member, STAFF_SESSION_TTL, now=now)
    audit.append(session, actor=f"staff:{member.id}", action="staff.login", now=now)
    session.commit()
    response = RedirectResponse("/staff", status_code=303)
    response.set_cookie(STAFF_COOKIE, token, httponly=True, samesite="strict",
                        secure=settings.secure_cookies, path="/staff",
                        max_age=int(STAFF_SESSION_TTL.total_seconds()))
    return response


@router.post("/logout")
async def logout(request: Request, session: SessionDep, now: NowDep) -> Response:
    await form_with_csrf(request)
    token = request.cookies.get(STAFF_COOKIE)
    if token:
        auth.end_staff_session(session, token, now=now)
        session.commit()
    response = RedirectResponse("/staff/login", status_code=303)
    response.delete_cookie(STAFF_COOKIE, path="/staff")
    return response


@router.get("", response_class=HTMLResponse)
def staff_home(request: Request, member: WebStaff) -> HTMLResponse:
    return _staff_render(request, "staff/home.html", member)


@router.get("/irb/consent-versions", response_class=HTMLResponse)
def versions_page(request: Request, member: WebStaff, session: SessionDep) -> HTMLResponse:
    _require_role(member, "irb")
    return _staff_render(request, "staff/consent_versions.html", member,
                         versions=consent.review_versions(session))


def _parse_day(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


def _log_filters(request: Request) -> dict[str, Any]:
    q = request.query_params
    action = q.get("action") if q.get("action") in consent.LOG_ACTIONS else None
    return {"from": _parse_day(q.get("from")), "to": _parse_day(q.get("to")),
            "version": (q.get("version") or None), "action": action}


def _filtered_log(session: SessionDep, settings: SettingsDep, filters: dict[str, Any]
                  ) -> list[Any]:
    start = datetime.combine(filters["from"], time.min, tzinfo=UTC) if filters["from"] else None
    end = (datetime.combine(filters["to"] + timedelta(days=1), time.min, tzinfo=UTC)
           if filters["to"] else None)
    return consent.consent_log(session, settings.secret_key, date_from=start, date_to=end,
                               version=filters["version"], action=filters["action"])


@router.get("/irb/consent-log", response_class=HTMLResponse)
def log_page(request: Request, member: WebStaff, session: SessionDep, settings: SettingsDep,
             now: NowDep) -> HTMLResponse:
    _require_role(member, "irb")
    filters = _log_filters(request)
    entries = _filtered_log(session, settings, filters)
    audit.append(session, actor=f"staff:{member.id}", action="staff.view_consent_log",
                 details={k: str(v) for k, v in filters.items()} | {"rows": len(entries)},
                 now=now)
    session.commit()
    return _staff_render(request, "staff/consent_log.html", member, entries=entries,
                         filters=filters, query=request.url.query)


@router.get("/irb/consent-log.csv")
def log_csv(request: Request, member: WebStaff, session: SessionDep, settings: SettingsDep,
            now: NowDep) -> Response:
    _require_role(member, "irb")
    filters = _log_filters(request)
    entries = _filtered_log(session, settings, filters)
    audit.append(session, actor=f"staff:{member.id}", action="staff.download_consent_log",
                 details={k: str(v) for k, v in filters.items()} | {"rows": len(entries)},
                 now=now)
    session.commit()
    return Response(consent.consent_log_csv(entries), media_type="text/csv",
                    headers={"Content-Disposition": 'attachment; filename="consent-log.csv"'})


@router.get("/irb/participant", response_class=HTMLResponse)
def participant_page(request: Request, member: WebStaff, session: SessionDep,
                     settings: SettingsDep, now: NowDep) -> HTMLResponse:
    _require_role(member, "irb")
    pseudonym = (request.query_params.get("pseudonym") or "").strip()
    entries, status, error = None, None, None
    if pseudonym:
        try:
            participant = consent.participant_by_pseudonym(session, settings.secret_key,
                                                           pseudonym)
            entries = consent.consent_log(session, settings.secret_key,
                                          participant_id=participant.id)
            status = participant.status
            audit.append(session, actor=f"staff:{member.id}",
                         action="staff.view_consent_history",
                         target=f"participant:{participant.id}", now=now)
            session.commit()
        except NotFound:
            error = "staff.pseudonym_unknown"
    return _staff_render(request, "staff/participant.html", member, pseudonym=pseudonym,
                         entries=entries, status=status, error=error)


@router.get("/irb/audit", response_class=HTMLResponse)
def audit_page(request: Request, member: WebStaff, session: SessionDep,
               now: NowDep) -> HTMLResponse:
    _require_role(member, "irb")
    report = audit.verify(session)
    audit.append(session, actor=f"staff:{member.id}", action="staff.verify_audit_chain",
                 details={"ok": report.ok, "rows_checked": report.rows_checked}, now=now)
    session.commit()
    return _staff_render(request, "staff/audit.html", member, report=report)

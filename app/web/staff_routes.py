"""Staff pages: token login and logout, and the read-only IRB review (consent versions, log,
audit, safety events). The research console lives in console_routes and is included here."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.audit import service as audit
from app.auth import service as auth
from app.auth.deps import STAFF_COOKIE, NowDep, SessionDep, SettingsDep, client_ip
from app.auth.models import StaffMember
from app.consent import service as consent
from app.core.errors import NotFound
from app.surveys import feedback
from app.surveys import service as surveys
from app.web.common import form_with_csrf
from app.web.console_admin import router as admin_router
from app.web.console_common import (
    NAV,
    Reviewer,
    StaffLoginRequired,
    WebStaff,
    staff_render,
    web_staff,
)
from app.web.console_compliance import router as compliance_router
from app.web.console_exports import router as exports_router
from app.web.console_funnel import enrollment_funnel
from app.web.console_routes import router as console_router
from app.web.staff_ledger_routes import router as ledger_router
from app.web.staff_protocol_routes import router as protocol_router

__all__ = ["NAV", "StaffLoginRequired", "router", "web_staff"]

router = APIRouter(prefix="/staff", include_in_schema=False)

STAFF_SESSION_TTL = timedelta(hours=8)
CHALLENGE_COOKIE = "wp_staff_2fa"  # the login's second step (path /staff/login, 5 minutes)
_staff_render = staff_render


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request) -> HTMLResponse:
    return _staff_render(request, "staff/login.html", None)


@router.post("/login")
async def login(request: Request, session: SessionDep, settings: SettingsDep,
                now: NowDep) -> Response:
    """Step 1: the staff token. When the member's role needs a second factor, step 2 (the same
    address, so the same rate limit) takes the TOTP code against a short-lived challenge."""
    form = await form_with_csrf(request)
    if "code" in form:
        return _second_step(request, session, settings, now, str(form.get("code", "")))
    check = auth.check_staff_token(session, str(form.get("token", "")).strip(), now=now,
                                   ttl=settings.staff_token_ttl)
    if not check.ok:  # unknown, revoked or expired: the same answer for each
        return _refused(request, session, now, check, "web", "staff.login_failed")
    member = check.member
    assert member is not None
    if not auth.needs_second_factor(member, settings.totp_roles):
        return _signed_in(session, settings, member, now, second_factor=False)
    if member.totp_secret is None:
        return _refused(request, session, now,
                        auth.StaffCheck(member, "second_factor_not_enrolled"), "web",
                        "staff_login.not_enrolled")
    challenge = auth.start_login_challenge(session, member, now=now)
    session.commit()
    response = _staff_render(request, "staff/login_code.html", None)
    response.set_cookie(CHALLENGE_COOKIE, challenge, httponly=True, samesite="strict",
                        secure=settings.secure_cookies, path="/staff/login",
                        max_age=int(auth.STAFF_CHALLENGE_TTL.total_seconds()))
    return response


def _second_step(request: Request, session: SessionDep, settings: SettingsDep, now: NowDep,
                 code: str) -> Response:
    check = auth.check_login_code(session, request.cookies.get(CHALLENGE_COOKIE, ""), code,
                                  now=now, ttl=settings.staff_token_ttl,
                                  secret_key=settings.secret_key)
    if check.ok:
        assert check.member is not None
        response = _signed_in(session, settings, check.member, now, second_factor=True)
    elif check.retry:  # a wrong or replayed code: the code page again
        return _refused(request, session, now, check, "totp", "staff_login.code_failed",
                        template="staff/login_code.html")
    else:  # no live challenge (expired, used, too many wrong codes) or the member ended
        response = _refused(request, session, now, check, "totp", "staff_login.start_again")
    response.delete_cookie(CHALLENGE_COOKIE, path="/staff/login")
    return response


def _refused(request: Request, session: SessionDep, now: NowDep, check: auth.StaffCheck,
             channel: str, error: str, template: str = "staff/login.html") -> HTMLResponse:
    """A failed staff login: counted and (the first per IP and minute) ledgered, never with
    the token or code; the login page again, 401."""
    auth.record_failed_login(session, ip=client_ip(request), channel=channel, check=check,
                             now=now)
    session.commit()
    return _staff_render(request, template, None, status_code=401, error=error)


def _signed_in(session: SessionDep, settings: SettingsDep, member: StaffMember, now: NowDep,
               *, second_factor: bool) -> Response:
    token, _csrf = auth.start_staff_session(session, member, STAFF_SESSION_TTL, now=now)
    audit.append(session, actor=f"staff:{member.id}", action="staff.login",
                 details={"second_factor": "totp"} if second_factor else None, now=now)
    session.commit()
    response = RedirectResponse("/staff", status_code=303)
    response.set_cookie(STAFF_COOKIE, token, httponly=True, samesite="strict",
                        secure=settings.secure_cookies, path="/staff",
                        max_age=int(STAFF_SESSION_TTL.total_seconds()))
    return response


@router.post("/logout")
async def logout(request: Request, session: SessionDep, settings: SettingsDep,
                 now: NowDep) -> Response:
    await form_with_csrf(request)
    token = request.cookies.get(STAFF_COOKIE)
    found = (auth.staff_for_session(session, token, now=now, token_ttl=settings.staff_token_ttl)
             if token else None)
    if token:
        auth.end_staff_session(session, token, now=now)  # revoked server-side, not just forgotten
        if found is not None:
            audit.append(session, actor=f"staff:{found[0].id}", action="staff.logout", now=now)
        session.commit()
    response = RedirectResponse("/staff/login", status_code=303)
    response.delete_cookie(STAFF_COOKIE, path="/staff")
    return response


@router.get("", response_class=HTMLResponse)
def staff_home(request: Request, member: WebStaff, session: SessionDep,
               settings: SettingsDep) -> HTMLResponse:
    glance: dict[str, Any] = {}
    if member.role in ("researcher", "admin"):  # the study at a glance: counts only
        stages = enrollment_funnel(session, settings.default_study)
        glance = {"study": settings.default_study,
                  "waiting": len(surveys.safety_events(session, settings.secret_key,
                                                       open_only=True)),
                  "stages": [s for s in stages if s.count is not None]}
    return _staff_render(request, "staff/home.html", member, glance=glance)


@router.get("/irb/consent-versions", response_class=HTMLResponse)
def versions_page(request: Request, member: Reviewer, session: SessionDep) -> HTMLResponse:
    versions = consent.review_versions(session)
    return _staff_render(request, "staff/consent_versions.html", member, versions=versions,
                         feedback_settings=feedback.settings_for(session,
                                                                 [v.study for v in versions]))


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
def log_page(request: Request, member: Reviewer, session: SessionDep, settings: SettingsDep,
             now: NowDep) -> HTMLResponse:
    filters = _log_filters(request)
    entries = _filtered_log(session, settings, filters)
    audit.append(session, actor=f"staff:{member.id}", action="staff.view_consent_log",
                 details={k: str(v) for k, v in filters.items()} | {"rows": len(entries)},
                 now=now)
    session.commit()
    return _staff_render(request, "staff/consent_log.html", member, entries=entries,
                         filters=filters, query=request.url.query)


@router.get("/irb/consent-log.csv")
def log_csv(request: Request, member: Reviewer, session: SessionDep, settings: SettingsDep,
            now: NowDep) -> Response:
    filters = _log_filters(request)
    entries = _filtered_log(session, settings, filters)
    audit.append(session, actor=f"staff:{member.id}", action="staff.download_consent_log",
                 details={k: str(v) for k, v in filters.items()} | {"rows": len(entries)},
                 now=now)
    session.commit()
    return Response(consent.consent_log_csv(entries), media_type="text/csv",
                    headers={"Content-Disposition": 'attachment; filename="consent-log.csv"'})


@router.get("/irb/participant", response_class=HTMLResponse)
def participant_page(request: Request, member: Reviewer, session: SessionDep,
                     settings: SettingsDep, now: NowDep) -> HTMLResponse:
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


@router.get("/irb/safety-events", response_class=HTMLResponse)
def irb_safety_page(request: Request, member: Reviewer, session: SessionDep,
                    settings: SettingsDep, now: NowDep) -> HTMLResponse:
    from app.safety import service as safety

    events = surveys.safety_events(session, settings.secret_key, now=now)
    audit.append(session, actor=f"staff:{member.id}", action="staff.view_safety_events",
                 details={"rows": len(events), "open_only": False}, now=now)
    session.commit()
    return staff_render(request, "staff/safety_review.html", member, events=events,
                        waited=safety.humanized)


router.include_router(console_router)
router.include_router(admin_router)
router.include_router(exports_router)
router.include_router(compliance_router)
router.include_router(ledger_router)  # /staff/irb/audit, /staff/irb/ledger(.csv)
router.include_router(protocol_router)  # /staff/protocol

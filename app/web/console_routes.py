"""The research console: enrollment, safety events, compliance, notifications, exports.

Server-rendered, no JavaScript needed; charts are SVG drawn in app.web.charts. Every page needs
a researcher (or admin) session; every form carries the CSRF token.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.audit import service as audit
from app.auth.deps import NowDep, SessionDep, SettingsDep
from app.auth.models import StaffMember
from app.core.errors import AppError
from app.notify import bounces
from app.notify import service as notify
from app.safety import service as safety
from app.surveys import service as surveys
from app.web import charts
from app.web.common import form_with_csrf
from app.web.console_common import Researcher, staff_page, staff_render
from app.web.console_funnel import enrollment_funnel, studies

router = APIRouter(prefix="/researcher")


def _study_key(request: Request, settings: SettingsDep) -> str:
    return (request.query_params.get("study") or settings.default_study)[:64]


@router.get("/enrollment", response_class=HTMLResponse)
def enrollment_page(request: Request, member: Researcher, session: SessionDep,
                    settings: SettingsDep) -> HTMLResponse:
    key = _study_key(request, settings)
    stages = enrollment_funnel(session, key)
    chart = charts.bar_chart([(s.label, s.count) for s in stages if s.count is not None],
                             title=f"Enrollment funnel of {key}", label_width=190)
    return staff_render(request, "staff/enrollment.html", member, study=key,
                        studies=studies(session), stages=stages, chart=chart)


# The safety queue is worked by researchers and by the safety role (the study file decides who
# of them may also reveal a participant's contact).
SafetyHandler = Annotated[StaffMember, Depends(staff_page("researcher", "safety"))]


@router.get("/safety", response_class=HTMLResponse)
def safety_page(request: Request, member: SafetyHandler, session: SessionDep,
                settings: SettingsDep, now: NowDep) -> HTMLResponse:
    return _safety_view(request, member, session, settings, now)


def _safety_view(request: Request, member: StaffMember, session: SessionDep,
                 settings: SettingsDep, now: NowDep, status_code: int = 200,
                 error: str | None = None, error_event: int | None = None,
                 revealed: safety.ContactReveal | None = None) -> HTMLResponse:
    events = surveys.safety_events(session, settings.secret_key, now=now)
    audit.append(session, actor=f"staff:{member.id}", action="staff.view_safety_events",
                 details={"rows": len(events), "open_only": False}, now=now)
    session.commit()
    open_events = [e for e in events if e.acknowledged_at is None]
    done = [e for e in events if e.acknowledged_at is not None][:50]
    shown = [e.id for e in open_events + done]
    return staff_render(
        request, "staff/safety.html", member, open_events=open_events, done=done,
        note_max=surveys.NOTE_MAX_CHARS, error=error, error_event=error_event,
        acknowledged=request.query_params.get("acknowledged"), status_code=status_code,
        alerts=safety.alert_statuses(session, shown), reveals=safety.reveals(session, shown),
        may_reveal=safety.reveal_permissions(session, member, {e.study for e in events}),
        placeholders=safety.placeholder_addresses(session, settings.default_study),
        waited=safety.humanized, revealed=revealed, reason_min=safety.REASON_MIN,
        reason_max=safety.REASON_MAX)


@router.post("/safety/{event_id}/acknowledge")
async def acknowledge(event_id: int, request: Request, member: SafetyHandler,
                      session: SessionDep, settings: SettingsDep, now: NowDep) -> Response:
    form = await form_with_csrf(request)  # 403 before anything changes
    try:
        surveys.acknowledge_safety_event(session, event_id, staff_id=member.id,  # type: ignore[arg-type]
                                         note=str(form.get("note", "")), now=now)
    except AppError as exc:
        session.rollback()
        return _safety_view(request, member, session, settings, now,
                            status_code=exc.status_code, error=exc.message,
                            error_event=event_id)
    return RedirectResponse(f"/staff/researcher/safety?acknowledged={event_id}", status_code=303)


@router.post("/safety/{event_id}/contact", response_class=HTMLResponse)
async def reveal_contact(event_id: int, request: Request, member: SafetyHandler,
                         session: SessionDep, settings: SettingsDep, now: NowDep) -> Response:
    """Show the participant's address beside the event, to staff the study file allows, with
    a stated reason; audited. The answer is the queue itself (never cached)."""
    form = await form_with_csrf(request)
    try:
        revealed = safety.reveal_contact(session, settings.secret_key, event_id, member,
                                         str(form.get("reason", "")), via="console", now=now)
    except safety.RevealRefused as exc:
        session.commit()  # the refusal stays on record
        return _safety_view(request, member, session, settings, now, status_code=403,
                            error=exc.message, error_event=event_id)
    except AppError as exc:
        session.rollback()
        return _safety_view(request, member, session, settings, now,
                            status_code=exc.status_code, error=exc.message,
                            error_event=event_id)
    session.commit()
    return _safety_view(request, member, session, settings, now, revealed=revealed)


@router.get("/notifications", response_class=HTMLResponse)
def notifications_page(request: Request, member: Researcher, session: SessionDep,
                       settings: SettingsDep) -> HTMLResponse:
    counts = notify.status_counts(session)
    failures = notify.list_failures(session, settings.secret_key, limit=200)
    undeliverable = bounces.report(session, settings.secret_key, limit=200)
    chart = charts.bar_chart([(f"{c.kind} · {c.status}", c.count) for c in counts],
                             title="Messages by kind and status", label_width=230)
    return staff_render(request, "staff/notifications.html", member, counts=counts,
                        failures=failures, chart=chart, undeliverable=undeliverable)


"""The admin's staff page: add a member (token shown once), revoke one, change a role, issue a
new token, enroll a second factor. Forms only (no JavaScript); every form carries the CSRF
token; every change is audited by app.auth.service with the admin as the actor.

A token or provisioning URI is shown in the answer to the POST that made it (never in an
address, never again); the page is no-store like every staff page.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.auth import service as auth
from app.auth.deps import NowDep, SessionDep, SettingsDep
from app.auth.models import STAFF_ROLES, StaffMember
from app.core.errors import AppError
from app.web.common import form_with_csrf
from app.web.console_common import staff_page, staff_render

router = APIRouter(prefix="/admin")
Admin = Annotated[StaffMember, Depends(staff_page("admin"))]
DONE = {"revoked": "Revoked {name}: their token and every session of theirs have ended.",
        "role": "{name} now has the role {role}; their sessions ended, so they log in again.",
        "totp_removed": "{name}'s second factor is removed."}


def _page(request: Request, member: StaffMember, session: SessionDep, settings: SettingsDep,
          now: NowDep, status_code: int = 200, **context: Any) -> HTMLResponse:
    members = auth.list_staff(session, now=now, ttl=settings.staff_token_ttl)
    context.setdefault("form", {})
    return staff_render(request, "staff/admin_staff.html", member, status_code=status_code,
                        members=members, roles=STAFF_ROLES, totp_roles=settings.totp_roles,
                        ttl_days=settings.staff_token_ttl_days, **context)


def _done_message(request: Request, session: SessionDep) -> str | None:
    """The note after a change, built from our own text and the stored member, never from
    text in the address."""
    done, raw_id = request.query_params.get("done"), request.query_params.get("id", "")
    if done not in DONE or not raw_id.isdigit() or len(raw_id) > 12:
        return None
    found = session.get(StaffMember, int(raw_id))
    return None if found is None else DONE[done].format(name=found.name, role=found.role)


@router.get("/staff", response_class=HTMLResponse)
def staff_admin_page(request: Request, member: Admin, session: SessionDep,
                     settings: SettingsDep, now: NowDep) -> HTMLResponse:
    return _page(request, member, session, settings, now, done=_done_message(request, session))


@router.post("/staff")
async def add_member(request: Request, member: Admin, session: SessionDep,
                     settings: SettingsDep, now: NowDep) -> Response:
    form = await form_with_csrf(request)
    name, role = str(form.get("name", "")), str(form.get("role", ""))
    try:
        added, token = auth.create_staff(session, name, role, actor=f"staff:{member.id}",
                                         now=now)
    except AppError as exc:
        session.rollback()
        field = exc.details[0]["field"] if isinstance(exc.details, list) and exc.details else None
        return _page(request, member, session, settings, now, status_code=exc.status_code,
                     add_error=exc.message, add_field=field, form={"name": name, "role": role})
    session.commit()
    return _page(request, member, session, settings, now, status_code=201,
                 shown_once={"name": added.name, "kind": "token", "value": token})


async def _change(request: Request, member: StaffMember, session: SessionDep,
                  settings: SettingsDep, now: NowDep, member_id: int, action: str) -> Response:
    form = await form_with_csrf(request)  # 403 before anything changes
    actor, ttl = f"staff:{member.id}", settings.staff_token_ttl
    try:
        target = auth.staff_by_id(session, member_id)
        if action == "revoked":
            auth.revoke_staff(session, target, actor=actor, now=now, ttl=ttl)
        elif action == "role":
            if not auth.change_staff_role(session, target, str(form.get("role", "")),
                                          actor=actor, now=now, ttl=ttl):
                return RedirectResponse("/staff/admin/staff", status_code=303)
        elif action == "rotate":
            token = auth.rotate_staff_token(session, target, actor=actor, now=now, ttl=ttl)
            session.commit()
            return _page(request, member, session, settings, now,
                         shown_once={"name": target.name, "kind": "token", "value": token})
        elif action == "totp":
            uri = auth.enroll_totp(session, target, secret_key=settings.secret_key,
                                   actor=actor, now=now)
            session.commit()
            return _page(request, member, session, settings, now,
                         shown_once={"name": target.name, "kind": "totp", "value": uri})
        else:  # totp_removed
            auth.remove_totp(session, target, actor=actor, now=now)
    except AppError as exc:
        session.rollback()
        return _page(request, member, session, settings, now, status_code=exc.status_code,
                     error=exc.message, error_for=member_id)
    session.commit()
    return RedirectResponse(f"/staff/admin/staff?done={action}&id={member_id}", status_code=303)


@router.post("/staff/{member_id}/revoke")
async def revoke_member(member_id: int, request: Request, member: Admin, session: SessionDep,
                        settings: SettingsDep, now: NowDep) -> Response:
    return await _change(request, member, session, settings, now, member_id, "revoked")


@router.post("/staff/{member_id}/role")
async def change_role(member_id: int, request: Request, member: Admin, session: SessionDep,
                      settings: SettingsDep, now: NowDep) -> Response:
    return await _change(request, member, session, settings, now, member_id, "role")


@router.post("/staff/{member_id}/rotate")
async def rotate_token(member_id: int, request: Request, member: Admin, session: SessionDep,
                       settings: SettingsDep, now: NowDep) -> Response:
    return await _change(request, member, session, settings, now, member_id, "rotate")


@router.post("/staff/{member_id}/totp")
async def enroll_second_factor(member_id: int, request: Request, member: Admin,
                               session: SessionDep, settings: SettingsDep,
                               now: NowDep) -> Response:
    return await _change(request, member, session, settings, now, member_id, "totp")


@router.post("/staff/{member_id}/totp/remove")
async def remove_second_factor(member_id: int, request: Request, member: Admin,
                               session: SessionDep, settings: SettingsDep,
                               now: NowDep) -> Response:
    return await _change(request, member, session, settings, now, member_id, "totp_removed")

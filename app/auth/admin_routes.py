"""Staff management through the JSON API (admin role): the same services as the admin page
(/staff/admin/staff) and the `wellpanel staff` commands. A token or provisioning URI is in
the answer that made it, once; listings never hold one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, ConfigDict, Field

from app.auth import service as auth
from app.auth.deps import NowDep, SessionDep, SettingsDep, require_staff
from app.auth.models import StaffMember, StaffMemberPublic, StaffRole

router = APIRouter(prefix="/api/v1/staff", tags=["admin"])
AdminDep = Annotated[StaffMember, Depends(require_staff("admin"))]


class StaffCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    role: StaffRole


class StaffUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: StaffRole


class StaffWithToken(BaseModel):
    member: StaffMemberPublic
    token: str = Field(description="Shown once; only its hash is stored")


class StaffTotp(BaseModel):
    member: StaffMemberPublic
    provisioning_uri: str = Field(description="otpauth:// URI for an authenticator app; once")


def _public(member: StaffMember, settings: SettingsDep, now: NowDep) -> StaffMemberPublic:
    return auth.staff_public(member, now=now, ttl=settings.staff_token_ttl)


@router.get("/members", response_model=list[StaffMemberPublic])
def list_members(admin: AdminDep, session: SessionDep, settings: SettingsDep,
                 now: NowDep) -> list[StaffMemberPublic]:
    return auth.list_staff(session, now=now, ttl=settings.staff_token_ttl)


@router.post("/members", response_model=StaffWithToken, status_code=201)
def add_member(body: StaffCreate, admin: AdminDep, session: SessionDep, settings: SettingsDep,
               now: NowDep) -> StaffWithToken:
    """409 when the name is taken."""
    member, token = auth.create_staff(session, body.name, body.role, actor=f"staff:{admin.id}",
                                      now=now)
    session.commit()
    return StaffWithToken(member=_public(member, settings, now), token=token)


@router.patch("/members/{member_id}", response_model=StaffMemberPublic)
def change_role(member_id: int, body: StaffUpdate, admin: AdminDep, session: SessionDep,
                settings: SettingsDep, now: NowDep) -> StaffMemberPublic:
    """409 `last_admin` when it would leave no active admin; 409 `revoked` for a revoked one."""
    member = auth.staff_by_id(session, member_id)
    auth.change_staff_role(session, member, body.role, actor=f"staff:{admin.id}", now=now,
                           ttl=settings.staff_token_ttl)
    session.commit()
    return _public(member, settings, now)


@router.post("/members/{member_id}/revoke", response_model=StaffMemberPublic)
def revoke_member(member_id: int, admin: AdminDep, session: SessionDep, settings: SettingsDep,
                  now: NowDep) -> StaffMemberPublic:
    """Ends the token and every session at once. 409 `last_admin` or `already_revoked`."""
    member = auth.staff_by_id(session, member_id)
    auth.revoke_staff(session, member, actor=f"staff:{admin.id}", now=now,
                      ttl=settings.staff_token_ttl)
    session.commit()
    return _public(member, settings, now)


@router.post("/members/{member_id}/rotate", response_model=StaffWithToken)
def rotate_token(member_id: int, admin: AdminDep, session: SessionDep, settings: SettingsDep,
                 now: NowDep) -> StaffWithToken:
    """A new token (once); the old one and its sessions end. 409 `revoked`."""
    member = auth.staff_by_id(session, member_id)
    token = auth.rotate_staff_token(session, member, actor=f"staff:{admin.id}", now=now,
                                    ttl=settings.staff_token_ttl)
    session.commit()
    return StaffWithToken(member=_public(member, settings, now), token=token)


@router.post("/members/{member_id}/totp", response_model=StaffTotp)
def enroll_totp(member_id: int, admin: AdminDep, session: SessionDep, settings: SettingsDep,
                now: NowDep) -> StaffTotp:
    """A new TOTP secret (replacing an older one); its provisioning URI once."""
    member = auth.staff_by_id(session, member_id)
    uri = auth.enroll_totp(session, member, secret_key=settings.secret_key,
                           actor=f"staff:{admin.id}", now=now)
    session.commit()
    return StaffTotp(member=_public(member, settings, now), provisioning_uri=uri)


@router.delete("/members/{member_id}/totp", status_code=204)
def remove_totp(member_id: int, admin: AdminDep, session: SessionDep, now: NowDep) -> Response:
    member = auth.staff_by_id(session, member_id)
    auth.remove_totp(session, member, actor=f"staff:{admin.id}", now=now)
    session.commit()
    return Response(status_code=204)

"""FastAPI dependencies: the database session, the clock, who is calling."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from app.auth import service as auth
from app.auth.models import ParticipantCredential, StaffMember
from app.config import Settings
from app.core.errors import Forbidden, Unauthorized
from app.core.middleware import require_same_origin
from app.participants import service as participants
from app.participants.models import Participant

PARTICIPANT_COOKIE = "wp_session"
STAFF_COOKIE = "wp_staff"

_bearer = HTTPBearer(auto_error=False)


def get_session(request: Request) -> Iterator[Session]:
    with Session(request.app.state.engine, expire_on_commit=False) as session:
        yield session


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_now(request: Request) -> datetime:
    """The current UTC time; tests replace app.state.clock to control it. (async: no work for a
    worker thread, so no thread hop on every request.)"""
    return request.app.state.clock()


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
NowDep = Annotated[datetime, Depends(get_now)]
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


@dataclass
class ParticipantContext:
    participant: Participant
    credential: ParticipantCredential
    identity_verified_at: datetime | None
    consent_row: tuple[Any, ...] | None = None  # read with the token; the gate's inputs


def _participant_token(request: Request, bearer: HTTPAuthorizationCredentials | None) -> str:
    if bearer is not None:
        return bearer.credentials
    cookie = request.cookies.get(PARTICIPANT_COOKIE)
    if cookie:
        if request.url.path.startswith("/api/"):  # pages have CSRF tokens for their forms
            require_same_origin(request, request.app.state.settings.public_origin)
        return cookie
    raise Unauthorized("Please open the personal link we emailed you.")


def current_participant(
    request: Request, session: SessionDep, bearer: BearerDep, now: NowDep
) -> ParticipantContext:
    """The participant behind the magic-link token or browser session."""
    token = _participant_token(request, bearer)
    found = auth.participant_request_context(session, token, now=now)
    if found is None:
        raise Unauthorized("This link or session is not valid (it may have expired).")
    participant = found.participant
    # Using the emailed link proves the address belongs to this person (the lookup read the
    # contact already: only a first use has something to write).
    verified = found.contact_verified_at
    if found.has_contact and verified is None:
        verified = participants.mark_contact_verified(session, participant.id, now)
    if session.dirty or session.new:
        session.commit()
    return ParticipantContext(participant, found.credential, verified, found.consent_row)


ParticipantDep = Annotated[ParticipantContext, Depends(current_participant)]


async def consent_gate(ctx: ParticipantDep, session: SessionDep) -> ParticipantContext:
    """Guards every participant data endpoint: current consent, not withdrawn. (async: the
    state was read with the token, so the check is no work for a worker thread; only a
    study without its current consent version makes it look further.)"""
    from app.consent import service as consent

    row = ctx.consent_row
    if row is None or row[0] is None:
        await run_in_threadpool(consent.check_gate, session, ctx.participant, row)
    else:
        consent.check_gate(session, ctx.participant, row)
    return ctx


ConsentedParticipantDep = Annotated[ParticipantContext, Depends(consent_gate)]


def client_ip(request: Request) -> str:
    """The client's address as the server sees it (uvicorn's proxy_headers apply)."""
    return request.client.host if request.client else "unknown"


def current_staff(request: Request, session: SessionDep, settings: SettingsDep,
                  bearer: BearerDep, now: NowDep) -> StaffMember:
    """The staff member behind a bearer token that is neither revoked nor expired. A token
    that is not one is a failed staff login (counted, and ledgered as record_failed_login
    says), answered 401 like any other."""
    if bearer is None:
        raise Unauthorized("A staff token is required (Authorization: Bearer ...).")
    check = auth.check_staff_token(session, bearer.credentials, now=now,
                                   ttl=settings.staff_token_ttl)
    if not check.ok:
        auth.record_failed_login(session, ip=client_ip(request), channel="api", check=check,
                                 now=now)
        session.commit()
        raise Unauthorized("This staff token is not valid (it may have been revoked or have "
                           "expired).")
    member = check.member
    assert member is not None
    if auth.touch_staff(session, member, now=now):
        session.commit()
    return member


def require_staff(*roles: str) -> Callable[..., StaffMember]:
    """Allow the given roles (admin always); every staff route declares its roles."""
    allowed = set(roles) | {"admin"}

    def dependency(member: Annotated[StaffMember, Depends(current_staff)]) -> StaffMember:
        if member.role not in allowed:
            raise Forbidden(f"The {member.role} role may not use this; it needs "
                            f"{' or '.join(sorted(allowed))}.")
        return member

    dependency.allowed_roles = allowed  # type: ignore[attr-defined]
    return dependency

"""Participant credentials through the JSON API: exchanging an emailed link for a session,
API tokens made from a session, and signing out (this token, or every credential)."""

from __future__ import annotations

from datetime import datetime, timedelta

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from app.auth import service as auth
from app.auth.deps import NowDep, ParticipantDep, SessionDep, SettingsDep
from app.core.errors import Forbidden, NotFound, Unauthorized

router = APIRouter(prefix="/api/v1", tags=["participant"])


class LinkExchange(BaseModel):
    link: str = Field(min_length=1, max_length=200,
                      description="The token at the end of the emailed /p/login/... link")


class IssuedToken(BaseModel):
    id: int | None = None
    kind: str
    token: str
    expires_at: datetime


class ApiTokenPublic(BaseModel):
    id: int
    created_at: datetime
    expires_at: datetime


class SignedOutEverywhere(BaseModel):
    sessions_revoked: int
    links_revoked: int
    apis_revoked: int


@router.post("/session", response_model=IssuedToken, status_code=201)
def start_session(body: LinkExchange, session: SessionDep, settings: SettingsDep,
                  now: NowDep) -> IssuedToken:
    """Use an emailed link once and get a session token for an API client (the same as opening
    the link in a browser). The link is used up; a used, replaced or expired link is 401."""
    from app.participants import service as participants

    ttl = timedelta(hours=settings.session_ttl_hours)
    redeemed = auth.redeem_link(session, body.link, ttl, now=now)
    if redeemed is None:
        raise Unauthorized("This link is not valid any more; ask for a new one.",
                           code="invalid_link")
    participant, token = redeemed
    participants.mark_contact_verified(session, participant.id, now)
    session.commit()
    return IssuedToken(kind="session", token=token, expires_at=now + ttl)


@router.post("/me/api-tokens", response_model=IssuedToken, status_code=201)
def create_api_token(ctx: ParticipantDep, session: SessionDep, settings: SettingsDep,
                     now: NowDep) -> IssuedToken:
    """A token of its own for a program acting for the participant, made from a session (not
    from another API token); revocable, and ended by sign-out everywhere and withdrawal."""
    if ctx.credential.kind != "session":
        raise Forbidden("An API token can only be made from a session.", code="session_required")
    ttl = timedelta(hours=settings.session_ttl_hours)
    token = auth.issue_participant_token(session, ctx.participant.id, "api", ttl, now=now)
    session.commit()
    made = auth.api_tokens(session, ctx.participant.id, now=now)[-1]
    return IssuedToken(id=made.id, kind="api", token=token, expires_at=made.expires_at)


@router.get("/me/api-tokens", response_model=list[ApiTokenPublic])
def list_api_tokens(ctx: ParticipantDep, session: SessionDep, now: NowDep
                    ) -> list[ApiTokenPublic]:
    return [ApiTokenPublic(id=t.id, created_at=t.created_at, expires_at=t.expires_at)  # type: ignore[arg-type]
            for t in auth.api_tokens(session, ctx.participant.id, now=now)]


@router.delete("/me/api-tokens/{token_id}", status_code=204)
def revoke_api_token(token_id: int, ctx: ParticipantDep, session: SessionDep, now: NowDep
                     ) -> Response:
    if not auth.revoke_api_token(session, ctx.participant.id, token_id, now=now):
        raise NotFound("There is no such API token.")
    session.commit()
    return Response(status_code=204)


@router.post("/me/sign-out", status_code=204)
def sign_out(ctx: ParticipantDep, session: SessionDep, now: NowDep) -> Response:
    """Revoke the token this request carries; it answers 401 from now on."""
    auth.sign_out(session, ctx.credential, now=now)
    session.commit()
    return Response(status_code=204)


@router.post("/me/sign-out-everywhere", response_model=SignedOutEverywhere)
def sign_out_everywhere(ctx: ParticipantDep, session: SessionDep, now: NowDep
                        ) -> SignedOutEverywhere:
    """Revoke every browser session and every emailed link of the participant."""
    revoked = auth.sign_out_everywhere(session, ctx.participant.id, now=now)
    session.commit()
    return SignedOutEverywhere(**revoked)

"""Signing out through the JSON API: this token, or every session and link of the participant."""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import BaseModel

from app.auth import service as auth
from app.auth.deps import NowDep, ParticipantDep, SessionDep

router = APIRouter(prefix="/api/v1", tags=["participant"])


class SignedOutEverywhere(BaseModel):
    sessions_revoked: int
    links_revoked: int


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

"""Researchers see what the outbox could not deliver (counts, failures, undeliverable
addresses; never an address). A mail provider reports bounces to the webhook."""

from __future__ import annotations

import hmac
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Query
from pydantic import BaseModel, ConfigDict, Field

from app.auth.deps import NowDep, SessionDep, SettingsDep, require_staff
from app.auth.models import StaffMember
from app.core.errors import NotFound, Unauthorized
from app.notify import bounces
from app.notify import service as notify
from app.notify.models import NotificationReport

router = APIRouter(prefix="/api/v1/researcher", tags=["staff"])
webhook_router = APIRouter(prefix="/api/v1/notify", tags=["notify"])
ResearcherDep = Annotated[StaffMember, Depends(require_staff("researcher"))]


@router.get("/notifications", response_model=NotificationReport)
def notifications(
    staff: ResearcherDep, session: SessionDep, settings: SettingsDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> NotificationReport:
    return NotificationReport(
        counts=notify.status_counts(session),
        failures=notify.list_failures(session, settings.secret_key, limit=limit),
        undeliverable=bounces.report(session, settings.secret_key, limit=limit))


class BounceNotice(BaseModel):
    """The minimal shape a provider's bounce notification is mapped to (extra fields are
    ignored, so a provider's own payload with these fields also fits)."""

    model_config = ConfigDict(extra="ignore")

    email: str = Field(min_length=3, max_length=320)
    type: Literal["permanent", "transient"]
    code: int | None = Field(default=None, ge=200, le=599)


class BounceAnswer(BaseModel):
    # The same answer whether or not the address belongs to a participant: the webhook does
    # not tell who takes part.
    accepted: bool = True


@webhook_router.post("/bounces", response_model=BounceAnswer, status_code=202)
def bounce(notice: BounceNotice, session: SessionDep, settings: SettingsDep, now: NowDep,
           authorization: Annotated[str | None, Header()] = None) -> BounceAnswer:
    expected = settings.bounce_webhook_secret
    if not expected:
        raise NotFound("There is no such endpoint.")
    sent = (authorization or "").removeprefix("Bearer ").strip()
    # compare_digest: how much of the secret matched must not show in the answer time
    if not hmac.compare_digest(sent.encode("utf-8", "replace"), expected.encode("utf-8")):
        raise Unauthorized("The webhook secret is missing or wrong.",
                           details={"header": "Authorization"})
    bounces.bounce_reported(session, notice.email, notice.type, notice.code,
                            secret_key=settings.secret_key, now=now)
    session.commit()
    return BounceAnswer()

"""Participant survey API: what is open, one instrument in the participant's language, submit.

Every route here reads or writes study data, so every route takes the consent gate.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Header, Request

from app.auth.deps import ConsentedParticipantDep, NowDep, SessionDep
from app.core.errors import ValidationFailed
from app.safety import service as safety
from app.surveys import service as surveys
from app.surveys.instruments import LocalizedInstrument
from app.surveys.models import ResponseSubmit, SubmissionResult, SurveySummary

router = APIRouter(prefix="/api/v1/me/surveys", tags=["participant"])

IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9_.:\-]{8,200}$")


@router.get("", response_model=list[SurveySummary])
def list_surveys(ctx: ConsentedParticipantDep, session: SessionDep, now: NowDep
                 ) -> list[SurveySummary]:
    return surveys.summaries(session, ctx.participant, now)


@router.get("/{instance_id}", response_model=LocalizedInstrument)
def get_survey(instance_id: str, ctx: ConsentedParticipantDep, session: SessionDep,
               now: NowDep) -> LocalizedInstrument:
    instance = surveys.get_own_instance(session, ctx.participant, instance_id)
    surveys.mark_viewed(session, instance, now)
    return surveys.localized(session, ctx.participant, instance)


@router.post("/{instance_id}/responses", response_model=SubmissionResult, status_code=201)
def submit_response(
    instance_id: str, body: ResponseSubmit, ctx: ConsentedParticipantDep, session: SessionDep,
    now: NowDep, request: Request, background: BackgroundTasks,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> SubmissionResult:
    """Store, score and return. A retry with the same Idempotency-Key returns the stored result."""
    if idempotency_key is None or not IDEMPOTENCY_KEY.match(idempotency_key):
        raise ValidationFailed(
            "Idempotency-Key: send a header of 8 to 200 letters, digits or -_.: per submission",
            code="idempotency_key_required", details={"field": "Idempotency-Key"})
    result = surveys.submit(session, ctx.participant, instance_id, body.answers,
                            idempotency_key, now=now)
    if result.show_crisis_resources and not result.replayed:
        background.add_task(safety.deliver_now, request.app)  # the on-call alert, at once
    return result

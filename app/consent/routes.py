"""Consent API: the document, signing, the participant's records and copies, withdrawal."""

from __future__ import annotations

from fastapi import APIRouter, BackgroundTasks, Query, Request
from fastapi.responses import Response

from app.auth.deps import NowDep, ParticipantDep, SessionDep
from app.consent import copy_mail
from app.consent import service as consent
from app.consent.copy import consent_pdf
from app.consent.models import (
    ConsentCopyEmail,
    ConsentDocumentPublic,
    ConsentRecordPublic,
    ConsentSubmit,
    WithdrawalConfirm,
    WithdrawalDone,
    WithdrawalRequest,
    WithdrawalStarted,
)
from app.i18n import translator
from app.notify.dispatch import deliver_in_background
from app.studies import service as studies
from app.studies.models import Study

# Consent and withdrawal must work before (and without) current consent: no consent gate here.
router = APIRouter(prefix="/api/v1/me", tags=["participant"])


@router.get("/consent/document", response_model=ConsentDocumentPublic)
def get_consent_document(
    ctx: ParticipantDep, session: SessionDep, lang: str | None = Query(None, max_length=10),
) -> ConsentDocumentPublic:
    study = session.get(Study, ctx.participant.study_id)
    assert study is not None
    protocol = studies.current_protocol(session, ctx.participant.study_id)
    return consent.document_for(session, study, lang or ctx.participant.language,
                                protocol["default_language"], prefer=(ctx.participant.language,))


@router.post("/consent", response_model=ConsentRecordPublic, status_code=201)
def submit_consent(
    body: ConsentSubmit, ctx: ParticipantDep, session: SessionDep, now: NowDep,
    request: Request, background: BackgroundTasks,
) -> ConsentRecordPublic:
    record = consent.record_decision(session, ctx.participant, body,
                                     identity_verified_at=ctx.identity_verified_at, now=now)
    answer = consent.signed_copy(session, ctx.participant, record.id).record  # type: ignore[arg-type]
    session.commit()  # and no read after it: delivery needs the (SQLite) write lock
    deliver_in_background(request.app, background)  # the signed copy, by email
    return answer


@router.get("/consent/records", response_model=list[ConsentRecordPublic])
def list_consent_records(ctx: ParticipantDep, session: SessionDep) -> list[ConsentRecordPublic]:
    return consent.public_records(session, ctx.participant)


@router.get("/consent/records/{record_id}", response_model=ConsentRecordPublic)
def get_consent_record(record_id: int, ctx: ParticipantDep, session: SessionDep
                       ) -> ConsentRecordPublic:
    return consent.signed_copy(session, ctx.participant, record_id).record


@router.get("/consent/records/{record_id}/copy.pdf", response_class=Response,
            responses={200: {"content": {"application/pdf": {
                "schema": {"type": "string", "format": "binary"}}}}})
def download_consent_pdf(record_id: int, ctx: ParticipantDep, session: SessionDep) -> Response:
    copy = consent.signed_copy(session, ctx.participant, record_id)
    pdf = consent_pdf(copy.record, copy.body_md, copy.statement_texts,
                      translator(copy.record.language))
    filename = f"consent-{copy.record.study}-{copy.record.version}.pdf"
    return Response(pdf, media_type="application/pdf",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


@router.post("/consent/records/{record_id}/email", response_model=ConsentCopyEmail,
             status_code=202)
def email_consent_copy(record_id: int, ctx: ParticipantDep, session: SessionDep, now: NowDep,
                       request: Request, background: BackgroundTasks) -> ConsentCopyEmail:
    """Email the signed copy (PDF) again; asking twice within minutes sends one."""
    queued = copy_mail.email_again(session, ctx.participant, record_id, now=now)
    session.commit()
    deliver_in_background(request.app, background)
    return ConsentCopyEmail(queued=queued, per_day=copy_mail.COPY_EMAILS_PER_DAY)


@router.post("/withdrawal", response_model=WithdrawalStarted, status_code=201)
def request_withdrawal(
    body: WithdrawalRequest, ctx: ParticipantDep, session: SessionDep, now: NowDep
) -> WithdrawalStarted:
    withdrawal, token = consent.start_withdrawal(session, ctx.participant, body.scope, now=now)
    session.commit()
    t = translator(ctx.participant.language)
    return WithdrawalStarted(withdrawal_id=withdrawal.id, scope=body.scope,  # type: ignore[arg-type]
                             confirm_token=token, what_happens=t(f"withdraw.explain_{body.scope}"))


@router.post("/withdrawal/{withdrawal_id}/confirm", response_model=WithdrawalDone)
def confirm_withdrawal(
    withdrawal_id: int, body: WithdrawalConfirm, ctx: ParticipantDep, session: SessionDep,
    now: NowDep,
) -> WithdrawalDone:
    withdrawal = consent.confirm_withdrawal_by_policy(
        session, ctx.participant, withdrawal_id, body.confirm_token, now=now)
    session.commit()
    return WithdrawalDone(scope=withdrawal.scope, confirmed_at=withdrawal.confirmed_at,  # type: ignore[arg-type]
                          data_deleted=withdrawal.data_deleted, note=withdrawal.outcome_note or "")

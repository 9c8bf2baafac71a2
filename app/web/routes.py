"""Participant pages: join -> screening -> email link -> consent -> confirmation and copy."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from app.auth import service as auth
from app.auth.deps import (
    PARTICIPANT_COOKIE,
    NowDep,
    ParticipantContext,
    SessionDep,
    SettingsDep,
    current_participant,
)
from app.consent import service as consent
from app.consent.models import ConsentSubmit
from app.core.errors import NotFound, Unauthorized, ValidationFailed
from app.notify.dispatch import deliver_in_background
from app.participants import service as participants
from app.participants.models import EnrollmentCreate
from app.studies import service as studies
from app.studies.models import Study
from app.surveys import service as surveys
from app.web.common import form_with_csrf, page_language, render

router = APIRouter(include_in_schema=False)


def web_participant(request: Request, session: SessionDep, now: NowDep) -> ParticipantContext:
    """The participant of this browser session; API bearer tokens are not used on pages."""
    if not request.cookies.get(PARTICIPANT_COOKIE):
        raise Unauthorized("Please open the personal link we emailed you.")
    return current_participant(request, session, None, now)


WebParticipant = Annotated[ParticipantContext, Depends(web_participant)]


@router.get("/")
def root(settings: SettingsDep) -> RedirectResponse:
    return RedirectResponse(f"/join/{settings.default_study}", status_code=303)


@router.get("/join")
def join_default(settings: SettingsDep) -> RedirectResponse:
    return RedirectResponse(f"/join/{settings.default_study}", status_code=303)


def _study_and_protocol(session: SessionDep, key: str) -> tuple[Study, dict[str, Any]]:
    study = studies.get_study(session, key)
    return study, studies.current_protocol(session, study.id)  # type: ignore[arg-type]


@router.get("/join/{key}", response_class=HTMLResponse)
def join_page(key: str, request: Request, session: SessionDep) -> HTMLResponse:
    study, protocol = _study_and_protocol(session, key)
    lang = page_language(request)
    return render(request, "join.html", lang, study=study, protocol=protocol,
                  values={"timezone": "UTC"}, errors={})


def _enrollment_from_form(form: dict[str, Any], protocol: dict[str, Any], lang: str
                          ) -> EnrollmentCreate:
    screening: dict[str, bool] = {}
    for question in protocol["eligibility"]:
        answer = form.get(f"screening_{question['id']}")
        if answer in ("yes", "no"):
            screening[question["id"]] = answer == "yes"
    return EnrollmentCreate(email=form.get("email", ""), language=lang,
                            timezone=form.get("timezone") or "UTC", screening=screening)


@router.post("/join/{key}", response_class=HTMLResponse)
async def join_submit(
    key: str, request: Request, session: SessionDep, now: NowDep, background: BackgroundTasks,
) -> HTMLResponse:
    form = await form_with_csrf(request)
    study, protocol = _study_and_protocol(session, key)
    lang = page_language(request, form.get("lang"))
    errors: dict[str, str] = {}
    try:
        data = _enrollment_from_form(form, protocol, lang)
        eligible, _, _ = participants.enroll(session, study, data, protocol["eligibility"],
                                             now=now)
    except ValidationError as exc:
        errors = {str(e["loc"][0]): "join.error_" + str(e["loc"][0]) for e in exc.errors()}
    except ValidationFailed as exc:
        errors = {d["field"].replace(".", "_"): "join.error_screening" for d in exc.details}
    if errors:
        return render(request, "join.html", lang, status_code=422, study=study,
                      protocol=protocol, values=form, errors=errors)
    if not eligible:
        return render(request, "ineligible.html", lang, study=study, protocol=protocol)
    deliver_in_background(request.app, background)
    return render(request, "check_email.html", lang, study=study, protocol=protocol)


@router.get("/p/login/{token}")
def magic_link(token: str, request: Request, session: SessionDep, settings: SettingsDep,
               now: NowDep) -> Response:
    found = auth.participant_for_token(session, token, now=now)
    if found is None or found[1].kind != "link":
        raise Unauthorized("This link is not valid any more. Join again with the same email "
                           "address to receive a new one.", code="invalid_link")
    participant, _ = found
    participants.mark_contact_verified(session, participant.id, now)
    session_token = auth.issue_participant_token(
        session, participant.id, "session", timedelta(hours=settings.session_ttl_hours), now=now)
    session.commit()
    response = RedirectResponse("/p", status_code=303)
    response.set_cookie(PARTICIPANT_COOKIE, session_token, httponly=True, samesite="lax",
                        secure=settings.secure_cookies,
                        max_age=settings.session_ttl_hours * 3600, path="/")
    return response


@router.get("/p", response_class=HTMLResponse)
def home(request: Request, ctx: WebParticipant, session: SessionDep, now: NowDep) -> Response:
    participant = ctx.participant
    lang = page_language(request, participant.language)
    if participant.status == "withdrawn":
        return render(request, "withdrawn.html", lang)
    state = consent.consent_state(session, participant)
    if state.needs_consent or state.needs_reconsent:
        return RedirectResponse("/p/consent", status_code=303)
    study = session.get(Study, participant.study_id)
    protocol = studies.current_protocol(session, participant.study_id)
    return render(request, "home.html", lang, study=study, protocol=protocol,
                  participant=participant, state=state,
                  surveys=surveys.summaries(session, participant, now),
                  records=consent.public_records(session, participant))


@router.get("/p/consent", response_class=HTMLResponse)
def consent_page(request: Request, ctx: WebParticipant, session: SessionDep) -> Response:
    participant = ctx.participant
    if participant.status == "withdrawn":
        return RedirectResponse("/p", status_code=303)
    lang = page_language(request, participant.language)
    return _render_consent(request, session, participant, lang, {}, {})


def _render_consent(request: Request, session: SessionDep, participant: Any, lang: str,
                    values: dict[str, Any], errors: dict[str, str],
                    status_code: int = 200) -> HTMLResponse:
    study = session.get(Study, participant.study_id)
    protocol = studies.current_protocol(session, participant.study_id)
    doc_lang = request.query_params.get("doc") or values.get("language") or lang
    document = consent.document_for(session, study, doc_lang, protocol["default_language"])  # type: ignore[arg-type]
    state = consent.consent_state(session, participant)
    return render(request, "consent.html", lang, status_code=status_code, study=study,
                  protocol=protocol, document=document, state=state, values=values,
                  errors=errors)


@router.post("/p/consent", response_class=HTMLResponse)
async def consent_submit(request: Request, ctx: WebParticipant, session: SessionDep,
                         now: NowDep) -> Response:
    form = await form_with_csrf(request)
    participant = ctx.participant
    lang = page_language(request, participant.language)
    statements = form.get("statements", [])
    submit = ConsentSubmit(
        version=str(form.get("version", "")), language=str(form.get("language", "")),
        decision="decline" if form.get("decision") == "decline" else "consent",
        signature_name=form.get("signature_name") or None,
        statements=[statements] if isinstance(statements, str) else statements,
    )
    try:
        record = consent.record_decision(session, participant, submit,
                                         identity_verified_at=ctx.identity_verified_at, now=now)
    except ValidationFailed as exc:
        session.rollback()
        return _render_consent(request, session, participant, lang, form,
                               {exc.code: exc.message}, status_code=422)
    session.commit()
    return RedirectResponse(f"/p/consent/records/{record.id}?done=1", status_code=303)


@router.get("/p/consent/records/{record_id}", response_class=HTMLResponse)
def consent_copy(record_id: int, request: Request, ctx: WebParticipant,
                 session: SessionDep) -> HTMLResponse:
    copy = consent.signed_copy(session, ctx.participant, record_id)
    lang = page_language(request, ctx.participant.language)
    return render(request, "consent_copy.html", lang, copy=copy,
                  body_html=consent.render_markdown(copy.body_md),
                  just_done=request.query_params.get("done") == "1")


@router.get("/p/withdraw", response_class=HTMLResponse)
def withdraw_page(request: Request, ctx: WebParticipant, session: SessionDep) -> Response:
    if ctx.participant.status == "withdrawn":
        return RedirectResponse("/p", status_code=303)
    protocol = studies.current_protocol(session, ctx.participant.study_id)
    lang = page_language(request, ctx.participant.language)
    return render(request, "withdraw.html", lang, protocol=protocol, step="choose")


@router.post("/p/withdraw", response_class=HTMLResponse)
async def withdraw_start(request: Request, ctx: WebParticipant, session: SessionDep,
                         now: NowDep) -> HTMLResponse:
    form = await form_with_csrf(request)
    lang = page_language(request, ctx.participant.language)
    protocol = studies.current_protocol(session, ctx.participant.study_id)
    scope = form.get("scope")
    if scope not in ("stop_contact", "delete_data"):
        return render(request, "withdraw.html", lang, status_code=422, protocol=protocol,
                      step="choose", error="withdraw.error_scope")
    withdrawal, token = consent.start_withdrawal(session, ctx.participant, scope, now=now)
    session.commit()
    return render(request, "withdraw.html", lang, protocol=protocol, step="confirm",
                  scope=scope, withdrawal_id=withdrawal.id, confirm_token=token)


@router.post("/p/withdraw/confirm", response_class=HTMLResponse)
async def withdraw_confirm(request: Request, ctx: WebParticipant, session: SessionDep,
                           now: NowDep, settings: SettingsDep) -> HTMLResponse:
    form = await form_with_csrf(request)
    lang = page_language(request, ctx.participant.language)
    try:
        withdrawal_id = int(form.get("withdrawal_id", ""))
    except ValueError as exc:
        raise NotFound("There is no such withdrawal request.") from exc
    withdrawal = consent.confirm_withdrawal_by_policy(
        session, ctx.participant, withdrawal_id, str(form.get("confirm_token", "")), now=now)
    session.commit()
    return render(request, "withdrawn.html", lang, withdrawal=withdrawal)


@router.get("/demo/mailbox", response_class=HTMLResponse)
def demo_mailbox(request: Request, settings: SettingsDep) -> HTMLResponse:
    """Demo only: the messages the console channel 'sent', so a visitor can click their link."""
    channel = request.app.state.channel
    if settings.environment != "demo" or not hasattr(channel, "recent"):
        raise NotFound("There is no such page.")
    return render(request, "demo_mailbox.html", page_language(request),
                  messages=list(reversed(channel.recent)))

"""Participant pages: join -> screening -> email link -> consent -> confirmation and copy."""

from __future__ import annotations

from dataclasses import dataclass, field
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
from app.consent import copy_mail
from app.consent import service as consent
from app.consent.models import ConsentSubmit
from app.core.errors import AppError, Conflict, NotFound, Unauthorized, ValidationFailed
from app.core.ratelimit import count_message_sent
from app.notify import unsubscribe
from app.notify.dispatch import deliver_in_background
from app.participants import erasure
from app.participants import service as participants
from app.participants.models import EmailChangeRequest, EnrollmentCreate, SettingsUpdate
from app.participants.timezones import canonical_zone
from app.studies import service as studies
from app.studies.models import Study
from app.surveys import service as surveys
from app.web.common import form_with_csrf, offered, page_language, render
from app.web.consent_view import document_notes, requested_document_language
from app.web.zone_field import same_zone, zone_field

router = APIRouter(include_in_schema=False)


def web_participant(request: Request, session: SessionDep, now: NowDep) -> ParticipantContext:
    """The participant of this browser session; API bearer tokens are not used on pages."""
    if not request.cookies.get(PARTICIPANT_COOKIE):
        raise Unauthorized("Please open the personal link we emailed you.")
    ctx = current_participant(request, session, None, now)
    # An error page raised later in this request is in the participant's language too.
    request.state.participant_language = ctx.participant.language
    return ctx


WebParticipant = Annotated[ParticipantContext, Depends(web_participant)]


@router.get("/")
def root(settings: SettingsDep) -> RedirectResponse:
    return RedirectResponse(f"/join/{settings.default_study}", status_code=303)


@router.get("/join")
def join_default(request: Request, settings: SettingsDep) -> RedirectResponse:
    lang = offered(request.query_params.get("lang"))  # a shared /join?lang=.. link keeps it
    return RedirectResponse(f"/join/{settings.default_study}" + (f"?lang={lang}" if lang else ""),
                            status_code=303)


def _study_and_protocol(session: SessionDep, key: str) -> tuple[Study, dict[str, Any]]:
    study = studies.get_study(session, key)
    return study, studies.current_protocol(session, study.id)  # type: ignore[arg-type]


@router.get("/join/{key}", response_class=HTMLResponse)
def join_page(key: str, request: Request, session: SessionDep, now: NowDep) -> HTMLResponse:
    study, protocol = _study_and_protocol(session, key)
    lang = page_language(request)
    return render(request, "join.html", lang, study=study, protocol=protocol,
                  values={}, errors={}, **zone_field(lang, now, None))


def _screening_from_form(form: dict[str, Any], protocol: dict[str, Any]) -> dict[str, bool]:
    """The screening questions answered yes or no (unanswered ones are left out)."""
    return {q["id"]: form.get(f"screening_{q['id']}") == "yes" for q in protocol["eligibility"]
            if form.get(f"screening_{q['id']}") in ("yes", "no")}


def _join_form_errors(form: dict[str, Any], protocol: dict[str, Any], lang: str
                      ) -> tuple[EnrollmentCreate | None, dict[str, str]]:
    """The enrollment, or every problem of the form at once (screening, address, zone)."""
    screening = _screening_from_form(form, protocol)
    errors = {d["field"].replace(".", "_"): "join.error_screening"
              for d in participants.screening_problems(protocol["eligibility"], screening)}
    try:
        data = EnrollmentCreate(email=form.get("email", ""), language=lang,
                                timezone=form.get("timezone") or "UTC", screening=screening)
    except ValidationError as exc:
        errors |= {str(e["loc"][0]): "join.error_" + str(e["loc"][0]) for e in exc.errors()}
        return None, errors
    return (None, errors) if errors else (data, errors)


@router.post("/join/{key}", response_class=HTMLResponse)
async def join_submit(
    key: str, request: Request, session: SessionDep, now: NowDep, background: BackgroundTasks,
) -> HTMLResponse:
    form = await form_with_csrf(request)
    study, protocol = _study_and_protocol(session, key)
    lang = page_language(request, form.get("lang"))
    data, errors = _join_form_errors(form, protocol, lang)
    if data is not None:
        try:
            eligible, _, _ = participants.enroll(session, study, data, protocol["eligibility"],
                                                 now=now)
        except ValidationFailed as exc:
            errors = {d["field"].replace(".", "_"): "join.error_screening" for d in exc.details}
    if errors:
        return render(request, "join.html", lang, status_code=422, study=study,
                      protocol=protocol, values=form, errors=errors,
                      **zone_field(lang, now, form.get("timezone")))
    if not eligible:
        return render(request, "ineligible.html", lang, study=study, protocol=protocol)
    count_message_sent(request)  # only now does the address's sign-up limit count it
    deliver_in_background(request.app, background)
    return render(request, "check_email.html", lang, study=study, protocol=protocol)


@router.get("/p/login/{token}")
def magic_link(token: str, request: Request, session: SessionDep, settings: SettingsDep,
               now: NowDep) -> Response:
    redeemed = auth.redeem_link(session, token, timedelta(hours=settings.session_ttl_hours),
                                now=now)
    if redeemed is None:  # unknown, expired, used already or replaced by a newer link
        raise Unauthorized("This link is not valid any more. Join again with the same email "
                           "address to receive a new one.", code="invalid_link")
    participant, session_token = redeemed
    participants.mark_contact_verified(session, participant.id, now)
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
    if participant.status == "declined":  # nothing more to sign: their decline and what it did
        return _declined_page(session, participant)
    lang = page_language(request, participant.language)
    return _render_consent(request, session, participant, lang, {}, {})


def _declined_page(session: SessionDep, participant: Any) -> RedirectResponse:
    declined = [r for r in consent.public_records(session, participant)
                if r.decision == "decline"]
    return RedirectResponse(f"/p/consent/records/{declined[-1].id}", status_code=303)


def _render_consent(request: Request, session: SessionDep, participant: Any, lang: str,
                    values: dict[str, Any], errors: dict[str, str],
                    status_code: int = 200) -> HTMLResponse:
    study = session.get(Study, participant.study_id)
    protocol = studies.current_protocol(session, participant.study_id)
    requested = requested_document_language(request.query_params.get("doc"),
                                            values.get("language"), lang)
    # a document language that does not exist falls back to the page's, then the default
    document = consent.document_for(session, study, requested, protocol["default_language"],  # type: ignore[arg-type]
                                    prefer=(lang,))
    state = consent.consent_state(session, participant)
    return render(request, "consent.html", lang, status_code=status_code, study=study,
                  protocol=protocol, document=document, state=state, values=values,
                  errors=errors, **document_notes(document, requested))


@router.post("/p/consent", response_class=HTMLResponse)
async def consent_submit(request: Request, ctx: WebParticipant, session: SessionDep,
                         now: NowDep, background: BackgroundTasks) -> Response:
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
        problems = exc.details.get("problems") if isinstance(exc.details, dict) else None
        errors = {p["code"]: p["field"] for p in problems or [{"code": exc.code, "field": ""}]}
        return _render_consent(request, session, participant, lang, form, errors,
                               status_code=422)
    except Conflict as exc:  # e.g. a decline sent from a page opened before signing
        session.rollback()
        if exc.code == "declined":
            return _declined_page(session, participant)
        return _render_consent(request, session, participant, lang, form,
                               {exc.code: exc.message}, status_code=409)
    session.commit()
    deliver_in_background(request.app, background)  # the signed copy, by email
    return RedirectResponse(f"/p/consent/records/{record.id}?done=1", status_code=303)


@router.get("/p/consent/records/{record_id}", response_class=HTMLResponse)
def consent_copy(record_id: int, request: Request, ctx: WebParticipant,
                 session: SessionDep) -> HTMLResponse:
    copy = consent.signed_copy(session, ctx.participant, record_id)
    lang = page_language(request, ctx.participant.language)
    return render(request, "consent_copy.html", lang, copy=copy, zone=ctx.participant.timezone,
                  body_html=consent.render_markdown(copy.body_md),
                  just_done=request.query_params.get("done") == "1",
                  can_email=copy.record.decision == "consent"
                  and ctx.participant.status != "withdrawn"
                  and erasure.has_contact(session, ctx.participant.id),
                  emailed=COPY_EMAILED.get(request.query_params.get("emailed", "")))


# ?emailed= after asking for the copy by email -> what the copy page says
COPY_EMAILED = {"sent": "consent_flow.email_sent", "limit": "consent_flow.email_limit",
                "no_address": "consent_flow.email_no_address"}


@router.post("/p/consent/records/{record_id}/email")
async def consent_copy_email(record_id: int, request: Request, ctx: WebParticipant,
                             session: SessionDep, now: NowDep,
                             background: BackgroundTasks) -> RedirectResponse:
    """Email the signed copy again; redirects back, so a reload never asks twice."""
    await form_with_csrf(request)
    try:
        copy_mail.email_again(session, ctx.participant, record_id, now=now)
        outcome = "sent"  # also when the same copy is on its way already (a double click)
    except copy_mail.CopyEmailLimit:
        outcome = "limit"
    except Conflict:
        outcome = "no_address"
    session.commit()
    deliver_in_background(request.app, background)
    return RedirectResponse(f"/p/consent/records/{record_id}?emailed={outcome}#email-copy",
                            status_code=303)


@router.get("/p/withdraw", response_class=HTMLResponse)
def withdraw_page(request: Request, ctx: WebParticipant, session: SessionDep) -> Response:
    if ctx.participant.status == "withdrawn":
        return RedirectResponse("/p", status_code=303)
    if ctx.participant.status == "declined":  # nothing to withdraw from: their decline instead
        return _declined_page(session, ctx.participant)
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
    # The session was revoked with every other credential: the browser forgets it too.
    return render(request, "withdrawn.html", lang, withdrawal=withdrawal, ending_session=True)


# ---- settings: upcoming surveys, pause, time zone, language, email address -------------------
# The same services as the JSON API (so the same audit entries); every change is a POST with
# CSRF that redirects back (?done=...) so a reload never repeats it.

UPCOMING_SHOWN = 5  # occasions
SETTINGS_DONE = {"paused": "settings.done_paused", "resumed": "settings.done_resumed",
                 "preferences": "settings.done_preferences", "email": "settings.email_sent"}
EMAIL_CONFIRM_ERRORS = {"email_unavailable": "settings.email_unavailable",
                        "expired": "settings.email_link_expired",
                        "already_confirmed": "settings.email_already_confirmed"}


def _gate_page(session: SessionDep, participant: Any) -> Response | None:
    """Where to send someone who may not use the settings pages right now."""
    if participant.status == "withdrawn":
        return RedirectResponse("/p", status_code=303)
    state = consent.consent_state(session, participant)
    if state.needs_consent or state.needs_reconsent:
        return RedirectResponse("/p/consent", status_code=303)
    return None


@dataclass
class _Occasion:
    """One survey occasion (entry and wave): when, and the questionnaires in it."""

    opens_at: Any
    closes_at: Any
    is_open: bool
    surveys: list[tuple[str, str]] = field(default_factory=list)  # (instance id, title)


def _upcoming_occasions(session: SessionDep, participant: Any, now: Any) -> list[_Occasion]:
    from app.scheduling import service as scheduling

    occasions: dict[tuple[str, int], _Occasion] = {}
    for instance in scheduling.upcoming(session, participant, now=now):
        key = (instance.schedule_entry, instance.wave)
        if key not in occasions:
            if len(occasions) == UPCOMING_SHOWN:
                break
            occasions[key] = _Occasion(instance.scheduled_at, instance.closes_at,
                                       instance.status == "open")
        occasions[key].surveys.append(
            (instance.id, surveys.localized(session, participant, instance).title))
    return list(occasions.values())


def _render_settings(request: Request, session: SessionDep, participant: Any, now: Any, *,
                     status_code: int = 200, errors: dict[str, str] | None = None,
                     values: dict[str, Any] | None = None) -> HTMLResponse:
    lang = page_language(request, participant.language)
    posted = (values or {}).get("timezone")
    chosen = posted if posted and canonical_zone(posted) else participant.timezone
    return render(request, "settings.html", lang, status_code=status_code,
                  participant=participant,
                  upcoming=_upcoming_occasions(session, participant, now),
                  done=SETTINGS_DONE.get(request.query_params.get("done", "")),
                  errors=errors or {}, values=values or {},
                  email_stopped_page=unsubscribe.page_if_stopped(
                      session, request.app.state.settings.secret_key, participant.id),
                  **zone_field(lang, now, chosen, keep_unlisted=chosen == participant.timezone))


@router.get("/p/settings", response_class=HTMLResponse)
def settings_page(request: Request, ctx: WebParticipant, session: SessionDep,
                  now: NowDep) -> Response:
    return _gate_page(session, ctx.participant) or _render_settings(
        request, session, ctx.participant, now)


@router.post("/p/settings/pause", response_class=HTMLResponse)
async def settings_pause(request: Request, ctx: WebParticipant, session: SessionDep,
                         now: NowDep) -> Response:
    form = await form_with_csrf(request)
    if (gated := _gate_page(session, ctx.participant)) is not None:
        return gated
    paused = form.get("action") != "resume"
    participants.set_paused(session, ctx.participant, paused, now=now)
    return RedirectResponse(f"/p/settings?done={'paused' if paused else 'resumed'}",
                            status_code=303)


@router.post("/p/settings/preferences", response_class=HTMLResponse)
async def settings_preferences(request: Request, ctx: WebParticipant, session: SessionDep,
                               now: NowDep) -> Response:
    form = await form_with_csrf(request)
    if (gated := _gate_page(session, ctx.participant)) is not None:
        return gated
    zone = form.get("timezone") or None
    if zone is not None and same_zone(zone, ctx.participant.timezone):
        zone = None  # unchanged: also a stored alias (US/Eastern) or a zone from before the list
    try:
        update = SettingsUpdate(timezone=zone, language=form.get("language") or None)
    except ValidationError as exc:
        errors = {str(e["loc"][0]): f"settings.error_{e['loc'][0]}" for e in exc.errors()}
        return _render_settings(request, session, ctx.participant, now, status_code=422,
                                errors=errors, values=form)
    participants.change_settings(session, ctx.participant, timezone=update.timezone,
                                 language=update.language, now=now)
    # No ?lang=: the page follows the (possibly new) language of the participant.
    return RedirectResponse("/p/settings?done=preferences", status_code=303)


@router.post("/p/settings/email", response_class=HTMLResponse)
async def settings_email(request: Request, ctx: WebParticipant, session: SessionDep,
                         now: NowDep, background: BackgroundTasks) -> Response:
    form = await form_with_csrf(request)
    if (gated := _gate_page(session, ctx.participant)) is not None:
        return gated
    try:
        wanted = EmailChangeRequest(email=str(form.get("email", "")))
    except ValidationError:
        return _render_settings(request, session, ctx.participant, now, status_code=422,
                                errors={"email": "settings.error_email"}, values=form)
    participants.request_email_change(session, ctx.participant, wanted.email, now=now)
    count_message_sent(request)
    deliver_in_background(request.app, background)
    return RedirectResponse("/p/settings?done=email", status_code=303)


@router.get("/p/email/confirm/{token}", response_class=HTMLResponse)
def email_confirm_page(token: str, request: Request, ctx: WebParticipant,
                       session: SessionDep) -> Response:
    if (gated := _gate_page(session, ctx.participant)) is not None:
        return gated
    lang = page_language(request, ctx.participant.language)
    return render(request, "email_confirm.html", lang, token=token, step="confirm")


@router.post("/p/email/confirm/{token}", response_class=HTMLResponse)
async def email_confirm_submit(token: str, request: Request, ctx: WebParticipant,
                               session: SessionDep, now: NowDep,
                               background: BackgroundTasks) -> Response:
    await form_with_csrf(request)
    if (gated := _gate_page(session, ctx.participant)) is not None:
        return gated
    lang = page_language(request, ctx.participant.language)
    try:
        participants.confirm_email_change(session, ctx.participant, token, now=now)
    except AppError as exc:
        if exc.status_code not in (404, 409):
            raise
        session.rollback()
        error = EMAIL_CONFIRM_ERRORS.get(exc.code, "settings.email_link_invalid")
        return render(request, "email_confirm.html", lang, status_code=exc.status_code,
                      token=token, step="error", error=error)
    deliver_in_background(request.app, background)  # the notice to the replaced address
    return render(request, "email_confirm.html", lang, token=token, step="done")


# Taking a change of address back, from the link sent to the old address: no session needed
# (whoever changed it may hold the only one), a POST so that a mail scanner opening the link
# changes nothing.
EMAIL_UNDO_ERRORS = {"expired": "email_undo.expired",
                     "email_unavailable": "settings.email_unavailable"}


@router.get("/p/email/undo/{token}", response_class=HTMLResponse)
def email_undo_page(token: str, request: Request) -> HTMLResponse:
    return render(request, "email_undo.html", page_language(request), token=token,
                  step="confirm")


@router.post("/p/email/undo/{token}", response_class=HTMLResponse)
async def email_undo_submit(token: str, request: Request, session: SessionDep, now: NowDep,
                            background: BackgroundTasks) -> Response:
    await form_with_csrf(request)
    try:
        participant = participants.undo_email_change(session, token, now=now)
    except AppError as exc:
        if exc.status_code not in (404, 409):
            raise
        session.rollback()
        return render(request, "email_undo.html", page_language(request),
                      status_code=exc.status_code, token=token, step="error",
                      error=EMAIL_UNDO_ERRORS.get(exc.code, "email_undo.invalid"))
    session.commit()
    deliver_in_background(request.app, background)  # a new link to the old address
    return render(request, "email_undo.html", page_language(request, participant.language),
                  token=token, step="done", ending_session=True)


@router.get("/demo/mailbox", response_class=HTMLResponse)
def demo_mailbox(request: Request, settings: SettingsDep) -> HTMLResponse:
    """Demo only: the messages the console channel 'sent', so a visitor can click their link."""
    channel = request.app.state.channel
    if settings.environment != "demo" or not hasattr(channel, "recent"):
        raise NotFound("There is no such page.")
    return render(request, "demo_mailbox.html", page_language(request),
                  messages=list(reversed(channel.recent)))

"""Participant survey pages: one instrument per page, progress, errors next to the item."""

from __future__ import annotations

import json
import uuid
from typing import Any

from fastapi import APIRouter, BackgroundTasks, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.auth.deps import NowDep, SessionDep
from app.consent import service as consent
from app.core.errors import Conflict, ValidationFailed
from app.safety import service as safety
from app.surveys import service as surveys
from app.surveys.answers import lenient_value, visible_items
from app.web.common import form_with_csrf, page_language, render
from app.web.routes import WebParticipant
from app.web.submitted_routes import saved_page, saved_url, url_after_submission

router = APIRouter(prefix="/p/surveys", include_in_schema=False)
RESERVED_FIELDS = {"csrf_token", "idempotency_key", "lang"}


def _gate(session: SessionDep, ctx: WebParticipant) -> Response | None:
    """Pages send people to the consent form instead of showing a bare 403."""
    state = consent.consent_state(session, ctx.participant)
    if ctx.participant.status == "withdrawn" or state.needs_consent or state.needs_reconsent:
        return RedirectResponse("/p", status_code=303)
    consent.check_gate(session, ctx.participant)
    return None


def _progress(session: SessionDep, instance: Any) -> tuple[int, int]:
    """This questionnaire's place among those of the same occasion (e.g. 3 of 9 at baseline)."""
    siblings = surveys.occasion_of(session, instance)
    return [s.id for s in siblings].index(instance.id) + 1, len(siblings)


def _render_survey(request: Request, session: SessionDep, ctx: WebParticipant, instance: Any,
                   now: Any, values: dict[str, Any], errors: dict[str, list[dict[str, Any]]],
                   idempotency_key: str, status_code: int = 200) -> HTMLResponse:
    lang = page_language(request, ctx.participant.language)
    survey = surveys.localized(session, ctx.participant, instance)
    step, total = _progress(session, instance)
    conditions = {i.id: i.show_if.model_dump(exclude_none=True)
                  for i in survey.items if i.show_if is not None}
    response = render(request, "survey.html", lang, status_code=status_code, survey=survey,
                      instance=instance, values=values, errors=errors, step=step, total=total,
                      idempotency_key=idempotency_key, conditions_json=json.dumps(conditions))
    # Not kept in the browser's history cache: going back to it after submitting asks the
    # server again, which then shows the saved answers instead of the filled-in form.
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/{instance_id}", response_class=HTMLResponse)
def survey_page(instance_id: str, request: Request, ctx: WebParticipant, session: SessionDep,
                now: NowDep) -> Response:
    redirect = _gate(session, ctx)
    if redirect:
        return redirect
    instance = surveys.get_own_instance(session, ctx.participant, instance_id)
    if instance.status == "completed":  # back, reload, an old link: show what was saved
        return saved_page(request, session, ctx.participant, instance, now)
    surveys.mark_viewed(session, instance, now)
    return _render_survey(request, session, ctx, instance, now, {}, {}, str(uuid.uuid4()))


def _answers_from_form(form: dict[str, Any], instrument: Any) -> dict[str, Any]:
    raw = {k: v for k, v in form.items() if k not in RESERVED_FIELDS and v not in ("", [])}
    for key, value in raw.items():  # one ticked box arrives as a plain string
        if key in instrument.item_ids and instrument.item(key).type == "multiple_choice" \
                and isinstance(value, str):
            raw[key] = [value]
    # Without JavaScript every item is on the page: drop answers to items the others hide.
    lenient = {k: lenient_value(instrument.item(k), v) for k, v in raw.items()
               if k in instrument.item_ids}
    shown = {item.id for item in visible_items(instrument, lenient)}
    return {k: v for k, v in raw.items() if k in shown or k not in instrument.item_ids}


@router.post("/{instance_id}", response_class=HTMLResponse)
async def survey_submit(instance_id: str, request: Request, ctx: WebParticipant,
                        session: SessionDep, now: NowDep,
                        background: BackgroundTasks) -> Response:
    form = await form_with_csrf(request)
    redirect = _gate(session, ctx)
    if redirect:
        return redirect
    instance = surveys.get_own_instance(session, ctx.participant, instance_id)
    if instance.status == "completed":  # posted again (back, then submit; a reload): no store
        return RedirectResponse(saved_url(instance.id), status_code=303)
    instrument, _ = surveys.instrument_of(session, instance)
    answers = _answers_from_form(form, instrument)
    key = str(form.get("idempotency_key") or uuid.uuid4())
    try:
        result = surveys.submit(session, ctx.participant, instance_id, answers, key, now=now)
    except Conflict as exc:  # a twin request (another key) was stored a moment earlier
        session.rollback()
        if exc.code != "already_completed":
            raise
        return RedirectResponse(saved_url(instance.id), status_code=303)
    except ValidationFailed as exc:
        session.rollback()
        if exc.code == "idempotency_key_reused":  # a twin with other answers won the race
            return RedirectResponse(saved_url(instance.id), status_code=303)
        if not isinstance(exc.details, list):
            raise
        errors: dict[str, list[dict[str, Any]]] = {}
        for error in exc.details:
            errors.setdefault(error["item"] or "_form", []).append(error)
        return _render_survey(request, session, ctx, instance, now, form, errors, key,
                              status_code=422)
    lang = page_language(request, ctx.participant.language)
    next_url = (saved_url(instance.id) if result.replayed
                else url_after_submission(session, ctx.participant, instance, now))
    if result.show_crisis_resources:
        # Their country's lines and emergency numbers, in the page language.
        page = render(request, "crisis.html", lang, next_url=next_url,
                      help=surveys.crisis_help(session, ctx.participant, lang))
        if not result.replayed:  # the on-call alert, at once
            session.commit()  # ends the reads' transaction: SQLite lets one writer at a time
            background.add_task(safety.deliver_now, request.app)
        return page
    return RedirectResponse(next_url, status_code=303)

"""After a questionnaire is submitted: the "answers saved" page and the thank-you page.

Going back to a submitted questionnaire (the back button, a reload, the same form posted again)
shows what was saved instead of the form or an error; the last questionnaire of a set leads to a
thank-you page with the next date and the participant's progress through the study.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.auth.deps import NowDep, SessionDep
from app.consent import service as consent
from app.surveys import service as surveys
from app.web.common import page_language, render
from app.web.routes import WebParticipant

router = APIRouter(prefix="/p/surveys", include_in_schema=False)


def saved_url(instance_id: str) -> str:
    return f"/p/surveys/{instance_id}"


def thanks_url(instance_id: str) -> str:
    return f"/p/surveys/{instance_id}/thanks"


def _next_open(session: SessionDep, participant: Any, now: Any) -> Any:
    following = surveys.open_instances(session, participant, now)
    return following[0] if following else None


def url_after_submission(session: SessionDep, participant: Any, instance: Any, now: Any) -> str:
    """Where a fresh submission leads: the thank-you page once the set is done, else the next
    open questionnaire (or home)."""
    if surveys.occasion_finished(session, instance):
        return thanks_url(instance.id)
    following = _next_open(session, participant, now)
    return saved_url(following.id) if following else "/p"


def saved_page(request: Request, session: SessionDep, participant: Any, instance: Any,
               now: Any) -> Response:
    """What was saved for a submitted questionnaire, in the participant's language."""
    saved = surveys.saved_answers(session, participant, instance)
    if saved is None:
        return RedirectResponse("/p", status_code=303)
    lang = page_language(request, participant.language)
    response = render(request, "saved.html", lang, participant=participant, saved=saved,
                      next_survey=_next_open(session, participant, now))
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/{instance_id}/thanks", response_class=HTMLResponse)
def thanks_page(instance_id: str, request: Request, ctx: WebParticipant, session: SessionDep,
                now: NowDep) -> Response:
    from app.scheduling import service as scheduling

    participant = ctx.participant
    state = consent.consent_state(session, participant)
    if participant.status == "withdrawn" or state.needs_consent or state.needs_reconsent:
        return RedirectResponse("/p", status_code=303)
    instance = surveys.get_own_instance(session, participant, instance_id)
    if instance.status != "completed" or not surveys.occasion_finished(session, instance):
        return RedirectResponse(saved_url(instance.id), status_code=303)
    lang = page_language(request, participant.language)
    return render(request, "thanks.html", lang, participant=participant,
                  progress=scheduling.progress(session, participant, now=now),
                  next_occasion=scheduling.next_occasion(session, participant, now=now),
                  next_survey=_next_open(session, participant, now))

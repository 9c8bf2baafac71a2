"""The public "Need help now?" page: every offered country's crisis lines and emergency
numbers, the signed-in participant's country first. No login, no JavaScript needed."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from app.auth.deps import PARTICIPANT_COOKIE, NowDep, SessionDep, SettingsDep, current_participant
from app.core.errors import Unauthorized
from app.participants.models import Participant
from app.studies import service as studies
from app.surveys import service as surveys
from app.web.common import page_language, render

router = APIRouter(include_in_schema=False)


def _signed_in(request: Request, session: SessionDep, now: NowDep) -> Participant | None:
    """The participant of this browser, if a valid session cookie says so; help is shown to
    everyone, so a missing or stale session is no error here."""
    if not request.cookies.get(PARTICIPANT_COOKIE):
        return None
    try:
        return current_participant(request, session, None, now).participant
    except Unauthorized:
        return None


@router.get("/help", response_class=HTMLResponse)
def help_page(request: Request, session: SessionDep, settings: SettingsDep,
              now: NowDep) -> HTMLResponse:
    participant = _signed_in(request, session, now)
    lang = page_language(request, participant.language if participant else None)
    if participant is not None:
        found = surveys.crisis_help(session, participant, lang, full_list=True)
    else:
        study = studies.get_study(session, settings.default_study)
        found = surveys.study_crisis_help(session, study.id, lang)  # type: ignore[arg-type]
    return render(request, "help.html", lang, help=found,
                  home="/p" if participant is not None else f"/join/{settings.default_study}")

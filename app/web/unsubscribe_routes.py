"""The unsubscribe link of invitations and reminders (RFC 8058), app/notify/unsubscribe.py.

GET shows the page where the person chooses (stop email contact, or pause participation); it
changes nothing, so a mail scanner that opens links does no harm. POST with the body
`List-Unsubscribe=One-Click` is what a mail client sends for its unsubscribe button: no cookie,
no CSRF token, no login; the token in the address is the only thing that names the person, so
a forged POST can do no more than the link's holder could (the token opens nothing else). The
page's own form is an ordinary form with a CSRF token.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from app.auth.deps import NowDep, SessionDep
from app.core.errors import AppError, NotFound
from app.notify import unsubscribe
from app.notify.models import MailContact
from app.participants.models import Participant
from app.studies import service as studies
from app.web.common import chosen_language, form_with_csrf, page_language, render

router = APIRouter(include_in_schema=False)
ONE_CLICK = ("List-Unsubscribe", "One-Click")
PAGE_CHOICES = ("stop", "pause", "resume")


def _page(request: Request, session: SessionDep, token: str, participant: Participant,
          row: MailContact, *, status_code: int = 200, done: str | None = None,
          error: str | None = None) -> HTMLResponse:
    lang = chosen_language(request) or page_language(request, participant.language)
    protocol = studies.current_protocol(session, participant.study_id)
    return render(request, "unsubscribe.html", lang, status_code=status_code, step="choose",
                  token=token, study=studies.localized(protocol["title"], lang),
                  stopped=row.email_stopped_at is not None,
                  paused=participant.status == "paused",
                  can_pause=unsubscribe.can_pause(participant), one_click=row.one_click,
                  done=done, error=error)


def _invalid(request: Request) -> HTMLResponse:
    return render(request, "unsubscribe.html", page_language(request), status_code=404,
                  step="invalid")


@router.get(unsubscribe.PATH + "{token}", response_class=HTMLResponse)
def unsubscribe_page(token: str, request: Request, session: SessionDep) -> HTMLResponse:
    try:
        participant, row = unsubscribe.participant_for(session, token)
    except NotFound:
        return _invalid(request)
    return _page(request, session, token, participant, row)


@router.post(unsubscribe.PATH + "{token}", response_class=HTMLResponse)
async def unsubscribe_submit(token: str, request: Request, session: SessionDep,
                             now: NowDep) -> Response:
    form = await request.form()
    if form.get(ONE_CLICK[0]) == ONE_CLICK[1]:
        try:
            applied = unsubscribe.one_click(session, token, now=now)
        except NotFound:
            return _invalid(request)
        session.commit()
        participant, row = unsubscribe.participant_for(session, token)
        return _page(request, session, token, participant, row, done=applied)
    await form_with_csrf(request)  # the page's own form
    try:
        participant, row = unsubscribe.participant_for(session, token)
    except NotFound:
        return _invalid(request)
    choice = form.get("choice")
    if choice not in PAGE_CHOICES or (choice == "pause"
                                      and not unsubscribe.can_pause(participant)):
        return _page(request, session, token, participant, row, status_code=422,
                     error="unsubscribe.error_choice")
    try:
        _apply(session, participant, row, str(choice), now)
    except AppError:
        session.rollback()
        raise
    session.commit()
    return _page(request, session, token, participant, row, done=str(choice))


def _apply(session: SessionDep, participant: Participant, row: MailContact, choice: str,
           now: NowDep) -> None:
    if choice == "resume":
        unsubscribe.resume_email(session, participant, row, via="page", now=now)
        return
    unsubscribe.remember_choice(session, row, choice, now=now)
    if choice == "stop":
        unsubscribe.stop_email(session, participant, row, via="page", now=now)
    else:
        unsubscribe.pause(session, participant, now=now)

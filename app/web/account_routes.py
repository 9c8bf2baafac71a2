"""Participant account pages: sign out (this browser or every device) and "download my data".

The same services as the JSON API (app/auth/routes.py, app/participants/data_routes.py).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.auth import service as auth
from app.auth.deps import PARTICIPANT_COOKIE, NowDep, SessionDep, SettingsDep
from app.participants import own_data
from app.web.common import form_with_csrf, page_language, render
from app.web.routes import WebParticipant

router = APIRouter(include_in_schema=False)


def _signed_out(request: Request, settings: SettingsDep, lang: str, everywhere: bool
                ) -> RedirectResponse:
    target = f"/p/signed-out?lang={lang}" + ("&everywhere=1" if everywhere else "")
    response = RedirectResponse(target, status_code=303)
    response.delete_cookie(PARTICIPANT_COOKIE, path="/", httponly=True, samesite="lax",
                           secure=settings.secure_cookies)
    return response


@router.post("/p/sign-out")
async def sign_out(request: Request, session: SessionDep, settings: SettingsDep,
                   now: NowDep) -> Response:
    """Revoke this browser's session and forget the cookie. A session that has already ended
    is simply forgotten: signing out never ends on an error page."""
    await form_with_csrf(request)
    lang = page_language(request)
    token = request.cookies.get(PARTICIPANT_COOKIE)
    found = auth.participant_request_context(session, token, now=now) if token else None
    if found is not None:
        auth.sign_out(session, found.credential, now=now)
        session.commit()
        lang = page_language(request, found.participant.language)
    return _signed_out(request, settings, lang, everywhere=False)


@router.post("/p/sign-out/everywhere")
async def sign_out_everywhere(request: Request, ctx: WebParticipant, session: SessionDep,
                              settings: SettingsDep, now: NowDep) -> Response:
    await form_with_csrf(request)
    auth.sign_out_everywhere(session, ctx.participant.id, now=now)
    session.commit()
    return _signed_out(request, settings, page_language(request, ctx.participant.language),
                       everywhere=True)


@router.get("/p/signed-out", response_class=HTMLResponse)
def signed_out(request: Request, settings: SettingsDep) -> HTMLResponse:
    return render(request, "signed_out.html", page_language(request),
                  everywhere=request.query_params.get("everywhere") == "1",
                  join_url=f"/join/{settings.default_study}")


# ---- download my data ----------------------------------------------------------------------
# Open to every valid session, whatever the participant's status: someone who declined or
# withdrew may still see what is held about them until their session ends.

@router.get("/p/data", response_class=HTMLResponse)
def data_page(request: Request, ctx: WebParticipant) -> HTMLResponse:
    lang = page_language(request, ctx.participant.language)
    return render(request, "my_data.html", lang, participant=ctx.participant,
                  csv_files=own_data.CSV_FILES)


def _download(ctx: WebParticipant, session: SessionDep, now: NowDep, fmt: str) -> Response:
    body, media_type, filename = own_data.download(session, ctx.participant, fmt, via="web",
                                                   now=now)
    session.commit()
    return Response(body, media_type=media_type, headers=own_data.attachment_headers(filename))


@router.get("/p/data/my-data.json")
def data_download_json(ctx: WebParticipant, session: SessionDep, now: NowDep) -> Response:
    return _download(ctx, session, now, "json")


@router.get("/p/data/my-data.zip")
def data_download_csv(ctx: WebParticipant, session: SessionDep, now: NowDep) -> Response:
    return _download(ctx, session, now, "csv")

"""The participant's own data through the JSON API (GET /api/v1/me/data).

No consent gate: whoever holds a valid session may read what is held about them, including a
participant who declined or withdrew (until that session ends or is signed out).
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from app.auth.deps import NowDep, ParticipantDep, SessionDep
from app.participants import own_data

router = APIRouter(prefix="/api/v1", tags=["participant"])


@router.get("/me/data", responses={200: {"content": {"application/json": {}}}})
def my_data(ctx: ParticipantDep, session: SessionDep, now: NowDep) -> Response:
    """Everything held about me (the same JSON as the page's download), audited."""
    body, media_type, filename = own_data.download(session, ctx.participant, "json",
                                                   via="api", now=now)
    session.commit()
    return Response(body, media_type=media_type, headers=own_data.attachment_headers(filename))

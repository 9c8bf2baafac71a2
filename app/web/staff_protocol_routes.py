"""The console's protocol page: every loaded version of each study with what it changed, and
what loading each study file now on the server would change (the same check and comparison as
`wellpanel study diff`). Read-only: amendments are applied with `wellpanel study load`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from app.auth.deps import SessionDep, SettingsDep
from app.auth.models import StaffMember
from app.core.errors import AppError
from app.studies import service as studies
from app.web.console_common import staff_page, staff_render

router = APIRouter()
ProtocolReader = Annotated[StaffMember, Depends(staff_page("researcher", "irb"))]


@router.get("/protocol", response_class=HTMLResponse)
def protocol_page(request: Request, member: ProtocolReader, session: SessionDep,
                  settings: SettingsDep) -> HTMLResponse:
    pending: list[dict[str, Any]] = []
    for file in sorted((settings.surveys_dir / "studies").glob("*.yaml")):
        try:
            pending.append({"file": file.name, "diff": studies.preview_load(
                session, file, settings.surveys_dir), "error": None})
        except AppError as exc:  # a file that would not load says why, like the CLI
            pending.append({"file": file.name, "diff": None, "error": exc.message})
    histories = []
    for key in studies.study_keys(session):
        histories.append((key, studies.protocol_history(session, key)))
    return staff_render(request, "staff/protocol.html", member, pending=pending,
                        histories=histories)

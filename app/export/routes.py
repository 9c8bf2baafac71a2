"""Researcher export API: start an export in the background, watch it, download the zip."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import FileResponse

from app.auth.deps import NowDep, SessionDep, require_staff
from app.auth.models import StaffMember
from app.core.errors import ValidationFailed
from app.export import jobs
from app.export.jobs import ExportJobOut, ExportRequest

router = APIRouter(prefix=jobs.API_PREFIX, tags=["researcher"], lifespan=jobs.lifespan)
Researcher = Annotated[StaffMember, Depends(require_staff("researcher"))]
IDEMPOTENCY_KEY = r"^[A-Za-z0-9_.:\-]{8,200}$"


@router.post("", status_code=202, response_model=ExportJobOut)
def start_export(
    body: ExportRequest, staff: Researcher, session: SessionDep, now: NowDep, request: Request,
    response: Response,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> ExportJobOut:
    """Queue an export; poll the job's `self` link, then fetch its `download` link."""
    if idempotency_key is not None and not re.fullmatch(IDEMPOTENCY_KEY, idempotency_key):
        raise ValidationFailed("Idempotency-Key: send 8 to 200 letters, digits or -_.:",
                               details={"field": "Idempotency-Key"})
    job = jobs.start_export(session, staff, body, worker=jobs.worker_for(request.app), now=now,
                            idempotency_key=idempotency_key)
    view = jobs.job_view(job)
    response.headers["Location"] = view.links["self"]
    return view


@router.get("", response_model=list[ExportJobOut])
def list_exports(staff: Researcher, session: SessionDep) -> list[ExportJobOut]:
    """The caller's exports, newest first."""
    return [jobs.job_view(j) for j in jobs.list_jobs(session, staff)]


@router.get("/{job_id}", response_model=ExportJobOut)
def get_export(job_id: str, staff: Researcher, session: SessionDep) -> ExportJobOut:
    return jobs.job_view(jobs.get_job(session, staff, job_id))


@router.get("/{job_id}/download", response_class=FileResponse)
def download_export(job_id: str, staff: Researcher, session: SessionDep,
                    now: NowDep) -> FileResponse:
    """The zip (datapackage.json at its root); 409 until the export is done."""
    path = jobs.archive_path(session, staff, job_id, now=now)
    job = jobs.get_job(session, staff, job_id)
    return FileResponse(path, media_type="application/zip",
                        filename=f"wellpanel-export-{job_id}.zip",
                        headers={"X-Content-SHA256": job.archive_sha256 or ""})

"""Export pages: start an export (profile, format), follow it, download it, see its audit
entry, run the analysis on it and open the report. Built on app.export.jobs."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from app.audit import service as audit
from app.auth.deps import NowDep, SessionDep
from app.auth.models import StaffMember
from app.core.errors import AppError, Conflict, NotFound
from app.export import jobs
from app.web.common import form_with_csrf
from app.web.console_analysis import REPORT_ERROR_KEY, start_analysis
from app.web.console_common import Researcher, staff_render

router = APIRouter(prefix="/researcher/exports")
BASE = "/staff/researcher/exports"
REFRESH_SECONDS = 2
# The report is our own HTML, but it shows study data: no scripts, no requests, own origin.
REPORT_CSP = ("sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
              "font-src data:")


def _page(request: Request, member: StaffMember, session: SessionDep, *,
          status_code: int = 200, error: str | None = None,
          form: dict[str, str] | None = None) -> HTMLResponse:
    rows = [(job, jobs.job_view(job)) for job in jobs.list_jobs(session, member, limit=50)]
    busy = any(job.status in ("queued", "running") or job.report_status == "running"
               for job, _ in rows)
    response = staff_render(request, "staff/exports.html", member, rows=rows, error=error,
                            form=form or {}, report_error_key=REPORT_ERROR_KEY,
                            refresh=REFRESH_SECONDS if busy else None,
                            status_code=status_code)
    if busy:  # follow progress without JavaScript: the browser reloads the page (a URL with
        # no #fragment: reloading one with a fragment would only scroll, not fetch)
        response.headers["Refresh"] = f"{REFRESH_SECONDS}; url={BASE}"
    return response


@router.get("", response_class=HTMLResponse)
def exports_page(request: Request, member: Researcher, session: SessionDep) -> HTMLResponse:
    return _page(request, member, session)


@router.post("")
async def start(request: Request, member: Researcher, session: SessionDep,
                now: NowDep) -> Response:
    form = await form_with_csrf(request)
    values = {"format": form.get("format", "csv"), "profile": form.get("profile", "strict"),
              "dua": form.get("dua") or None, "include_items": form.get("include_items") == "on"}
    try:
        wanted = jobs.ExportRequest(**values)
        job = jobs.start_export(session, member, wanted, worker=jobs.worker_for(request.app),
                                now=now)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return _page(request, member, session, status_code=422, error=problems,
                     form={k: str(v or "") for k, v in values.items()})
    except AppError as exc:
        session.rollback()
        return _page(request, member, session, status_code=exc.status_code, error=exc.message,
                     form={k: str(v or "") for k, v in values.items()})
    return RedirectResponse(f"{BASE}#job-{job.id}", status_code=303)


@router.get("/{job_id}/download")
def download(job_id: str, member: Researcher, session: SessionDep, now: NowDep) -> FileResponse:
    path = jobs.archive_path(session, member, job_id, now=now)  # 404 for others' jobs; audited
    return FileResponse(path, media_type="application/zip",
                        filename=f"wellpanel-export-{job_id}.zip")


@router.post("/{job_id}/analyze")
async def analyze(job_id: str, request: Request, member: Researcher, session: SessionDep,
                  now: NowDep) -> Response:
    await form_with_csrf(request)
    job = jobs.get_job(session, member, job_id)
    if job.status != "done" or not job.archive_path or not Path(job.archive_path).is_file():
        raise Conflict("Only a finished export can be analysed.", code="export_not_ready")
    start_analysis(session, jobs.worker_for(request.app).runner, member, job,
                   Path(job.archive_path), now=now)
    return RedirectResponse(f"{BASE}#job-{job.id}", status_code=303)


@router.get("/{job_id}/report")
def report(job_id: str, member: Researcher, session: SessionDep, now: NowDep) -> FileResponse:
    job = jobs.get_job(session, member, job_id)
    if job.report_status != "done" or not job.report_path or not Path(job.report_path).is_file():
        raise NotFound("This export has no analysis report yet.", code="report_missing")
    audit.append(session, actor=f"staff:{member.id}", action="staff.view_report",
                 target=f"export_job:{job.id}", now=now)
    session.commit()
    return FileResponse(job.report_path, media_type="text/html",
                        headers={"Content-Security-Policy": REPORT_CSP,
                                 "Cache-Control": "no-store"})

"""Run the analysis (``wellpanel analyze``) on a finished export, as a job (app.jobs, kind
``analysis``) that whichever API process gets to it first runs under a lease.

The export's zip is unpacked into a work directory of this claim beside it,
``analysis.report.build_report`` writes a self-contained report.html into a report directory of
this claim, and the export record's ``report_status`` / ``report_path`` record the outcome
(running -> done | failed) together with the job's completion, so a process that lost the job
(killed, its lease taken over) never records a report. A second start while one runs is refused
(409); a failure is retried up to ``job_max_attempts`` before it shows as failed.
"""

from __future__ import annotations

import logging
import shutil
import zipfile
from datetime import datetime
from pathlib import Path

from sqlalchemy import or_, update
from sqlmodel import Session, col

from app.audit import service as audit
from app.auth.models import StaffMember
from app.core.errors import Conflict
from app.export.models import ExportJob
from app.jobs import service as jobs_service
from app.jobs.runner import JobContext, JobFailed, JobRunner, register

log = logging.getLogger("wellpanel.web.analysis")
REPORT_ERROR_KEY = "report_error"
KIND = "analysis"
REPORT_SUFFIX = "-report-"


def report_dir(archive: Path, token: str) -> Path:
    """This claim's report directory: a process that lost the job never writes into the one
    that is recorded."""
    return archive.with_name(f"{archive.stem}{REPORT_SUFFIX}{token[:12]}")


def start_analysis(session: Session, runner: JobRunner, member: StaffMember, job: ExportJob,
                   archive: Path, *, now: datetime) -> None:
    """Mark the export's report running (only if none is running or done), record the request
    in the ledger and queue the job, in one commit; then wake this process's runner."""
    claimed = session.exec(update(ExportJob)  # type: ignore[call-overload]
                           .where(col(ExportJob.id) == job.id,
                                  or_(col(ExportJob.report_status).is_(None),
                                      col(ExportJob.report_status) == "failed"))
                           .values(report_status="running", report_path=None))
    if claimed.rowcount != 1:
        raise Conflict("The analysis of this export has already been started.",
                       code="analysis_started")
    audit.append(session, actor=f"staff:{member.id}", action="export.analyze",
                 target=f"export_job:{job.id}", details={"sha256": job.archive_sha256}, now=now)
    jobs_service.enqueue(session, KIND, {"export_job_id": job.id, "archive": str(archive)},
                         subject=f"export_job:{job.id}",
                         max_attempts=runner.settings.job_max_attempts)
    session.commit()
    runner.wake()


def _clear_leftovers(archive: Path) -> None:
    """Report directories of earlier attempts (their process died or lost the job)."""
    for path in archive.parent.glob(f"{archive.stem}{REPORT_SUFFIX}*"):
        shutil.rmtree(path, ignore_errors=True)


def run_analysis_job(ctx: JobContext) -> None:
    from analysis.errors import AnalysisError
    from analysis.report import build_report

    archive = Path(ctx.params["archive"])
    if not archive.is_file():
        raise JobFailed("the export's archive is no longer on the server")
    _clear_leftovers(archive)
    out = report_dir(archive, ctx.claim.token)
    panel = out / "panel"
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(panel)  # our own zip; extractall also refuses '..' and absolute names
        ctx.check()
        paths = build_report(panel, out, progress=False)
        ctx.check()
        shutil.rmtree(panel, ignore_errors=True)  # the report stays, the unpacked copy goes
        with Session(ctx.engine) as session:
            ctx.complete(session)  # LeaseLost: another process runs it now
            _record(session, ctx.params["export_job_id"], "done", str(paths.html), None)
            session.commit()
    except AnalysisError as exc:
        shutil.rmtree(out, ignore_errors=True)
        raise JobFailed(str(exc)) from exc
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise


def analysis_job_failed(session: Session, ctx: JobContext, message: str, final: bool) -> None:
    """Shown on the export's row once no retry is left; until then it stays running."""
    if final:
        _record(session, ctx.params["export_job_id"], "failed", None,
                f"the analysis {message}" if message.startswith("failed") else message)


register(KIND, run_analysis_job, analysis_job_failed)


def _record(session: Session, export_id: str, status: str, path: str | None,
            error: str | None) -> None:
    job = session.get(ExportJob, export_id)
    if job is None:
        return
    job.report_status, job.report_path = status, path
    params = {k: v for k, v in job.params.items() if k != REPORT_ERROR_KEY}
    job.params = params | ({REPORT_ERROR_KEY: error[:500]} if error else {})
    session.add(job)

"""Run the analysis (``wellpanel analyze``) on a finished export, in a background thread.

The export's zip is unpacked into a work directory beside it, ``analysis.report.build_report``
writes a self-contained report.html, and the job's ``report_status`` / ``report_path`` record
the outcome (running -> done | failed). A second start while one runs is refused (409).
"""

from __future__ import annotations

import logging
import shutil
import threading
import zipfile
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine, or_, update
from sqlmodel import Session, col

from app.audit import service as audit
from app.auth.models import StaffMember
from app.core.errors import Conflict
from app.export.models import ExportJob

log = logging.getLogger("wellpanel.web.analysis")
REPORT_ERROR_KEY = "report_error"


def report_dir(archive: Path) -> Path:
    return archive.with_name(archive.stem + "-report")


def start_analysis(session: Session, engine: Engine, member: StaffMember, job: ExportJob,
                   archive: Path, *, now: datetime) -> threading.Thread:
    """Mark the job's report running (only if none is running or done) and start the thread."""
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
    session.commit()
    thread = threading.Thread(target=_run, args=(engine, job.id, archive), daemon=True,
                              name=f"wellpanel-analysis-{job.id[:8]}")
    thread.start()
    return thread


def _run(engine: Engine, job_id: str, archive: Path) -> None:
    from analysis.errors import AnalysisError
    from analysis.report import build_report

    out = report_dir(archive)
    panel = out / "panel"
    try:
        shutil.rmtree(out, ignore_errors=True)
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(panel)  # our own zip; extractall also refuses '..' and absolute names
        paths = build_report(panel, out, progress=False)
        _finish(engine, job_id, "done", str(paths.html), None)
    except AnalysisError as exc:
        _finish(engine, job_id, "failed", None, str(exc))
    except Exception as exc:  # never leave a report 'running'; the traceback goes to the log
        log.exception("analysis of export %s failed", job_id)
        _finish(engine, job_id, "failed", None,
                f"the analysis failed unexpectedly ({type(exc).__name__})")
    finally:
        shutil.rmtree(panel, ignore_errors=True)  # the report stays, the unpacked copy goes


def _finish(engine: Engine, job_id: str, status: str, path: str | None,
            error: str | None) -> None:
    with Session(engine) as session:
        job = session.get(ExportJob, job_id)
        if job is None:
            return
        job.report_status, job.report_path = status, path
        params = {k: v for k, v in job.params.items() if k != REPORT_ERROR_KEY}
        job.params = params | ({REPORT_ERROR_KEY: error[:500]} if error else {})
        session.add(job)
        session.commit()

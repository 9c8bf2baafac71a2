"""Researcher exports in the background: a job row, a worker thread, a zip to download.

``start_export`` checks the request, stores an ``ExportJob`` (queued) and hands it to the app's
``ExportWorker``: one thread, one export at a time. The worker runs :func:`export_panel` into a
work directory under the export directory (``WELLPANEL_EXPORT_DIR``), updating the job's
progress from the response stream (throttled: at most about once a second or every 5%), then
zips the package (datapackage.json at the root of the zip), stores the zip's path and SHA-256
and removes the work directory. A failed export leaves no file behind and ends ``failed`` with
the export's message.

A stable pseudonym key (``linkage_key``) lives only in memory, from the request to the worker:
the job, the ledger and the logs hold its fingerprint, never the key. Such a job cannot be
resumed after a restart, which is one reason why jobs a dead process left ``queued`` or
``running`` are marked failed when the app starts (``fail_interrupted``).

Service functions for routes and pages: ``start_export``, ``list_jobs``, ``get_job``,
``archive_path`` and ``job_view``; ``worker_for(app)`` gives the app's worker.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import threading
import time
import uuid
import zipfile
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from sqlalchemy import Engine, make_url, update
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

from app.auth.models import StaffMember
from app.config import Settings
from app.core.errors import Conflict, NotFound
from app.export import service, writers
from app.export.models import ExportJob
from app.export.service import ExportError, ExportOptions

log = logging.getLogger("wellpanel.export.jobs")

API_PREFIX = "/api/v1/researcher/exports"
MIN_LINKAGE_HEX = 32
STREAM_SHARE = 0.9  # the response stream is most of the work; packaging and zipping the rest
PROGRESS_STEP = 0.05
PROGRESS_SECONDS = 1.0
WORK_PREFIX = ".work-"
PARTIAL_SUFFIX = ".zip.partial"
STORED = {".parquet", ".sav", ".dta", ".zip"}  # already compressed: deflating wastes time
INTERRUPTED = ("interrupted: the server stopped before this export finished; "
               "start the export again")


# ---- the request ------------------------------------------------------------------------------


class ExportRequest(BaseModel):
    """What a researcher asks for (POST /api/v1/researcher/exports)."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["csv", "parquet", "sav", "dta"] = "csv"
    profile: Literal["strict", "research"] = "strict"
    dua: str | None = Field(default=None, max_length=200,
                            description="Data-use agreement reference; required for research")
    include_items: bool = False
    study: str | None = Field(default=None, max_length=100,
                              description="Study key; the only study loaded when omitted")
    linkage_key: SecretStr | None = Field(
        default=None, max_length=512,
        description="Stable pseudonym key for approved linkage across exports: at least "
        f"{MIN_LINKAGE_HEX} hex characters. Held in memory only; the job records its "
        "fingerprint.",
    )

    @field_validator("dua", "study")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @field_validator("linkage_key")
    @classmethod
    def _hex_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        raw = value.get_secret_value().strip()
        if len(raw) < MIN_LINKAGE_HEX or any(c not in "0123456789abcdefABCDEF" for c in raw):
            raise ValueError(f"must be at least {MIN_LINKAGE_HEX} hexadecimal characters")
        return SecretStr(raw)

    def key_bytes(self) -> bytes | None:
        # the hex text itself is the key, as in a --key-file: both give the same pseudonyms
        return None if self.linkage_key is None else self.linkage_key.get_secret_value().encode()


class AuditRef(BaseModel):
    id: int
    action: str
    actor: str
    row_hash: str | None = None


class ExportJobOut(BaseModel):
    id: str
    status: Literal["queued", "running", "done", "failed"]
    progress: float
    parameters: dict[str, Any]
    row_counts: dict[str, int]
    error: str | None
    archive_sha256: str | None
    archive_bytes: int | None
    audit_event: AuditRef | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    links: dict[str, str]


# ---- where files go ---------------------------------------------------------------------------


def export_root(settings: Settings) -> Path:
    """WELLPANEL_EXPORT_DIR, else exports/ next to the SQLite database, else ./exports."""
    if settings.export_dir is not None:
        return Path(settings.export_dir).expanduser().absolute()
    if settings.is_sqlite:
        database = make_url(settings.database_url).database
        if database and database != ":memory:" and not database.startswith("file:"):
            return Path(database).expanduser().absolute().parent / "exports"
    return Path("exports").absolute()


def _work_dir(root: Path, job_id: str) -> Path:
    return root / f"{WORK_PREFIX}{job_id}"


def _archive(root: Path, job_id: str) -> Path:
    return root / f"{job_id}.zip"


def _remove_job_files(root: Path, job_id: str) -> None:
    """Best effort: a failed cleanup must not keep the job from being marked failed."""
    shutil.rmtree(_work_dir(root, job_id), ignore_errors=True)
    for path in (_archive(root, job_id), root / f"{job_id}{PARTIAL_SUFFIX}"):
        try:
            path.unlink(missing_ok=True)
        except OSError:
            log.warning("could not remove %s", path)


def zip_package(package: Path, target: Path) -> tuple[str, int]:
    """Zip a package directory (files at the zip's root) into ``target`` atomically;
    returns (SHA-256, bytes)."""
    partial = target.with_name(target.stem + PARTIAL_SUFFIX)
    partial.unlink(missing_ok=True)
    # 0600 from the first byte: a half-written zip is never readable by anyone else
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as raw, zipfile.ZipFile(raw, "w", allowZip64=True) as zf:
            for path in sorted(package.rglob("*")):
                if path.is_file():
                    method = zipfile.ZIP_STORED if path.suffix in STORED else zipfile.ZIP_DEFLATED
                    zf.write(path, path.relative_to(package).as_posix(), compress_type=method)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return writers.file_digest(target)


# ---- the worker -------------------------------------------------------------------------------


class _Stopped(Exception):
    """Raised from the progress callback when the server shuts down mid-export."""


class ExportWorker:
    """One background thread running export jobs in order; owned by the app."""

    def __init__(self, engine: Engine, root: Path, clock: Callable[[], datetime]) -> None:
        self.engine = engine
        self.root = root
        self.clock = clock
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wellpanel-export")
        self._stopping = threading.Event()
        self._pending: set[str] = set()
        self._lock = threading.Lock()

    def submit(self, job_id: str, options: ExportOptions) -> None:
        with self._lock:
            self._pending.add(job_id)
        self._pool.submit(self._run, job_id, options)

    def shutdown_when_idle(self) -> None:
        """Stop after every submitted export has finished."""
        self._pool.shutdown(wait=True)

    def shutdown(self) -> None:
        """Stop: the running export is aborted (its files removed), queued ones are not
        started; all of them end failed."""
        self._stopping.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            left, self._pending = set(self._pending), set()
        for job_id in left:
            self._finish(job_id, status="failed", error=INTERRUPTED)

    # -- one job --

    def _run(self, job_id: str, options: ExportOptions) -> None:
        try:
            if self._stopping.is_set():
                raise _Stopped
            self._update(job_id, status="running", started_at=self.clock(), progress=0.0)
            self._export(job_id, options)
        except _Stopped:
            _remove_job_files(self.root, job_id)
            self._finish(job_id, status="failed", error=INTERRUPTED)
        except ExportError as exc:
            _remove_job_files(self.root, job_id)
            self._finish(job_id, status="failed", error=exc.message)
        except Exception as exc:  # never leave a job running; the traceback goes to the log
            log.exception("export job %s failed", job_id)
            _remove_job_files(self.root, job_id)
            self._finish(job_id, status="failed",
                         error=f"the export failed unexpectedly ({type(exc).__name__}); "
                         "the server log has the details")
        finally:
            with self._lock:
                self._pending.discard(job_id)

    def _export(self, job_id: str, options: ExportOptions) -> None:
        work = _work_dir(self.root, job_id)
        package = work / "package"
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ExportError(
                f"the server cannot write to its export directory {self.root} "
                f"({exc.strerror or exc}); an operator must set WELLPANEL_EXPORT_DIR to a "
                "writable directory", code="export_dir_unwritable") from exc
        result = service.export_panel(
            self.engine, dataclasses.replace(options, out=package),
            progress=self._reporter(job_id), now=self.clock())
        self._update(job_id, progress=STREAM_SHARE)
        if self._stopping.is_set():
            raise _Stopped
        digest, size = zip_package(package, _archive(self.root, job_id))
        shutil.rmtree(work, ignore_errors=True)
        self._finish(
            job_id, status="done", progress=1.0, row_counts=dict(result.rows),
            archive_path=str(_archive(self.root, job_id)), archive_sha256=digest,
            extra={"export_id": result.export_id, "archive_bytes": size,
                   "audit_event": {"id": result.audit_seq, "action": "export.panel",
                                   "actor": options.actor, "row_hash": result.audit_hash}},
        )

    def _reporter(self, job_id: str) -> Callable[[int, int], None]:
        last = {"at": time.monotonic(), "progress": 0.0}

        def report(done: int, total: int) -> None:
            if self._stopping.is_set():
                raise _Stopped
            progress = STREAM_SHARE * min(done / total, 1.0) if total else 0.0
            now = time.monotonic()
            if (progress - last["progress"] >= PROGRESS_STEP
                    or now - last["at"] >= PROGRESS_SECONDS):
                self._update(job_id, progress=round(progress, 4))
                last.update(at=now, progress=progress)

        return report

    # -- the job row --

    def _update(self, job_id: str, **values: Any) -> None:
        with Session(self.engine) as session:
            session.exec(update(ExportJob).where(col(ExportJob.id) == job_id)  # type: ignore[call-overload]
                         .values(**values))
            session.commit()

    def _finish(self, job_id: str, *, status: str, extra: dict[str, Any] | None = None,
                **values: Any) -> None:
        try:
            with Session(self.engine) as session:
                job = session.get(ExportJob, job_id)
                if job is None:
                    return
                job.status = status
                job.finished_at = self.clock()
                for name, value in values.items():
                    setattr(job, name, value)
                if extra:
                    job.params = {**job.params, **extra}  # new dict: JSON tracks assignment
                session.add(job)
                session.commit()
        except SQLAlchemyError:
            log.exception("could not record the end of export job %s", job_id)


_WORKER_LOCK = threading.Lock()


def worker_for(app: Any) -> ExportWorker:
    """The app's export worker (created on first use; the router's lifespan stops it)."""
    with _WORKER_LOCK:
        worker = getattr(app.state, "export_worker", None)
        if worker is None:
            worker = ExportWorker(app.state.engine, export_root(app.state.settings),
                                  app.state.clock)
            app.state.export_worker = worker
        return worker


def fail_interrupted(engine: Engine, root: Path, now: datetime) -> int:
    """At startup: jobs a dead process left queued or running end failed, and their
    leftover files are removed. Returns how many jobs were marked."""
    with Session(engine) as session:
        stale = session.exec(select(ExportJob).where(
            col(ExportJob.status).in_(("queued", "running")))).all()
        for job in stale:
            job.status, job.error, job.finished_at = "failed", INTERRUPTED, now
            session.add(job)
        session.commit()
    if root.is_dir():
        for path in root.iterdir():
            if path.name.startswith(WORK_PREFIX):
                shutil.rmtree(path, ignore_errors=True)
            elif path.name.endswith(PARTIAL_SUFFIX):
                path.unlink(missing_ok=True)
    return len(stale)


@asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    """Recovers interrupted jobs at startup; stops the worker (if any started) at shutdown."""
    import anyio

    try:
        marked = fail_interrupted(app.state.engine, export_root(app.state.settings),
                                  app.state.clock())
        if marked:
            log.warning("%d interrupted export job(s) marked failed", marked)
    except SQLAlchemyError:  # e.g. a database not migrated yet: the app still starts
        log.exception("could not check for interrupted export jobs")
    yield
    worker = getattr(app.state, "export_worker", None)
    if worker is not None:
        await anyio.to_thread.run_sync(worker.shutdown)
        app.state.export_worker = None


# ---- service functions (routes and pages) -----------------------------------------------------


def start_export(
    session: Session, staff: StaffMember, request: ExportRequest, *, worker: ExportWorker,
    now: datetime, idempotency_key: str | None = None,
) -> ExportJob:
    """Check the request, record a queued job and hand it to the worker. Options that can be
    checked up front (a research export without a DUA...) raise ExportError (422) here. A
    retry with the same ``idempotency_key`` returns the first job."""
    key = request.key_bytes()
    options = ExportOptions(
        out=worker.root / "unused", fmt=request.format, profile=request.profile,
        study=request.study, key=key, dua=request.dua, include_items=request.include_items,
        actor=f"staff:{staff.id}",
    )
    service.check_options(options)
    params: dict[str, Any] = {
        "format": request.format,
        "profile": request.profile,
        "dua": request.dua,
        "include_items": request.include_items,
        "study": request.study,
        "key": "fresh" if key is None else "supplied",
        "key_fingerprint": None if key is None else service.key_fingerprint(key),
    }
    if idempotency_key is not None:
        for job in list_jobs(session, staff):
            if job.params.get("idempotency_key") == idempotency_key:
                if {k: job.params.get(k) for k in params} != params:
                    raise Conflict("This Idempotency-Key was already used for a different "
                                   "export.", details={"field": "Idempotency-Key"})
                return job
        params["idempotency_key"] = idempotency_key
    job = ExportJob(id=str(uuid.uuid4()), staff_id=staff.id, status="queued", params=params,
                    created_at=now)
    session.add(job)
    session.commit()
    worker.submit(job.id, options)
    return job


def list_jobs(session: Session, staff: StaffMember, *, limit: int = 200) -> list[ExportJob]:
    """The staff member's own jobs, newest first."""
    # populate_existing: the worker updates jobs from its own sessions
    return list(session.exec(
        select(ExportJob).where(ExportJob.staff_id == staff.id)
        .order_by(col(ExportJob.created_at).desc(), col(ExportJob.id)).limit(limit)
        .execution_options(populate_existing=True)).all())


def get_job(session: Session, staff: StaffMember, job_id: str) -> ExportJob:
    """One of the staff member's jobs; NotFound for an unknown id or someone else's job."""
    job = session.get(ExportJob, job_id, populate_existing=True)
    if job is None or job.staff_id != staff.id:
        raise NotFound(f"There is no export {job_id!r} of yours.", details={"field": "id"})
    return job


def archive_path(session: Session, staff: StaffMember, job_id: str, *, now: datetime) -> Path:
    """The zip of a finished job, for download; records the download in the audit ledger.
    NotFound as in ``get_job``; Conflict (409) while the job is not done."""
    from app.audit import service as audit

    job = get_job(session, staff, job_id)
    if job.status != "done" or not job.archive_path:
        raise Conflict(f"The export is {job.status}; it can be downloaded once it is done.",
                       code="export_not_ready", details={"status": job.status})
    path = Path(job.archive_path)
    if not path.is_file():
        raise NotFound("The archive of this export is no longer on the server.",
                       code="export_archive_missing")
    audit.append(session, actor=f"staff:{staff.id}", action="export.download",
                 target=f"export_job:{job.id}",
                 details={"sha256": job.archive_sha256, "export_id": job.params.get("export_id")},
                 now=now)
    session.commit()
    return path


def job_view(job: ExportJob) -> ExportJobOut:
    """The job as the API shows it."""
    params = dict(job.params)
    audit_event = params.pop("audit_event", None)
    archive_bytes = params.pop("archive_bytes", None)
    params.pop("idempotency_key", None)
    links = {"self": f"{API_PREFIX}/{job.id}"}
    if job.status == "done":
        links["download"] = f"{API_PREFIX}/{job.id}/download"
    return ExportJobOut(
        id=job.id, status=job.status, progress=job.progress, parameters=params,  # type: ignore[arg-type]
        row_counts=job.row_counts or {}, error=job.error, archive_sha256=job.archive_sha256,
        archive_bytes=archive_bytes,
        audit_event=AuditRef(**audit_event) if audit_event else None,
        created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at,
        links=links,
    )

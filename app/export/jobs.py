"""Researcher exports in the background: an export record, a job any process may run, a zip.

``start_export`` checks the request, stores an ``ExportJob`` (queued; what the researcher sees)
and a job of kind ``export`` (app.jobs: claimed under a lease by whichever API process gets to
it first, its heartbeat keeping the lease while it runs). ``run_export_job`` runs
:func:`export_panel` into a work directory of its own under the export directory
(``WELLPANEL_EXPORT_DIR``), updating the record's progress from the response stream (throttled:
at most about once a second or every 5%), zips the package (datapackage.json at the root of the
zip) under a name of its own, and stores the zip's path and SHA-256 together with the job's
completion, in one transaction that only succeeds while the job is still its own. A failed,
interrupted or superseded attempt leaves no file behind; a process whose lease ran out (killed,
hung) is replaced by another that starts the export afresh, clearing what the dead one left.

A stable pseudonym key (``linkage_key``) lives only in memory, from the request to the job:
the records, the ledger and the logs hold its fingerprint, never the key. Such a job is reserved
for the process that took the request; if that process stops or dies, the job ends failed
("start the export again") instead of running elsewhere without its key.

Service functions for routes and pages: ``start_export``, ``list_jobs``, ``get_job``,
``archive_path`` and ``job_view``; ``worker_for(app)`` gives the app's export side.
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
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from sqlalchemy import Engine, make_url, update
from sqlmodel import Session, col, select

from app.auth.models import StaffMember
from app.config import Settings
from app.core.errors import Conflict, NotFound
from app.export import service, writers
from app.export.models import ExportJob
from app.export.service import ExportError, ExportOptions
from app.jobs import service as jobs_service
from app.jobs.runner import JobContext, JobFailed, JobInterrupted, JobRunner, register, runner_for

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
KEY_LOST = ("interrupted: the server process holding this export's stable pseudonym key "
            "stopped before it finished (the key is never stored); start the export again")


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


def _work_dir(root: Path, export_id: str, token: str) -> Path:
    return root / f"{WORK_PREFIX}{export_id}-{token[:12]}"


def _archive(root: Path, export_id: str, token: str) -> Path:
    """Each claim writes its own zip: a process that lost the job can never overwrite the
    archive of the one that took it over."""
    return root / f"{export_id}-{token[:12]}.zip"


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


# ---- the job (app.jobs runs it in whichever process claims it) --------------------------------


KIND = "export"
# Stable pseudonym keys of keyed exports queued by this process, by export id: memory only.
_KEYS: dict[str, bytes] = {}
_KEYS_LOCK = threading.Lock()


@dataclasses.dataclass(frozen=True)
class ExportWorker:
    """The app's side of export jobs: where archives go, and the process's job runner."""

    runner: JobRunner
    root: Path


def _options(job: ExportJob, key: bytes | None, out: Path) -> ExportOptions:
    params = job.params
    return ExportOptions(
        out=out, fmt=params.get("format", "csv"), profile=params.get("profile", "strict"),
        study=params.get("study"), key=key, dua=params.get("dua"),
        include_items=bool(params.get("include_items")), actor=f"staff:{job.staff_id}")


def _clear_leftovers(root: Path, export_id: str) -> None:
    """Work directories, partial and unrecorded zips of earlier attempts at this export (their
    process died or lost the job): nothing of them is ever served."""
    if not root.is_dir():
        return
    for path in root.glob(f"{WORK_PREFIX}{export_id}*"):
        shutil.rmtree(path, ignore_errors=True)
    for pattern in (f"{export_id}*{PARTIAL_SUFFIX}", f"{export_id}-*.zip"):
        for path in root.glob(pattern):
            path.unlink(missing_ok=True)


def run_export_job(ctx: JobContext) -> None:
    """Build the package into this claim's own work directory, zip it under this claim's own
    name and record it, with the job's completion, in one transaction. Whatever stops it
    (a failure, a lost lease, the server stopping) leaves no file of it behind."""
    export_id = ctx.params["export_job_id"]
    root = export_root(ctx.settings)
    with Session(ctx.engine) as session:
        job = session.get(ExportJob, export_id)
    if job is None:
        raise JobFailed("the export's record no longer exists")
    key = None
    if job.params.get("key") == "supplied":
        with _KEYS_LOCK:
            key = _KEYS.get(export_id)
        if key is None:  # queued by a process that died: its key died with it
            raise JobFailed(KEY_LOST)
    _clear_leftovers(root, export_id)
    work = _work_dir(root, export_id, ctx.claim.token)
    try:
        _update(ctx.engine, export_id, status="running", started_at=ctx.clock(), progress=0.0,
                error=None)
        _make_root(root)
        result = service.export_panel(ctx.engine, _options(job, key, work / "package"),
                                      progress=_reporter(ctx, export_id), now=ctx.clock())
        _update(ctx.engine, export_id, progress=STREAM_SHARE)
        ctx.check()
        target = _archive(root, export_id, ctx.claim.token)
        digest, size = zip_package(work / "package", target)
        try:
            _record_done(ctx, export_id, target, digest, size, result, job)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        with _KEYS_LOCK:
            _KEYS.pop(export_id, None)
    except ExportError as exc:
        raise JobFailed(exc.message) from exc
    except JobInterrupted:
        if key is not None:  # no other process has the key: it cannot be run elsewhere
            raise JobFailed(INTERRUPTED) from None
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _make_root(root: Path) -> None:
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(
            f"the server cannot write to its export directory {root} "
            f"({exc.strerror or exc}); an operator must set WELLPANEL_EXPORT_DIR to a "
            "writable directory", code="export_dir_unwritable") from exc


def _record_done(ctx: JobContext, export_id: str, target: Path, digest: str, size: int,
                 result: service.ExportResult, job: ExportJob) -> None:
    with Session(ctx.engine) as session:
        ctx.complete(session)  # LeaseLost: another process has this export now
        row = session.get(ExportJob, export_id)
        if row is None:
            raise JobFailed("the export's record no longer exists")
        row.status, row.progress, row.finished_at = "done", 1.0, ctx.clock()
        row.row_counts = dict(result.rows)
        row.archive_path, row.archive_sha256, row.error = str(target), digest, None
        row.params = {**row.params, "export_id": result.export_id, "archive_bytes": size,
                      "audit_event": {"id": result.audit_seq, "action": "export.panel",
                                      "actor": f"staff:{job.staff_id}",
                                      "row_hash": result.audit_hash}}
        session.add(row)
        session.commit()


def export_job_failed(session: Session, ctx: JobContext, message: str, final: bool) -> None:
    """The export's own record of a failure: failed for good, or queued for another try."""
    export_id = ctx.params["export_job_id"]
    job = session.get(ExportJob, export_id)
    if job is None:
        return
    if final:
        job.status, job.error, job.finished_at = "failed", message, ctx.clock()
        with _KEYS_LOCK:
            _KEYS.pop(export_id, None)
        _clear_leftovers(export_root(ctx.settings), export_id)
    else:
        job.status, job.progress = "queued", 0.0
    session.add(job)


register(KIND, run_export_job, export_job_failed)


def _reporter(ctx: JobContext, export_id: str) -> Callable[[int, int], None]:
    last = {"at": time.monotonic(), "progress": 0.0}

    def report(done: int, total: int) -> None:
        ctx.check()  # lost the job, or the server stops: abort (export_panel cleans up)
        progress = STREAM_SHARE * min(done / total, 1.0) if total else 0.0
        now = time.monotonic()
        if (progress - last["progress"] >= PROGRESS_STEP
                or now - last["at"] >= PROGRESS_SECONDS):
            _update(ctx.engine, export_id, progress=round(progress, 4))
            last.update(at=now, progress=progress)

    return report


def _update(engine: Engine, export_id: str, **values: Any) -> None:
    with Session(engine) as session:
        session.exec(update(ExportJob).where(col(ExportJob.id) == export_id)  # type: ignore[call-overload]
                     .values(**values))
        session.commit()


def worker_for(app: Any) -> ExportWorker:
    """The app's export side: its job runner and export directory."""
    worker = getattr(app.state, "export_worker", None)
    if worker is None:
        worker = ExportWorker(runner_for(app), export_root(app.state.settings))
        app.state.export_worker = worker
    return worker


@asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    """Starts the app's job runner (it takes over jobs whose process died once their lease
    runs out; it never touches a job a live process holds) and stops it at shutdown: a running
    job is given back to the queue for another process."""
    import anyio

    runner = runner_for(app)
    runner.start()
    yield
    await anyio.to_thread.run_sync(runner.stop)


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
    runner, settings = worker.runner, worker.runner.settings
    # A keyed export can only run where its key is (this process): reserved for it.
    queued = jobs_service.enqueue(
        session, KIND, {"export_job_id": job.id}, subject=f"export_job:{job.id}",
        max_attempts=settings.job_max_attempts,
        reserve_for=runner.worker_id if key is not None else None, lease=runner.lease)
    if key is not None:
        with _KEYS_LOCK:
            _KEYS[job.id] = key
    session.commit()
    if key is not None:
        runner.reserve(queued.id)
    runner.wake()
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

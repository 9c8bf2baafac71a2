"""The researcher export API: a background job, its status, the zip, who may see it."""

from __future__ import annotations

import hashlib
import io
import json
import random
import time
import uuid
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest
import typer
from fastapi.testclient import TestClient
from sqlmodel import Session, select
from typer.testing import CliRunner

from app.audit.models import AuditEvent
from app.auth import service as auth
from app.auth.models import StaffMember
from app.config import Settings, get_settings
from app.db import make_engine, utcnow
from app.export import jobs
from app.export.cli import register
from app.export.models import ExportJob
from app.jobs import service as jobs_service
from app.jobs.models import Job
from app.jobs.runner import JobContext, JobRunner
from tests.app.export.seed import START, Seeder
from tests.support.flows import joined_and_consented

API = "/api/v1/researcher/exports"
LINKAGE_KEY = "00112233445566778899aabbccddeeff0123456789abcdef"
DEADLINE_SECONDS = 180


@pytest.fixture
def export_dir(settings) -> Path:  # type: ignore[no-untyped-def]
    return settings.export_dir


@pytest.fixture
def staff(engine, loaded_study):  # type: ignore[no-untyped-def]
    """Bearer headers of two researchers, an IRB reviewer; and the researchers' ids."""
    with Session(engine) as s:
        tokens = {name: auth.add_staff(s, name, role) for name, role in
                  (("ann", "researcher"), ("ben", "researcher"), ("ivy", "irb"))}
    return {name: {"Authorization": f"Bearer {tok}"} for name, tok in tokens.items()}


def researcher(session: Session, name: str) -> StaffMember | None:
    return session.exec(select(StaffMember).where(StaffMember.name == name)).first()


@pytest.fixture
def panel(engine, loaded_study) -> Seeder:  # type: ignore[no-untyped-def]
    seeder = Seeder(engine)
    seeder.populate(14, 3, seed=11)
    seeder.flush()
    return seeder


def wait_until_finished(client: TestClient, headers: dict, job_id: str) -> dict:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        response = client.get(f"{API}/{job_id}", headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        if body["status"] in ("done", "failed"):
            return body
        assert time.monotonic() < deadline, f"export still {body['status']}: {body}"
        time.sleep(0.05)


def cli_export(db_url: str, out: Path, key_file: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """wellpanel"""

    register(app)
    monkeypatch.setenv("WELLPANEL_DATABASE_URL", db_url)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["export", "panel", "--out", str(out), "--key-file",
                                          str(key_file), "--quiet"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output


def comparable(descriptor: dict) -> dict:
    """datapackage.json without what differs between two exports of the same data."""
    d = json.loads(json.dumps(descriptor))
    d.pop("id")
    d["wellpanel"]["export"].pop("id")
    return d


def test_export_in_the_background_matches_the_cli_export(
        client, staff, panel, engine, db_url, export_dir, tmp_path, monkeypatch):
    started = client.post(API, json={"format": "csv", "profile": "strict",
                                     "linkage_key": LINKAGE_KEY}, headers=staff["ann"])
    assert started.status_code == 202, started.text
    job = started.json()
    assert job["status"] in ("queued", "running", "done")
    assert started.headers["location"] == job["links"]["self"] == f"{API}/{job['id']}"
    assert job["parameters"]["key"] == "supplied" and job["parameters"]["key_fingerprint"]

    done = wait_until_finished(client, staff["ann"], job["id"])
    assert done["status"] == "done", done["error"]
    assert done["progress"] == 1.0 and done["error"] is None
    assert done["row_counts"]["participants"] == 14 and done["row_counts"]["responses"] > 0
    assert done["links"]["download"] == f"{API}/{job['id']}/download"
    ann_id = done["audit_event"]["actor"]
    assert ann_id.startswith("staff:") and done["audit_event"]["action"] == "export.panel"

    download = client.get(done["links"]["download"], headers=staff["ann"])
    assert download.status_code == 200
    assert download.headers["content-type"] == "application/zip"
    digest = hashlib.sha256(download.content).hexdigest()
    assert digest == done["archive_sha256"] == download.headers["x-content-sha256"]
    archive = zipfile.ZipFile(io.BytesIO(download.content))
    names = set(archive.namelist())
    assert "datapackage.json" in names and all("/" not in n for n in names)

    key_file = tmp_path / "linkage.key"
    key_file.write_text(LINKAGE_KEY + "\n", "utf-8")
    cli_out = tmp_path / "cli"
    cli_export(db_url, cli_out, key_file, monkeypatch)
    assert names == {p.name for p in cli_out.iterdir()}
    for name in names - {"datapackage.json"}:
        assert archive.read(name) == (cli_out / name).read_bytes(), name
    api_descriptor = json.loads(archive.read("datapackage.json"))
    cli_descriptor = json.loads((cli_out / "datapackage.json").read_text("utf-8"))
    assert comparable(api_descriptor) == comparable(cli_descriptor)

    # only the zip stays on the server; the key is nowhere in the database
    with Session(engine) as s:
        row = s.get(ExportJob, job["id"])
        assert row is not None and LINKAGE_KEY not in json.dumps(row.params)
        queued = s.exec(select(Job).where(Job.subject == f"export_job:{job['id']}")).one()
        assert queued.status == "done" and LINKAGE_KEY not in json.dumps(queued.params)
        ledger = s.exec(select(AuditEvent).order_by(AuditEvent.id)).all()
    assert row.archive_path is not None
    assert [p.name for p in export_dir.iterdir()] == [Path(row.archive_path).name]
    assert Path(row.archive_path).name.startswith(job["id"])
    assert not any(LINKAGE_KEY in json.dumps(e.details) for e in ledger)
    export_event = next(e for e in ledger if e.id == done["audit_event"]["id"])
    assert export_event.action == "export.panel" and export_event.actor == ann_id
    assert export_event.row_hash == done["audit_event"]["row_hash"]
    assert done["parameters"]["key_fingerprint"] in export_event.details["key"]
    downloads = [e for e in ledger if e.action == "export.download"]
    assert [(e.actor, e.target) for e in downloads] == [(ann_id, f"export_job:{job['id']}")]

    listed = client.get(API, headers=staff["ann"]).json()
    assert [j["id"] for j in listed] == [job["id"]]


def test_jobs_are_private_to_the_researcher_who_started_them(
        client, staff, panel, smtp, clock):
    first = client.post(API, json={}, headers=staff["ann"]).json()
    clock.advance(minutes=1)
    second = client.post(API, json={"format": "parquet"}, headers=staff["ann"]).json()
    for job in (first, second):
        assert wait_until_finished(client, staff["ann"], job["id"])["status"] == "done"
    assert [j["id"] for j in client.get(API, headers=staff["ann"]).json()] == \
        [second["id"], first["id"]]  # newest first

    assert client.get(API, headers=staff["ben"]).json() == []
    for path in (f"{API}/{first['id']}", f"{API}/{first['id']}/download",
                 f"{API}/{uuid.uuid4()}", f"{API}/{uuid.uuid4()}/download"):
        response = client.get(path, headers=staff["ben"])
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found"

    assert client.get(API, headers=staff["ivy"]).status_code == 403
    assert client.post(API, json={}, headers=staff["ivy"]).status_code == 403
    assert client.get(f"{API}/{first['id']}/download", headers=staff["ivy"]).status_code == 403
    participant = joined_and_consented(client, smtp, "pat@example.org")
    assert client.get(API, headers=participant.headers).status_code == 401
    assert client.get(f"{API}/{first['id']}/download",
                      headers=participant.headers).status_code == 401
    assert client.get(API).status_code == 401


@pytest.mark.parametrize(("body", "code", "field"), [
    ({"profile": "research"}, "dua_required", "dua"),
    ({"profile": "research", "dua": "  "}, "dua_required", "dua"),
    ({"format": "xlsx"}, "validation_failed", "format"),
    ({"profile": "public"}, "validation_failed", "profile"),
    ({"linkage_key": "abc123"}, "validation_failed", "linkage_key"),
    ({"linkage_key": "z" * 40}, "validation_failed", "linkage_key"),
    ({"include_free_text": True}, "validation_failed", "include_free_text"),
])
def test_bad_options_are_refused_up_front(client, staff, engine, export_dir, body, code, field):
    response = client.post(API, json=body, headers=staff["ann"])
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    fields = [d["field"] for d in error["details"]] if isinstance(error["details"], list) \
        else [error["details"]["field"]]
    assert field in fields
    if "linkage_key" in body:
        assert body["linkage_key"] not in response.text
    with Session(engine) as s:
        assert s.exec(select(ExportJob)).all() == []
    assert not export_dir.exists()


def test_an_export_that_cannot_meet_k_ends_failed_and_leaves_nothing(
        client, staff, engine, loaded_study, export_dir):
    seeder = Seeder(engine)
    rng = random.Random(2)
    for i in range(3):  # fewer participants than k = 5
        seeder.participant(rng, enrolled_at=START + timedelta(days=i), waves=1)
    seeder.flush()
    job = client.post(API, json={"format": "sav"}, headers=staff["ann"]).json()
    failed = wait_until_finished(client, staff["ann"], job["id"])
    assert failed["status"] == "failed"
    assert "k=5" in failed["error"] and "Nothing was written" in failed["error"]
    assert failed["archive_sha256"] is None and "download" not in failed["links"]
    assert list(export_dir.rglob("*")) == []
    response = client.get(f"{API}/{job['id']}/download", headers=staff["ann"])
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "export_not_ready"


def test_download_waits_for_the_export_to_finish(client, staff, engine):
    ann = client.get(API, headers=staff["ann"])  # ann exists; her id from the ledger
    assert ann.status_code == 200
    with Session(engine, expire_on_commit=False) as s:
        member = researcher(s, "ann")
        assert member is not None
        job = ExportJob(id=str(uuid.uuid4()), staff_id=member.id, status="running",
                        params={"format": "csv"}, progress=0.4,
                        created_at=START)
        s.add(job)
        s.commit()
    response = client.get(f"{API}/{job.id}/download", headers=staff["ann"])
    assert response.status_code == 409
    assert "running" in response.json()["error"]["message"]
    assert client.get(f"{API}/{job.id}", headers=staff["ann"]).json()["progress"] == 0.4


def test_a_restarting_app_leaves_a_live_job_alone_and_takes_over_a_dead_one(
        app, staff, panel, engine, export_dir, settings):
    """Another process holds one export under a live lease, a dead process left another (its
    lease ran out, its work directory and partial zip still there): the app that starts
    touches the first and finishes the second, once, clearing what the dead one left."""
    with Session(engine, expire_on_commit=False) as s:
        member = researcher(s, "ann")
        assert member is not None
        ids = {name: str(uuid.uuid4()) for name in ("live", "dead")}
        for export_id in ids.values():
            s.add(ExportJob(id=export_id, staff_id=member.id, status="running",
                            params={"format": "csv", "profile": "strict", "key": "fresh"},
                            created_at=START))
        s.commit()
        wall = utcnow()
        for name, export_id in ids.items():
            job = jobs_service.enqueue(s, "export", {"export_job_id": export_id},
                                       subject=f"export_job:{export_id}")
            job.status, job.attempts, job.claimed_by = "running", 1, f"sibling-{name}"
            job.claim_token = uuid.uuid4().hex
            job.lease_until = wall + (timedelta(hours=1) if name == "live"
                                      else -timedelta(seconds=1))
        s.commit()
    export_dir.mkdir(parents=True, exist_ok=True)
    work = export_dir / f"{jobs.WORK_PREFIX}{ids['dead']}-0123456789ab" / "package"
    work.mkdir(parents=True)
    (work / "responses.csv").write_text("pid\n", "utf-8")
    (export_dir / f"{ids['dead']}-0123456789ab{jobs.PARTIAL_SUFFIX}").write_bytes(b"PK")
    with TestClient(app) as client:
        done = wait_until_finished(client, staff["ann"], ids["dead"])
        assert jobs.worker_for(app).runner.wait_idle()
        live = client.get(f"{API}/{ids['live']}", headers=staff["ann"]).json()
    assert done["status"] == "done", done["error"]
    assert live["status"] == "running" and live["error"] is None
    with Session(engine) as s:
        by_subject = {j.subject: j for j in s.exec(select(Job)).all()}
    assert by_subject[f"export_job:{ids['live']}"].claimed_by == "sibling-live"
    assert by_subject[f"export_job:{ids['live']}"].attempts == 1
    taken = by_subject[f"export_job:{ids['dead']}"]
    assert taken.status == "done" and taken.attempts == 2 and taken.claimed_by != "sibling-dead"
    left = sorted(p.name for p in export_dir.iterdir())
    assert len(left) == 1 and left[0].startswith(ids["dead"]) and left[0].endswith(".zip")


def test_a_retried_post_with_the_same_idempotency_key_starts_one_export(
        client, staff, panel, engine):
    headers = staff["ann"] | {"Idempotency-Key": "export-retry-1"}
    first = client.post(API, json={"format": "parquet"}, headers=headers)
    again = client.post(API, json={"format": "parquet"}, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    other = client.post(API, json={"format": "csv"}, headers=headers)
    assert other.status_code == 409
    assert wait_until_finished(client, staff["ann"], first.json()["id"])["status"] == "done"
    with Session(engine) as s:
        assert len(s.exec(select(ExportJob)).all()) == 1


def _runner(settings, clock, **changes) -> JobRunner:  # type: ignore[no-untyped-def]
    changed = Settings(**settings.model_dump() | changes)
    return JobRunner(make_engine(changed.database_url), changed, clock)


def test_progress_is_recorded_while_the_export_streams(staff, engine, settings, clock):
    with Session(engine, expire_on_commit=False) as s:
        member = researcher(s, "ann")
        assert member is not None
        job = ExportJob(id=str(uuid.uuid4()), staff_id=member.id, status="running", params={},
                        created_at=START)
        s.add(job)
        jobs_service.enqueue(s, "export", {"export_job_id": job.id})
        s.commit()
    runner = _runner(settings, clock)
    claim = jobs_service.claim(runner.engine, runner.worker_id, ["export"], runner.lease)
    assert claim is not None
    report = jobs._reporter(JobContext(claim, runner), job.id)
    report(50, 100)
    with Session(engine) as s:
        assert s.get(ExportJob, job.id).progress == pytest.approx(0.45)
    report(100, 100)
    with Session(engine) as s:
        assert s.get(ExportJob, job.id).progress == pytest.approx(jobs.STREAM_SHARE)
    runner.engine.dispose()


def test_a_process_that_stops_gives_its_exports_to_another(
        staff, panel, engine, settings, clock):
    """Stopping one process's runner mid-work: what it was running goes back to the queue (the
    attempt not counted) and another process finishes every export, each with one zip and no
    work directory left."""
    with Session(engine, expire_on_commit=False) as s:
        member = researcher(s, "ann")
        assert member is not None
    first, second = _runner(settings, clock), _runner(settings, clock)
    root = jobs.export_root(first.settings)
    started = []
    with Session(first.engine, expire_on_commit=False) as s:
        for fmt in ("csv", "parquet", "dta"):
            started.append(jobs.start_export(s, member, jobs.ExportRequest(format=fmt),
                                             worker=jobs.ExportWorker(first, root),
                                             now=clock()).id)
    first.stop()  # at once: a running export is given back at its next progress check
    # The second runner may have looked before the first gave the jobs back (idle, with
    # nothing claimable yet): wait for the jobs' end, not for its idleness.
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        assert second.wait_idle(DEADLINE_SECONDS)
        with Session(engine) as s:
            ended = {j.id: j for j in s.exec(select(ExportJob)).all()}
            queued = s.exec(select(Job)).all()
        if all(j.status in ("done", "failed") for j in ended.values()):
            break
        assert time.monotonic() < deadline, [j.status for j in ended.values()]  # hang guard
        time.sleep(0.1)
    assert set(ended) == set(started)
    assert all(j.status == "done" for j in ended.values()), [j.error for j in ended.values()]
    assert all(j.status == "done" and j.attempts == 1 for j in queued)
    kept = sorted(p.name for p in root.iterdir())
    assert kept == sorted(Path(j.archive_path or "").name for j in ended.values())
    first.engine.dispose()
    second.engine.dispose()


def test_an_unwritable_export_directory_fails_the_job_with_a_clear_message(
        staff, panel, engine, tmp_path, settings, clock):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x", "utf-8")
    runner = _runner(settings, clock, export_dir=blocker / "exports")
    with Session(engine, expire_on_commit=False) as s:
        member = researcher(s, "ann")
        assert member is not None
        job_id = jobs.start_export(s, member, jobs.ExportRequest(),
                                   worker=jobs.ExportWorker(runner, blocker / "exports"),
                                   now=clock()).id
    assert runner.wait_idle()
    runner.stop()
    with Session(engine) as s:
        job = s.get(ExportJob, job_id)
        assert job is not None and job.status == "failed"
        assert "WELLPANEL_EXPORT_DIR" in (job.error or "")
        queued = s.exec(select(Job)).one()
        assert queued.status == "failed" and queued.attempts == 1  # not retried: it cannot help
    runner.engine.dispose()


def test_a_keyed_export_whose_process_died_ends_failed_and_is_never_run_without_its_key(
        staff, engine, settings, clock):
    """The stable key lived only in the process that took the request: when that process is
    gone (its reservation ran out), another process ends the export failed with a clear
    message instead of running it with a fresh key."""
    with Session(engine, expire_on_commit=False) as s:
        member = researcher(s, "ann")
        assert member is not None
        export = ExportJob(id=str(uuid.uuid4()), staff_id=member.id, status="queued",
                           params={"format": "csv", "profile": "strict", "key": "supplied",
                                   "key_fingerprint": "ab" * 8}, created_at=START)
        s.add(export)
        s.commit()
        jobs_service.enqueue(s, "export", {"export_job_id": export.id},
                             subject=f"export_job:{export.id}", reserve_for="a-dead-process",
                             lease=-timedelta(seconds=1))
        s.commit()
    runner = _runner(settings, clock)
    assert runner.run_one()
    with Session(engine) as s:
        ended = s.get(ExportJob, export.id)
        queued = s.exec(select(Job)).one()
    assert ended is not None and ended.status == "failed" and ended.archive_path is None
    assert ended.error == jobs.KEY_LOST
    assert (queued.status, queued.attempts, queued.claimed_by) == ("failed", 1, runner.worker_id)
    runner.engine.dispose()


@pytest.mark.slow
def test_an_analysis_cut_off_by_a_dead_process_is_finished_by_another(
        client, app, staff, panel, engine, export_dir):
    """Found: an analysis cut off by a restart stayed 'running' forever. Now it is a job: once
    the dead process's lease has run out, the app's runner takes it over, clears the dead
    attempt's report directory and records one report."""
    started = client.post(API, json={"format": "csv"}, headers=staff["ann"]).json()
    done = wait_until_finished(client, staff["ann"], started["id"])
    assert done["status"] == "done", done["error"]
    with Session(engine, expire_on_commit=False) as s:
        export = s.get(ExportJob, started["id"])
        assert export is not None and export.archive_path
        export.report_status = "running"  # as the dead process left it
        s.add(export)
        job = jobs_service.enqueue(s, "analysis", {"export_job_id": export.id,
                                                   "archive": export.archive_path},
                                   subject=f"export_job:{export.id}")
        job.status, job.attempts, job.claimed_by = "running", 1, "a-killed-process"
        job.claim_token, job.lease_until = "d" * 32, utcnow() - timedelta(seconds=1)
        s.commit()
    archive = Path(export.archive_path)
    dead_dir = archive.with_name(f"{archive.stem}-report-dddddddddddd")
    (dead_dir / "panel").mkdir(parents=True)
    jobs.worker_for(app).runner.wake()
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        with Session(engine) as s:
            row = s.get(ExportJob, export.id)
            assert row is not None
            if row.report_status != "running":
                break
        assert time.monotonic() < deadline, "the analysis was not taken over"
        time.sleep(0.1)
    assert row.report_status == "done", row.params.get("report_error")
    assert row.report_path and Path(row.report_path).is_file()
    assert not dead_dir.exists()
    reports = [p for p in export_dir.iterdir() if p.is_dir()]
    assert reports == [Path(row.report_path).parent]
    with Session(engine) as s:
        taken = s.exec(select(Job).where(Job.kind == "analysis")).one()
    assert (taken.status, taken.attempts) == ("done", 2)
    assert taken.claimed_by != "a-killed-process"

"""Ledger checkpoints in an S3-compatible bucket under Object Lock, against a real local S3
endpoint (moto's server mode: HTTP and the S3 protocol, as boto3 speaks to AWS or MinIO).

What the server is relied on for, and shown here: a COMPLIANCE-locked version refuses
DeleteObject with its VersionId (even with BypassGovernanceRetention); a GOVERNANCE-locked one
refuses it without the bypass and allows it with (what GOVERNANCE does not guarantee); a put
under an existing key adds a version and leaves the locked one readable; a plain delete only
adds a delete marker; If-None-Match: * refuses to replace an existing key."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from botocore.exceptions import ClientError
from sqlalchemy import Engine
from sqlmodel import Session

from app.audit import anchor as anchoring
from app.audit import checks
from app.audit import service as audit
from app.audit.s3sink import S3Error, S3Sink
from app.config import Settings
from tests.support import s3, tamper

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
SECRET = s3.CREDENTIALS["AWS_SECRET_ACCESS_KEY"]


@pytest.fixture(scope="module")
def s3_server() -> Iterator[s3.S3Server]:
    server = s3.start()
    yield server
    server.server.stop()


@pytest.fixture(autouse=True)
def aws_environment(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Credentials reach boto3 the usual way, from the environment (never from settings)."""
    for name, value in s3.CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")


def _settings(db_url: str, tmp_path, bucket: str, endpoint: str, **more) -> Settings:  # type: ignore[no-untyped-def]
    return Settings(database_url=db_url, environment="test",
                    secret_key="test-secret-0123456789", ledger_dir=tmp_path / "ledger",
                    ledger_checkpoint_rows=5, ledger_checkpoint_minutes=60, log_json=False,
                    ledger_s3_url=f"s3://{bucket}/study-a/", ledger_s3_endpoint_url=endpoint,
                    ledger_s3_region="us-east-1", ledger_s3_retention_days=30, **more)


@pytest.fixture
def bucket(s3_server) -> str:  # type: ignore[no-untyped-def]
    return s3_server.bucket()


@pytest.fixture
def s3_settings(db_url, tmp_path, bucket, s3_server) -> Settings:  # type: ignore[no-untyped-def]
    return _settings(db_url, tmp_path, bucket, s3_server.endpoint)


def _append(session: Session, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        audit.append(session, actor="test", action="thing.happen", target=f"t:{i}",
                     details={"i": i}, now=T0)
    session.commit()


def _checkpoint(settings: Settings, engine: Engine) -> tuple[anchoring.Anchor, anchoring.Entry]:
    anchor = anchoring.Anchor(settings)
    with engine.connect() as connection:
        entry = anchor.checkpoint(connection, now=T0)
    assert entry is not None
    return anchor, entry


def _verify(settings: Settings, session: Session, sink: str = "all"):  # type: ignore[no-untyped-def]
    session.rollback()  # a fresh snapshot after the tampering
    views = checks.load_views(settings, sink=sink)
    return checks.verify(session, views[0], full=True, others=views[1:])


def _key(settings: Settings, name: str) -> str:
    return "study-a/" + name


@pytest.fixture
def anchored(s3_settings, engine, session) -> Settings:
    """12 rows with checkpoints at rows 5 and 10, in the directory and the bucket."""
    _append(session, 5)
    _checkpoint(s3_settings, engine)
    _append(session, 5, start=5)
    anchor, _ = _checkpoint(s3_settings, engine)
    assert anchor.undelivered == []
    _append(session, 2, start=10)
    return s3_settings


# ---- writing, locked --------------------------------------------------------------------------

def test_a_checkpoint_lands_in_the_bucket_locked(anchored, s3_server, bucket):
    client = s3_server.client()
    listed = client.list_objects_v2(Bucket=bucket, Prefix="study-a/")
    assert sorted(o["Key"] for o in listed["Contents"]) == [
        "study-a/00000001-checkpoint.json", "study-a/00000002-checkpoint.json",
        "study-a/ledger-public-key.pem"]
    head = client.head_object(Bucket=bucket, Key=_key(anchored, "00000002-checkpoint.json"))
    assert head["ObjectLockMode"] == "COMPLIANCE"
    kept = head["ObjectLockRetainUntilDate"] - head["LastModified"]
    assert timedelta(days=29, hours=23) < kept < timedelta(days=30, hours=1)  # 30 days
    directory = anchoring.ledger_paths(anchored).directory
    body = client.get_object(Bucket=bucket, Key=_key(anchored, "00000002-checkpoint.json"))
    assert body["Body"].read() == (directory / "00000002-checkpoint.json").read_bytes()
    key = client.head_object(Bucket=bucket, Key=_key(anchored, "ledger-public-key.pem"))
    assert key["ObjectLockMode"] == "COMPLIANCE"  # the public key is locked too


def test_governance_mode_is_set_when_asked(db_url, tmp_path, s3_server, bucket, engine,
                                           session):
    settings = _settings(db_url, tmp_path, bucket, s3_server.endpoint,
                         ledger_s3_lock_mode="governance")
    _append(session, 3)
    _checkpoint(settings, engine)
    head = s3_server.client().head_object(Bucket=bucket,
                                          Key=_key(settings, "00000001-checkpoint.json"))
    assert head["ObjectLockMode"] == "GOVERNANCE"


def test_a_compliance_locked_checkpoint_cannot_be_deleted_or_replaced(
        tmp_path, s3_server, bucket):
    settings = _settings("sqlite://", tmp_path, bucket, s3_server.endpoint)
    sink = S3Sink(settings).open()
    sink.write("00000001-checkpoint.json", b'{"original": true}\n')
    client = s3_server.client()
    key = _key(settings, "00000001-checkpoint.json")
    [original] = client.list_object_versions(Bucket=bucket, Prefix=key)["Versions"]
    for bypass in (False, True):
        with pytest.raises(ClientError) as refused:
            client.delete_object(Bucket=bucket, Key=key, VersionId=original["VersionId"],
                                 BypassGovernanceRetention=bypass)
        assert refused.value.response["Error"]["Code"] == "AccessDenied"
    # the app itself never replaces a key (If-None-Match: *) ...
    with pytest.raises(ClientError) as precondition:
        client.put_object(Bucket=bucket, Key=key, Body=b"forged", IfNoneMatch="*")
    assert precondition.value.response["Error"]["Code"] == "PreconditionFailed"
    # ... and whoever writes over it only adds a version; a plain delete adds a marker
    client.put_object(Bucket=bucket, Key=key, Body=b"forged")
    client.delete_object(Bucket=bucket, Key=key)
    kept = client.get_object(Bucket=bucket, Key=key, VersionId=original["VersionId"])
    assert kept["Body"].read() == b'{"original": true}\n'
    assert "Contents" not in client.list_objects_v2(Bucket=bucket, Prefix=key)  # hidden ...
    assert S3Sink(settings).read("00000001-checkpoint.json") == b'{"original": true}\n'  # not gone
    sink = S3Sink(settings)
    assert sink.names() == ["00000001-checkpoint.json"]
    assert any("written over (2 versions)" in a for a in sink.anomalies)
    assert any("delete marker" in a for a in sink.anomalies)


def test_the_same_entry_uploaded_twice_is_fine_a_different_one_is_refused(
        tmp_path, s3_server, bucket):
    settings = _settings("sqlite://", tmp_path, bucket, s3_server.endpoint)
    S3Sink(settings).write("00000001-checkpoint.json", b"one\n")
    S3Sink(settings).write("00000001-checkpoint.json", b"one\n")  # another process, same entry
    with pytest.raises(S3Error, match="already holds a different 00000001-checkpoint.json"):
        S3Sink(settings).write("00000001-checkpoint.json", b"two\n")


# ---- refusing a bucket that would not lock ---------------------------------------------------

def test_a_bucket_without_object_lock_is_refused(db_url, tmp_path, s3_server, engine, session):
    plain = s3_server.bucket(lock=False, versioning=True)
    settings = _settings(db_url, tmp_path, plain, s3_server.endpoint)
    with pytest.raises(S3Error) as refused:
        S3Sink(settings).open()
    message = str(refused.value)
    assert message == (f"s3://{plain} has no Object Lock: checkpoints there could be deleted or "
                       "replaced; create a bucket with Object Lock enabled (which also turns "
                       "on versioning) and point WELLPANEL_LEDGER_S3_URL at it")
    _append(session, 3)
    anchor, entry = _checkpoint(settings, engine)  # the directory still gets it
    assert anchor.undelivered == [message]
    assert "Contents" not in s3_server.client().list_objects_v2(Bucket=plain)
    with pytest.raises(anchoring.AnchorError, match="has no Object Lock"):
        checks.load_views(settings)
    report = _verify(settings, session, "directory")  # what is left: the directory alone
    assert report.ok and report.checkpoints_checked == 1


def test_verify_says_which_entries_the_bucket_has_not_got_yet(db_url, tmp_path, s3_server,
                                                              bucket, engine, session):
    down = _settings(db_url, tmp_path, bucket, f"http://127.0.0.1:{s3.free_port()}")
    for i in range(2):
        _append(session, 5, start=5 * i)
        _checkpoint(down, engine)  # neither is uploaded
    up = _settings(db_url, tmp_path, bucket, s3_server.endpoint)
    report = _verify(up, session)
    assert report.ok and report.checkpoints_checked == 2
    assert report.warnings == [
        f"2 checkpoint entries (entries 1 to 2) are not in s3://{bucket}/study-a/ at "
        f"{s3_server.endpoint} yet: they are uploaded with the next checkpoint "
        "(`wellpanel audit checkpoint`)"]


def test_a_bucket_without_versioning_or_that_does_not_exist_is_refused(tmp_path, s3_server):
    # moto lets versioning be suspended on an Object Lock bucket (AWS refuses that)
    suspended = s3_server.bucket(lock=True, versioning=False)
    settings = _settings("sqlite://", tmp_path, suspended, s3_server.endpoint)
    with pytest.raises(S3Error, match="has versioning Suspended: Object Lock needs it enabled"):
        S3Sink(settings).open()
    missing = _settings("sqlite://", tmp_path, "no-such-ledger-bucket", s3_server.endpoint)
    with pytest.raises(S3Error, match="no-such-ledger-bucket does not exist"):
        S3Sink(missing).open()


# ---- verifying from the bucket ---------------------------------------------------------------

@pytest.mark.parametrize("sink", ["all", "s3"])
def test_an_intact_ledger_verifies_against_the_bucket(anchored, session, sink):
    report = _verify(anchored, session, sink)
    assert report.ok, report.first_broken
    assert report.checkpoints_checked == 2 and report.latest_checkpoint.seq == 10
    assert "s3://" in report.sink and report.warnings == []
    directory = str(anchoring.ledger_paths(anchored).directory)
    assert (directory in report.sink) == (sink == "all")  # the directory is checked too


def test_rewriting_the_ledger_after_a_checkpoint_is_caught_from_the_bucket(anchored, session):
    tamper.unprotect(session)
    tamper.edit_and_rehash(session, 3)
    assert audit.verify(session).ok  # the chain alone is fooled
    broken = _verify(anchored, session, "s3").first_broken
    assert (broken.problem, broken.seq, broken.checkpoint) == ("rewritten", 3, 1)


def test_whoever_holds_the_server_cannot_rewrite_ledger_and_checkpoints(anchored, engine,
                                                                        session):
    """Database rewritten, the directory emptied and checkpoints signed anew with the server's
    own key: the bucket refuses the forged entry and still names the rewritten row."""
    tamper.unprotect(session)
    tamper.edit_and_rehash(session, 3)
    directory = anchoring.ledger_paths(anchored).directory
    for path in directory.glob("*-checkpoint.json"):
        path.unlink()
    anchor, forged = _checkpoint(anchored, engine)  # entry 1 again, over the rewritten rows
    assert forged.n == 1
    assert anchor.undelivered and "already holds a different 00000001-checkpoint.json" \
        in anchor.undelivered[0]
    assert _verify(anchored, session, "directory").ok  # the directory alone is fooled
    report = _verify(anchored, session)
    assert not report.ok
    assert (report.first_broken.problem, report.first_broken.seq) == ("rewritten", 3)
    assert any("differs from the one in s3://" in w for w in report.warnings)


def test_cutting_the_ledger_is_caught_from_the_bucket(anchored, session):
    tamper.unprotect(session)
    tamper.cut_after(session, 7)
    broken = _verify(anchored, session, "s3").first_broken
    assert (broken.problem, broken.seq, broken.last_row) == ("truncated", 8, 10)


def test_a_checkpoint_written_over_in_the_bucket_is_reported_and_its_original_used(
        anchored, session, s3_server, bucket):
    key = _key(anchored, "00000001-checkpoint.json")
    client = s3_server.client()
    doc = json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    doc["payload"]["head"] = "f" * 64
    client.put_object(Bucket=bucket, Key=key, Body=json.dumps(doc).encode())
    report = _verify(anchored, session, "s3")
    assert report.ok  # the original, locked version still vouches for rows 1 to 5 ...
    assert report.warnings == [  # ... and the attempt is reported
        f"00000001-checkpoint.json in s3://{bucket}/study-a/ at {s3_server.endpoint} was "
        "written over (2 versions); its original, locked version was checked"]


def test_a_checkpoint_removed_under_governance_bypass_is_named_missing(
        db_url, tmp_path, s3_server, bucket, engine, session):
    """GOVERNANCE does not stop whoever may bypass it; verification still sees the gap."""
    settings = _settings(db_url, tmp_path, bucket, s3_server.endpoint,
                         ledger_s3_lock_mode="GOVERNANCE")
    for i in range(3):
        _append(session, 5, start=5 * i)
        _checkpoint(settings, engine)
    client = s3_server.client()
    key = _key(settings, "00000002-checkpoint.json")
    [version] = client.list_object_versions(Bucket=bucket, Prefix=key)["Versions"]
    with pytest.raises(ClientError):
        client.delete_object(Bucket=bucket, Key=key, VersionId=version["VersionId"])
    client.delete_object(Bucket=bucket, Key=key, VersionId=version["VersionId"],
                         BypassGovernanceRetention=True)
    broken = _verify(settings, session, "s3").first_broken
    assert (broken.problem, broken.checkpoint) == ("missing_checkpoints", 2)


def test_a_forced_restore_is_recorded_in_the_bucket_too(s3_settings, s3_server, bucket,
                                                         engine, session, tmp_path):
    from app.audit import custody

    _append(session, 6)
    old = tmp_path / "old.backup"
    made = custody.backup(s3_settings, old, force=False, actor="test", now=T0)
    assert made.warning is None and made.checkpoint is not None
    _append(session, 10, start=100)
    _checkpoint(s3_settings, engine)
    engine.dispose()  # the restore replaces the database under it
    done = custody.restore(s3_settings, old, force=True, actor="test", now=T0)
    assert done.warning is None
    in_bucket = anchoring.read_entries(S3Sink(s3_settings))[0]
    assert [e.kind for e in in_bucket] == ["checkpoint", "checkpoint", "restore", "checkpoint"]
    assert in_bucket[2].payload["forced"] is True and in_bucket[0].payload["backup"]
    session.rollback()
    report = _verify(s3_settings, session, "s3")
    assert report.ok, report.first_broken
    assert [(r.to_seq, r.from_seq, r.forced) for r in report.rollbacks] == [(7, 17, True)]


def test_a_backup_says_when_its_checkpoint_did_not_reach_the_bucket(db_url, tmp_path, bucket,
                                                                    session):
    from app.audit import custody

    down = _settings(db_url, tmp_path, bucket, f"http://127.0.0.1:{s3.free_port()}")
    _append(session, 3)
    made = custody.backup(down, tmp_path / "b.backup", force=False, actor="test", now=T0)
    assert made.checkpoint is not None  # checkpointed in the directory
    assert made.warning.startswith("the backup's checkpoint is in the checkpoint directory "
                                   "only: s3://")


# ---- failures lose nothing and break nothing -------------------------------------------------

def test_an_upload_that_fails_is_made_with_the_next_checkpoint(db_url, tmp_path, s3_server,
                                                               bucket, engine, session,
                                                               caplog):
    down = _settings(db_url, tmp_path, bucket, f"http://127.0.0.1:{s3.free_port()}")
    _append(session, 5)
    with caplog.at_level(logging.WARNING, logger="wellpanel.audit"):
        anchor, first = _checkpoint(down, engine)
    assert len(anchor.undelivered) == 1 and "cannot be checked" in anchor.undelivered[0]
    assert (anchoring.ledger_paths(down).directory / first.name).is_file()  # not lost
    assert "not uploaded" in caplog.text and SECRET not in caplog.text
    up = _settings(db_url, tmp_path, bucket, s3_server.endpoint)
    _append(session, 5, start=5)
    anchor, second = _checkpoint(up, engine)
    assert anchor.undelivered == []
    listed = s3_server.client().list_objects_v2(Bucket=bucket, Prefix="study-a/0")
    assert [o["Key"] for o in listed["Contents"]] == [
        _key(up, first.name), _key(up, second.name)]
    assert _verify(up, session).ok


def test_access_denied_is_said_plainly_and_the_entry_follows_later(s3_settings, s3_server,
                                                                   bucket, engine, session):
    client = s3_server.client()
    client.put_bucket_policy(Bucket=bucket, Policy=json.dumps({
        "Version": "2012-10-17", "Statement": [{
            "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
            "Resource": f"arn:aws:s3:::{bucket}/*"}]}))
    _append(session, 5)
    anchor, first = _checkpoint(s3_settings, engine)
    [message] = anchor.undelivered
    assert message.startswith("ledger-public-key.pem was not uploaded to s3://")
    assert "PutObject: 403" in message or "PutObject: AccessDenied" in message
    assert SECRET not in message
    client.delete_bucket_policy(Bucket=bucket)
    _append(session, 5, start=5)
    anchor, second = _checkpoint(s3_settings, engine)
    assert anchor.undelivered == []
    names = [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert names == [_key(s3_settings, n) for n in
                     (first.name, second.name, "ledger-public-key.pem")]


def test_a_participants_commit_is_not_held_up_by_a_dead_endpoint(db_url, tmp_path, bucket,
                                                                 engine, caplog):
    settings = _settings(db_url, tmp_path, bucket, f"http://127.0.0.1:{s3.free_port()}")
    anchor = anchoring.attach(engine, settings)
    with caplog.at_level(logging.WARNING, logger="wellpanel.audit"):
        with Session(engine) as session:
            _append(session, 1)  # commits: a checkpoint is due at once, uploaded in the
            # background; the commit has returned normally
        for thread in threading.enumerate():  # the upload runs after the commit
            if thread.name.endswith("(_deliver)"):
                thread.join(timeout=60)
    directory = anchoring.ledger_paths(settings).directory
    assert [e.seq for e in anchoring.read_entries(anchoring.DirectorySink(directory))[0]] == [1]
    assert "cannot be checked" in anchor.undelivered[0]
    [record] = [r for r in caplog.records if r.getMessage().startswith("ledger checkpoint not")]
    assert record.error == anchor.undelivered[0] and SECRET not in caplog.text


def test_checkpoint_command_says_when_the_bucket_did_not_get_it(db_url, tmp_path, s3_server,
                                                                bucket, session):
    from typer.testing import CliRunner

    from app.cli import app as cli_app
    from app.config import get_settings

    _append(session, 3)

    def run(endpoint: str, *args: str):  # type: ignore[no-untyped-def]
        env = {"WELLPANEL_DATABASE_URL": db_url, "WELLPANEL_ENVIRONMENT": "test",
               "WELLPANEL_SECRET_KEY": "s3-test-secret-0123456789",
               "WELLPANEL_LEDGER_DIR": str(tmp_path / "ledger"),
               "WELLPANEL_LEDGER_S3_URL": f"s3://{bucket}/study-a",
               "WELLPANEL_LEDGER_S3_ENDPOINT_URL": endpoint}
        get_settings.cache_clear()
        try:
            return CliRunner().invoke(cli_app, list(args), env=env)
        finally:
            get_settings.cache_clear()

    dead = f"http://127.0.0.1:{s3.free_port()}"
    failed = run(dead, "audit", "checkpoint")
    assert failed.exit_code == 1
    [line] = [x for x in failed.stderr.splitlines() if x.startswith("error:")]
    assert "checkpoint 1 is in" in line and "It is sent again with the next checkpoint" in line
    assert SECRET not in failed.stdout + failed.stderr
    done = run(s3_server.endpoint, "audit", "checkpoint")
    assert done.exit_code == 0, done.stderr
    assert f"and in s3://{bucket}/study-a/" in done.stdout
    assert "COMPLIANCE, 3650 days" in done.stdout
    verified = run(s3_server.endpoint, "audit", "verify", "--sink", "s3")
    assert verified.exit_code == 0, verified.stderr
    assert "2 signed checkpoint entries in s3://" in verified.stdout
    refused = run(dead, "audit", "verify")
    assert refused.exit_code == 1 and "cannot be checked" in refused.stderr


# ---- settings --------------------------------------------------------------------------------

@pytest.mark.parametrize(("values", "message"), [
    ({"ledger_s3_url": "s3://Ledger_Bucket/x"}, "'Ledger_Bucket' is not a valid S3 bucket name"),
    ({"ledger_s3_url": "https://bucket.example/x"}, "must look like s3://BUCKET"),
    ({"ledger_s3_url": "s3://bucket-a", "ledger_s3_endpoint_url": "minio:9000"},
     "must be an http:// or https:// URL"),
    ({"ledger_s3_url": "s3://bucket-a", "ledger_s3_endpoint_url": "http://key:pw@minio:9000"},
     "must not hold credentials"),
    ({"ledger_s3_url": "s3://bucket-a", "ledger_s3_lock_mode": "legal-hold"},
     "'COMPLIANCE' or 'GOVERNANCE'"),
    ({"ledger_s3_url": "s3://bucket-a", "ledger_s3_retention_days": 0},
     "greater than or equal to 1"),
    ({"ledger_s3_endpoint_url": "http://minio:9000"},
     "WELLPANEL_LEDGER_S3_URL (s3://BUCKET/PREFIX) is not"),
])
def test_bad_s3_settings_are_refused_clearly(values, message):
    with pytest.raises(ValueError) as refused:
        Settings(environment="test", **values)
    assert message in str(refused.value)
    assert "pw@" not in str(refused.value)  # a refused value is never echoed


def test_s3_settings_are_normalized():
    settings = Settings(environment="test", ledger_s3_url="s3://ledger-bucket//study-a",
                        ledger_s3_endpoint_url="http://minio:9000/",
                        ledger_s3_lock_mode="governance")
    assert settings.ledger_s3_url == "s3://ledger-bucket/study-a/"
    assert settings.ledger_s3_endpoint_url == "http://minio:9000"
    assert settings.ledger_s3_lock_mode == "GOVERNANCE"


def test_verify_refuses_a_sink_that_is_not_configured(tmp_path):
    settings = Settings(environment="test", database_url=f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(anchoring.AnchorError, match="WELLPANEL_LEDGER_S3_URL is not set"):
        checks.load_views(settings, sink="s3")
    with pytest.raises(anchoring.AnchorError, match="unknown sink 'bucket'"):
        checks.load_views(settings, sink="bucket")
    [only] = checks.load_views(settings)  # all: the directory, as before
    assert only.label.endswith("x.ledger")

"""Checkpoints in an S3-compatible bucket under Object Lock: a copy nobody at the study can take
back, not even whoever holds the server, its signing key and the database's credentials.

Each entry of the checkpoint directory is uploaded once, as its own object
(`<prefix>00000001-checkpoint.json`), with a conditional put (If-None-Match: an existing key is
never replaced) and an Object Lock retention (COMPLIANCE or GOVERNANCE, for the configured
days). The bucket is checked when the sink opens: no Object Lock or no versioning, and it is
refused, so nobody believes in a lock that is not there. After each upload the object's
retention is read back; a server that takes the lock headers and ignores them is refused too.

Reading goes by object versions, not by the keys' current state: the entry is the key's
oldest version (the one the app wrote, locked). Under the lock a later version or a delete
marker cannot remove it, only hide it from a plain listing; verification then still uses the
original and reports the attempt (`anomalies`).

The directory stays the sink that numbers entries; the bucket follows it. An upload that fails
(endpoint down, access denied) loses nothing: the entry waits in the directory and goes up with
the next checkpoint, in order (`upload_pending`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from app.audit.sink_errors import PUBLIC_KEY_FILE, AnchorError
from app.config import Settings

PUBLIC_KEY_PREFIX = "ledger-public-key"


class S3Error(AnchorError):
    """The bucket cannot be used or an object cannot be written (one line for the operator)."""


class S3Conflict(S3Error):
    """The bucket already holds a different object under that name."""


def describe(exc: BaseException) -> str:
    """A failure in one line, without secrets: botocore names the operation, the error code
    and the endpoint, never the credentials."""
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return (f"{exc.operation_name}: {error.get('Code', 'error')} "
                f"({error.get('Message') or 'no message'})")
    if isinstance(exc, BotoCoreError):
        return f"{exc.__class__.__name__}: {exc}"
    return f"{exc.__class__.__name__}: {exc}"


def _code(exc: BaseException) -> str | None:
    from botocore.exceptions import ClientError

    return exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else None


@dataclass(frozen=True)
class Version:
    key: str
    version_id: str
    last_modified: datetime


@dataclass
class S3Sink:
    """One bucket and prefix; implements anchor.Sink."""

    settings: Settings
    bucket: str = field(init=False)
    prefix: str = field(init=False)
    label: str = field(init=False)
    anomalies: list[str] = field(default_factory=list, init=False)
    _client: Any = field(default=None, init=False, repr=False)
    _opened: bool = field(default=False, init=False)
    _originals: dict[str, Version] | None = field(default=None, init=False, repr=False)
    _uploaded: set[str] = field(default_factory=set, init=False, repr=False)
    _listed: bool = field(default=False, init=False, repr=False)
    _confirmed: set[str] = field(default_factory=set, init=False, repr=False)  # same bytes
    _mutex: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        url = self.settings.ledger_s3_url
        if url is None:
            raise S3Error("WELLPANEL_LEDGER_S3_URL is not set")
        parts = urlsplit(url)
        self.bucket, self.prefix = parts.netloc, parts.path.lstrip("/")
        endpoint = self.settings.ledger_s3_endpoint_url
        self.label = url + (f" at {endpoint}" if endpoint else "")

    # -- opening
    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            # Short timeouts and few retries: an upload runs beside the app's work, and a
            # failed one is simply retried with the next checkpoint.
            config = Config(connect_timeout=5, read_timeout=15,
                            retries={"max_attempts": 3, "mode": "standard"})
            self._client = boto3.session.Session().client(
                "s3", endpoint_url=self.settings.ledger_s3_endpoint_url,
                region_name=self.settings.ledger_s3_region, config=config)
        return self._client

    def open(self) -> S3Sink:
        """Check once that the bucket really locks what is put in it."""
        if self._opened:
            return self
        where = f"s3://{self.bucket}"
        try:
            lock = self.client.get_object_lock_configuration(Bucket=self.bucket)
        except Exception as exc:
            code = _code(exc)
            if code == "ObjectLockConfigurationNotFoundError":
                raise S3Error(
                    f"{where} has no Object Lock: checkpoints there could be deleted or "
                    "replaced; create a bucket with Object Lock enabled (which also turns on "
                    "versioning) and point WELLPANEL_LEDGER_S3_URL at it") from exc
            if code == "NoSuchBucket":
                raise S3Error(f"{where} does not exist (create it with Object Lock enabled)"
                              ) from exc
            raise S3Error(f"{where} cannot be checked: {describe(exc)}") from exc
        if lock.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") != "Enabled":
            raise S3Error(f"{where} has no Object Lock enabled: checkpoints there could be "
                          "deleted or replaced; use a bucket with Object Lock enabled")
        try:
            versioning = self.client.get_bucket_versioning(Bucket=self.bucket)
        except Exception as exc:
            raise S3Error(f"{where} cannot be checked: {describe(exc)}") from exc
        if versioning.get("Status") != "Enabled":
            raise S3Error(f"{where} has versioning {versioning.get('Status') or 'off'}: Object "
                          "Lock needs it enabled, or an overwrite would replace a checkpoint")
        self._opened = True
        return self

    # -- reading (by versions: the oldest version of a key is the one the app wrote)
    def _scan(self) -> dict[str, Version]:
        self.open()
        found: dict[str, list[Version]] = {}
        markers: set[str] = set()
        try:
            pages = self.client.get_paginator("list_object_versions").paginate(
                Bucket=self.bucket, Prefix=self.prefix)
            for page in pages:
                for item in page.get("Versions", []):
                    found.setdefault(item["Key"], []).append(
                        Version(item["Key"], item["VersionId"], item["LastModified"]))
                markers.update(m["Key"] for m in page.get("DeleteMarkers", []))
        except Exception as exc:
            raise S3Error(f"{self.label}: the checkpoints cannot be listed: {describe(exc)}"
                          ) from exc
        originals: dict[str, Version] = {}
        self.anomalies = []
        for key, versions in sorted(found.items()):
            # S3 lists a key's versions newest first: the last is the oldest, the app's own.
            originals[key] = versions[-1]
            name = key[len(self.prefix):]
            if len(versions) > 1:
                self.anomalies.append(
                    f"{name} in {self.label} was written over ({len(versions)} versions); its "
                    "original, locked version was checked")
            if key in markers:
                self.anomalies.append(
                    f"{name} in {self.label} was deleted (a delete marker hides it); its "
                    "original, locked version was checked")
        for key in sorted(markers - set(found)):
            self.anomalies.append(f"{key[len(self.prefix):]} in {self.label} has only a delete "
                                  "marker")
        self._originals = originals
        return originals

    def names(self) -> list[str]:
        originals = self._scan()
        return sorted(key[len(self.prefix):] for key in originals
                      if key.endswith((".json", ".pem")) and "/" not in key[len(self.prefix):])

    def read(self, name: str) -> bytes:
        originals = self._originals if self._originals is not None else self._scan()
        version = originals.get(self.prefix + name)
        if version is None:
            raise S3Error(f"{name} is not in {self.label}")
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=version.key,
                                          VersionId=version.version_id)["Body"]
            return body.read()
        except Exception as exc:
            raise S3Error(f"{self.label}: {name} cannot be read: {describe(exc)}") from exc

    def public_key(self) -> Ed25519PublicKey | None:
        from cryptography.hazmat.primitives import serialization

        names = self.names()
        if f"{PUBLIC_KEY_PREFIX}.pem" not in names:
            return None
        key = serialization.load_pem_public_key(self.read(f"{PUBLIC_KEY_PREFIX}.pem"))
        return key if isinstance(key, Ed25519PublicKey) else None

    # -- writing
    def _retain_until(self) -> datetime:
        # The lock is the storage's: it runs on real time, whatever clock the app was given.
        return datetime.now(UTC) + timedelta(days=self.settings.ledger_s3_retention_days)

    def write(self, name: str, data: bytes) -> None:
        """Put an object that must not exist yet, locked; an identical object already there
        (another process uploaded it) is fine, a different one is refused."""
        self.open()
        key = self.prefix + name
        until = self._retain_until()
        mode = self.settings.ledger_s3_lock_mode
        try:
            put = self.client.put_object(
                Bucket=self.bucket, Key=key, Body=data, IfNoneMatch="*",
                ChecksumAlgorithm="SHA256",  # AWS wants a checksum on a put with a lock
                ContentType="application/json" if name.endswith(".json")
                else "application/x-pem-file",
                ObjectLockMode=mode, ObjectLockRetainUntilDate=until)
        except Exception as exc:
            if _code(exc) not in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise S3Error(f"{name} was not uploaded to {self.label}: {describe(exc)}"
                              ) from exc
            self._originals = None
            if self.read(name) != data:
                raise S3Conflict(f"{self.label} already holds a different {name}: the checkpoint "
                              "directory and the bucket disagree (was the directory emptied "
                              "or replaced?)") from exc
            self._uploaded.add(name)
            self._confirmed.add(name)
            return
        self._check_locked(name, key, put.get("VersionId"), mode, until)
        self._uploaded.add(name)
        self._confirmed.add(name)

    def _check_locked(self, name: str, key: str, version_id: str | None, mode: str,
                      until: datetime) -> None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key,
                                           **({"VersionId": version_id} if version_id else {}))
        except Exception as exc:
            raise S3Error(f"{name} was uploaded to {self.label}, but its lock cannot be read "
                          f"back: {describe(exc)}") from exc
        kept = head.get("ObjectLockRetainUntilDate")
        if head.get("ObjectLockMode") != mode or kept is None or \
                kept < until - timedelta(minutes=5):
            raise S3Error(f"{self.label} stored {name} without the {mode} lock it was asked "
                          f"for (it reports mode {head.get('ObjectLockMode')}, until {kept}): "
                          "this server does not enforce Object Lock")

    def publish_key(self, pem: str, key_id: str) -> None:
        name = f"{PUBLIC_KEY_PREFIX}.pem"
        try:
            self.write(name, pem.encode())
        except S3Conflict:  # another key signed here before: keep both
            self.write(f"{PUBLIC_KEY_PREFIX}-{key_id}.pem", pem.encode())

    def upload_pending(self, source: Any, pem: str, key_id: str) -> list[str]:
        """Upload every entry of `source` (the directory sink) the bucket lacks, in order; the
        first failure stops (the rest follow next time, so the bucket has no gaps). Returns
        the names uploaded now."""
        with self._mutex:
            local = [n for n in source.names() if not n.startswith(PUBLIC_KEY_PREFIX)]
            if not self._listed:  # once per process, and again after a failure
                self._uploaded |= set(self.names())
                self._listed = True
            if PUBLIC_KEY_FILE not in self._uploaded:
                self.publish_key(pem, key_id)
                self._uploaded.add(PUBLIC_KEY_FILE)
            newest = local[-1] if local else None
            if newest in self._uploaded and newest not in self._confirmed:
                # Already there by name, e.g. the directory was emptied and numbering began
                # again: the bucket's locked entry must be this one, or say so now.
                if self.read(newest) != source.read(newest):
                    raise S3Conflict(f"{self.label} already holds a different {newest}: the "
                                     "checkpoint directory and the bucket disagree (was the "
                                     "directory emptied or replaced?)")
                self._confirmed.add(newest)
            done = []
            for name in local:
                if name not in self._uploaded:
                    try:
                        self.write(name, source.read(name))
                    except S3Error:
                        self._listed = False
                        raise
                    done.append(name)
            return done

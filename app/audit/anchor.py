"""The ledger's head, anchored outside the database: signed checkpoints.

A hash chain only proves something against a copy of its head kept where the database's users
cannot reach. Every N rows or M minutes (and on `wellpanel audit checkpoint`, and before each
backup) the head's position and hash are signed with an Ed25519 key and written, as one small
JSON file, to a sink outside the database: a directory (always; by default beside a SQLite file),
and optionally an email to the IRB and an S3-compatible bucket under Object Lock (s3sink.py),
which follow the directory: an entry the bucket did not get goes up with the next checkpoint.

The sink is itself append-only by numbering: entry n+1 follows entry n, so a removed entry shows
as a missing range. An entry is either a checkpoint (seq, head hash, and a short digest of every
row since the previous checkpoint, so the first rewritten row can be named) or a restore (the
ledger was set back to an older backup's head on purpose, which verification then reports).

The private key never enters the database and is created on first use with mode 0600, beside
(not inside) the checkpoint directory; the public key is written into the directory and shown
to the IRB. See app/audit/checks.py for how checkpoints are checked.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.engine import make_url
from sqlmodel import Session

from app.audit.sink_errors import PUBLIC_KEY_FILE, AnchorError
from app.config import Settings
from app.core.security import canonical_json
from app.db import READ_ONLY

if TYPE_CHECKING:
    from app.audit.s3sink import S3Sink

log = logging.getLogger("wellpanel.audit")

FORMAT = "wellpanel-ledger-checkpoint/1"
DIGEST_CHARS = 8  # hex characters of each row hash kept in a checkpoint: enough to name a row
DIGEST_MAX_ROWS = 20_000  # a catch-up checkpoint over more rows names a range instead
_ENTRY_NAME = re.compile(r"^(\d{8})-(checkpoint|restore)\.json$")


# ---- where things live -----------------------------------------------------------------------

@dataclass(frozen=True)
class LedgerPaths:
    directory: Path  # the directory sink
    key_file: Path  # the private key (never inside `directory`)
    state_file: Path  # the last verified position (beside the key)


def ledger_paths(settings: Settings) -> LedgerPaths:
    directory = (Path(settings.ledger_dir).expanduser() if settings.ledger_dir is not None
                 else _default_directory(settings.database_url)).absolute()
    key = (Path(settings.ledger_key_file).expanduser().absolute()
           if settings.ledger_key_file is not None
           else directory.with_name(f"{directory.name}-signing-key.pem"))
    return LedgerPaths(directory, key, key.with_name(f"{directory.name}-verified.json"))


def _default_directory(database_url: str) -> Path:
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        database = url.database
        if database and database != ":memory:" and not database.startswith("file:"):
            path = Path(database).expanduser().absolute()
            return path.with_name(f"{path.stem}.ledger")
        return Path("wellpanel.ledger")
    data_home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    name = f"{url.host or 'local'}-{url.port or 5432}-{url.database or 'postgres'}"
    return data_home / "wellpanel" / "ledger" / re.sub(r"[^A-Za-z0-9._-]", "_", name)


# ---- the key ---------------------------------------------------------------------------------

def key_id_of(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_pem(public: Ed25519PublicKey) -> str:
    return public.public_bytes(serialization.Encoding.PEM,
                               serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise AnchorError(f"{path}: not a readable public key ({exc})") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise AnchorError(f"{path}: not an Ed25519 public key")
    return key


class Signer:
    """The signing key, created on first use (0600, created exclusively: two processes starting
    at once end up with one key)."""

    def __init__(self, key_file: Path) -> None:
        self.key_file = key_file
        self.private = self._load_or_create(key_file)
        self.public = self.private.public_key()
        self.key_id = key_id_of(self.public)

    @staticmethod
    def _load_or_create(path: Path) -> Ed25519PrivateKey:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            pem = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption())
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass  # another process made it a moment ago: use theirs
            else:
                with os.fdopen(fd, "wb") as f:
                    f.write(pem)
                    f.flush()
                    os.fsync(f.fileno())
                log.info("ledger signing key created", extra={"key_file": str(path)})
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError) as exc:
            raise AnchorError(f"{path}: the ledger signing key cannot be read ({exc})") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise AnchorError(f"{path}: not an Ed25519 private key")
        return key

    def sign(self, payload: dict[str, Any]) -> str:
        return base64.b64encode(self.private.sign(canonical_json(payload).encode())).decode()


def trusted_key(paths: LedgerPaths, sink: Sink, public_key_file: Path | None = None
                ) -> Ed25519PublicKey | None:
    """The key checkpoints must be signed with: one named on the command line, else the signing
    key's own public half, else the public key published in the sink."""
    if public_key_file is not None:
        return load_public_key(public_key_file)
    if paths.key_file.is_file():
        return Signer(paths.key_file).public
    published = sink.public_key()
    return published


# ---- entries ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Entry:
    """One signed file of the sink (as read: its signature is checked by checks.py)."""

    name: str
    payload: dict[str, Any]
    signature: str

    @property
    def n(self) -> int:
        return int(self.payload["n"])

    @property
    def kind(self) -> str:
        return str(self.payload["kind"])

    @property
    def seq(self) -> int:
        """The ledger position this entry vouches for (a restore: the restored head)."""
        return int(self.payload["seq"])

    @property
    def head(self) -> str:
        return str(self.payload["head"])

    @property
    def at(self) -> datetime:
        return datetime.fromisoformat(self.payload["at"])

    def signed_by(self, key: Ed25519PublicKey) -> bool:
        try:
            key.verify(base64.b64decode(self.signature, validate=True),
                       canonical_json(self.payload).encode())
        except (InvalidSignature, ValueError):
            return False
        return True

    def to_bytes(self) -> bytes:
        return (json.dumps({"payload": self.payload, "signature": self.signature},
                           ensure_ascii=False, indent=1, sort_keys=True) + "\n").encode()


@dataclass(frozen=True)
class Unreadable:
    """A file in the sink that should be an entry but cannot be parsed."""

    name: str
    reason: str


def entry_name(n: int, kind: str) -> str:
    return f"{n:08d}-{kind}.json"


def parse_entry(name: str, data: bytes) -> Entry | Unreadable:
    try:
        doc = json.loads(data)
        payload, signature = doc["payload"], doc["signature"]
        if payload.get("format") != FORMAT:
            return Unreadable(name, f"unknown format {payload.get('format')!r}")
        entry = Entry(name, payload, str(signature))
        entry.n, entry.seq, entry.head, entry.at  # noqa: B018 - every field must parse
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return Unreadable(name, f"not a checkpoint file ({exc.__class__.__name__}: {exc})")
    match = _ENTRY_NAME.match(name)
    if match is None or int(match.group(1)) != entry.n or match.group(2) != entry.kind:
        return Unreadable(name, f"its name does not match its content (entry {entry.n}, "
                          f"{entry.kind})")
    return entry


# ---- sinks -----------------------------------------------------------------------------------

class Sink(Protocol):
    label: str

    def names(self) -> list[str]: ...
    def read(self, name: str) -> bytes: ...
    def write(self, name: str, data: bytes) -> None: ...
    def public_key(self) -> Ed25519PublicKey | None: ...
    def publish_key(self, pem: str, key_id: str) -> None: ...


class DirectorySink:
    """Checkpoint files in a directory; a new file is created exclusively, never replaced."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.label = str(directory)

    def names(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return sorted(p.name for p in self.directory.iterdir()
                      if p.name.endswith(".json") and not p.name.startswith("."))

    def read(self, name: str) -> bytes:
        return (self.directory / name).read_bytes()

    def write(self, name: str, data: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def public_key(self) -> Ed25519PublicKey | None:
        path = self.directory / PUBLIC_KEY_FILE
        return load_public_key(path) if path.is_file() else None

    def publish_key(self, pem: str, key_id: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / PUBLIC_KEY_FILE
        if not path.exists():
            path.write_text(pem)
        elif path.read_text() != pem:  # another key signed here before: keep both, loudly
            path.with_name(f"ledger-public-key-{key_id}.pem").write_text(pem)
            log.warning("the checkpoint directory holds another public key",
                        extra={"directory": str(self.directory), "key_id": key_id})

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Across processes: one writer picks the next entry number at a time."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / ".lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _entry_names(sink: Sink) -> list[str]:
    return [name for name in sink.names() if not name.startswith("ledger-public-key")]


def latest_entry(sink: Sink) -> Entry | None:
    """The newest readable entry (by name, which carries its number)."""
    for name in reversed(_entry_names(sink)):
        parsed = parse_entry(name, sink.read(name))
        if isinstance(parsed, Entry):
            return parsed
    return None


def read_entries(sink: Sink) -> tuple[list[Entry], list[Unreadable]]:
    entries: list[Entry] = []
    bad: list[Unreadable] = []
    for name in _entry_names(sink):
        parsed = parse_entry(name, sink.read(name))
        (entries if isinstance(parsed, Entry) else bad).append(parsed)  # type: ignore[arg-type]
    entries.sort(key=lambda e: e.n)
    return entries, bad


# ---- reading the ledger's positions ----------------------------------------------------------

def db_head(connection: Connection) -> tuple[int, str] | None:
    row = connection.execute(text(
        "SELECT id, row_hash FROM audit_events ORDER BY id DESC LIMIT 1")).first()
    return None if row is None else (int(row[0]), str(row[1]))


def db_hash_at(connection: Connection, seq: int) -> str | None:
    return connection.execute(text("SELECT row_hash FROM audit_events WHERE id = :s"),
                              {"s": seq}).scalar()


def db_hashes(connection: Connection, after: int, upto: int) -> list[tuple[int, str]]:
    return [(int(i), str(h)) for i, h in connection.execute(text(
        "SELECT id, row_hash FROM audit_events WHERE id > :a AND id <= :b ORDER BY id"),
        {"a": after, "b": upto})]


def digest_of(hashes: list[tuple[int, str]]) -> str:
    return "".join(h[:DIGEST_CHARS] for _, h in hashes)


# ---- writing ---------------------------------------------------------------------------------

@dataclass
class Anchor:
    """One installation's checkpointing: where entries go, the key, and when to write."""

    settings: Settings
    paths: LedgerPaths = field(init=False)
    sink: DirectorySink = field(init=False)
    bucket: S3Sink | None = field(default=None, init=False)  # WELLPANEL_LEDGER_S3_URL
    undelivered: list[str] = field(default_factory=list, init=False)  # the last delivery's
    _latest: tuple[int, datetime] | None = field(default=None, init=False)  # (seq, at)
    _mutex: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        self.paths = ledger_paths(self.settings)
        self.sink = DirectorySink(self.paths.directory)
        if self.settings.ledger_s3_url is not None:
            from app.audit.s3sink import S3Sink

            self.bucket = S3Sink(self.settings)  # opened (and checked) on first use

    # -- the sinks, for reading
    def read_sink(self) -> Sink:
        """Where verification reads: the directory."""
        return self.sink

    def entries(self) -> tuple[list[Entry], list[Unreadable]]:
        return read_entries(self.read_sink())

    def signer(self) -> Signer:
        return Signer(self.paths.key_file)

    # -- the policy
    def due(self, seq: int, at: datetime) -> bool:
        """Whether a head at `seq` (written at `at`) should be checkpointed now."""
        latest = self._latest_known()
        if latest is None:
            return True
        last_seq, last_at = latest
        if seq <= last_seq:
            return False
        return (seq - last_seq >= self.settings.ledger_checkpoint_rows
                or at - last_at >= timedelta(minutes=self.settings.ledger_checkpoint_minutes))

    def _latest_known(self) -> tuple[int, datetime] | None:
        if self._latest is None:
            latest = latest_entry(self.sink)
            if latest is not None:
                self._latest = (latest.seq, latest.at)
        return self._latest

    # -- writing
    def checkpoint(self, connection: Connection, *, now: datetime, backup: dict[str, Any] | None
                   = None, only_if_due: bool = False, background: bool = False) -> Entry | None:
        """Sign the ledger's current head. None when the ledger is empty (or, with `only_if_due`,
        when no checkpoint is due). Refuses to sign a head that contradicts the latest entry: a
        rewritten history must never get a valid signature."""
        head = db_head(connection)
        if head is None:
            return None
        seq, head_hash = head
        if only_if_due and not self.due(seq, now):
            return None
        with self._mutex, self.sink.lock():
            previous = latest_entry(self.sink)
            if only_if_due and previous is not None:  # another process may have just written
                self._latest = (previous.seq, previous.at)
                if not self.due(seq, now):
                    return None
            since = self._since(connection, previous, seq)
            hashes = db_hashes(connection, since, seq) if seq - since <= DIGEST_MAX_ROWS else []
            payload: dict[str, Any] = {
                "kind": "checkpoint", "seq": seq, "head": head_hash, "since": since,
                "ledger": db_hash_at(connection, 1)}
            if hashes:
                payload["digest"] = digest_of(hashes)
            if backup:
                payload["backup"] = backup
            entry = self._write(previous, payload, now)
        if background:  # after a participant's commit: the mail does not hold up the answer
            threading.Thread(target=self._deliver, args=(entry,), daemon=True).start()
        else:
            self._deliver(entry)
        return entry

    def _since(self, connection: Connection, previous: Entry | None, seq: int) -> int:
        if previous is None:
            return 0
        recorded = db_hash_at(connection, previous.seq)
        if previous.seq > seq or recorded != previous.head:
            raise AnchorError(
                f"the ledger does not match checkpoint {previous.n} ({previous.name}: row "
                f"{previous.seq}); nothing was signed. Run `wellpanel audit verify`.")
        return previous.seq

    def record_restore(self, *, seq: int, head: str, ledger: str | None, source: str,
                       source_sha256: str, forced: bool, replaced: dict[str, Any] | None,
                       now: datetime) -> Entry:
        """A restore set the ledger to an older (or the same) head: say so, signed."""
        with self._mutex, self.sink.lock():
            previous = latest_entry(self.sink)
            payload = {"kind": "restore", "seq": seq, "head": head, "ledger": ledger,
                       "source": source, "source_sha256": source_sha256, "forced": forced,
                       "replaced": replaced}
            entry = self._write(previous, payload, now)
        self._deliver(entry)
        return entry

    def _write(self, previous: Entry | None, body: dict[str, Any], now: datetime) -> Entry:
        signer = self.signer()
        n = previous.n + 1 if previous is not None else 1
        payload = {"format": FORMAT, "n": n, "key": signer.key_id,
                   "at": now.isoformat(timespec="microseconds")} | body
        entry = Entry(entry_name(n, payload["kind"]), payload, signer.sign(payload))
        self.sink.publish_key(public_pem(signer.public), signer.key_id)
        self.sink.write(entry.name, entry.to_bytes())
        self._latest = (entry.seq, entry.at)
        log.info("ledger checkpoint written", extra={"entry": entry.n, "kind": entry.kind,
                                                     "seq": entry.seq})
        return entry

    def _deliver(self, entry: Entry) -> None:
        """The other sinks: copies that neither the database's users nor this directory's can
        take back. A failure is logged and kept in `undelivered` for the command that asked;
        the directory already holds the entry, and the bucket gets it with the next one."""
        undelivered: list[str] = []
        if self.bucket is not None:
            try:
                self.upload_pending()
            except Exception as exc:
                from app.audit.s3sink import describe

                message = str(exc) if isinstance(exc, AnchorError) else describe(exc)
                undelivered.append(message)
                log.warning("ledger checkpoint not uploaded; it is retried with the next one",
                            extra={"entry": entry.n, "sink": self.bucket.label,
                                   "error": message})
        if self.settings.ledger_checkpoint_email.strip():
            try:
                email_entry(self.settings, entry, public_pem(self.signer().public))
            except Exception as exc:
                undelivered.append(f"the email to the IRB failed ({exc.__class__.__name__})")
                log.exception("ledger checkpoint could not be emailed", extra={"entry": entry.n})
        self.undelivered = undelivered

    def upload_pending(self) -> list[str]:
        """Every entry of the directory the bucket lacks, uploaded in order (names)."""
        if self.bucket is None:
            return []
        signer = self.signer()
        return self.bucket.upload_pending(self.sink, public_pem(signer.public), signer.key_id)


def email_entry(settings: Settings, entry: Entry, pem: str) -> None:
    from app.notify.channels import Attachment, Message, make_channel

    channel = make_channel(settings)
    what = (f"checkpoint of row {entry.seq}" if entry.kind == "checkpoint"
            else f"RESTORE to row {entry.seq} (forced: {entry.payload.get('forced')})")
    body = (f"wellpanel audit ledger, entry {entry.n}: {what}.\n\n"
            f"Head hash: {entry.head}\nSigned at: {entry.payload['at']}\n"
            f"Key id: {entry.payload['key']}\n\n"
            "Keep this message: it lets anyone check later, with `wellpanel audit verify "
            "--checkpoints DIR` on the saved attachments, that the ledger was not rewritten, "
            "cut or rolled back after this point.\n")
    for address in (a.strip() for a in settings.ledger_checkpoint_email.split(",")):
        if address:
            channel.send(Message(
                to=address, subject=f"[wellpanel] ledger {entry.kind} {entry.n} (row "
                f"{entry.seq})", body=body, language="en",
                attachments=(Attachment(entry.name, entry.to_bytes(), "application/json"),
                             Attachment(PUBLIC_KEY_FILE, pem.encode(),
                                        "application/x-pem-file"))))


# ---- checkpoints after commits ---------------------------------------------------------------

_ANCHORS: weakref.WeakKeyDictionary[Engine, Anchor] = weakref.WeakKeyDictionary()
SESSION_KEY = "wellpanel_ledger_head"  # session.info: (seq, occurred_at) appended in this tx
COMMITTED_KEY = "wellpanel_ledger_committed"  # the same, once committed: checkpoint when ended


def attach(engine: Engine, settings: Settings) -> Anchor:
    """Checkpoint this engine's ledger after commits, as the settings say."""
    anchor = Anchor(settings)
    _ANCHORS[engine] = anchor
    return anchor


def anchor_for(engine: Engine) -> Anchor | None:
    return _ANCHORS.get(engine)


def note_append(session: Session, seq: int, at: datetime) -> None:
    session.info[SESSION_KEY] = (seq, at)


@event.listens_for(Session, "after_rollback")
def _forget(session: Session) -> None:
    session.info.pop(SESSION_KEY, None)


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    # The session still holds its connection here; checkpointing now would take a second one
    # from the pool, and under load every request would wait for a connection another
    # request holds (the pool ran dry in the load test). So only note it, and checkpoint
    # once the transaction has ended and given its connection back.
    appended = session.info.pop(SESSION_KEY, None)
    if appended is not None:
        session.info[COMMITTED_KEY] = appended


@event.listens_for(Session, "after_transaction_end")
def _after_transaction_end(session: Session, transaction: Any) -> None:
    if transaction.parent is not None:
        return
    appended = session.info.pop(COMMITTED_KEY, None)
    if appended is None:
        return
    bind = session.get_bind()
    engine = bind if isinstance(bind, Engine) else getattr(bind, "engine", None)
    anchor = _ANCHORS.get(engine) if engine is not None else None
    if anchor is None or not anchor.due(*appended):
        return
    maybe_checkpoint(engine, anchor, now=appended[1])  # type: ignore[arg-type]


def maybe_checkpoint(engine: Engine, anchor: Anchor | None = None, *, now: datetime
                     ) -> Entry | None:
    """A checkpoint if one is due; never raises (the caller's work is already committed)."""
    anchor = anchor or _ANCHORS.get(engine)
    if anchor is None:
        return None
    try:
        # Only reads the database: it must not hold SQLite's write lock while it signs and
        # writes the checkpoint file.
        with engine.connect() as connection:
            connection.execution_options(**{READ_ONLY: True})
            return anchor.checkpoint(connection, now=now, only_if_due=True, background=True)
    except Exception:
        log.exception("ledger checkpoint failed")
        return None

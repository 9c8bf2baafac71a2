"""Settings from WELLPANEL_* environment variables (and an optional .env file)."""

from __future__ import annotations

import re
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SUPPORTED_LANGUAGES = ("en", "de", "pt-BR", "zh-CN")
_DEV_SECRET = "dev-insecure-change-me"  # noqa: S105 - refused in production below
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
_S3_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


class Settings(BaseSettings):
    """Everything an operator can configure. Each field maps to WELLPANEL_<NAME>."""

    model_config = SettingsConfigDict(
        env_prefix="WELLPANEL_", env_file=".env", env_file_encoding="utf-8", extra="ignore",
        hide_input_in_errors=True,  # a refused value may hold a password: never echo it
    )

    database_url: str = Field(
        default="sqlite:///./wellpanel.db",
        description="SQLAlchemy URL; sqlite:///path or postgresql+psycopg://user:pw@host/db",
    )
    migration_database_url: str | None = Field(
        default=None,
        description="PostgreSQL: the tables' owner, used by `wellpanel db upgrade` (which then "
        "grants the user of WELLPANEL_DATABASE_URL only what the app needs), `db grant-app-role` "
        "and `restore`; unset: WELLPANEL_DATABASE_URL (SQLite has no roles)")
    base_url: str = Field(default="http://127.0.0.1:8000", description="Public URL for links")
    secret_key: str = Field(
        default=_DEV_SECRET,
        min_length=16,
        description="Signs session cookies and keys IRB pseudonyms; set a long random value",
    )
    environment: Literal["production", "demo", "test"] = Field(
        default="production", description="demo shows magic links on screen; test relaxes cookies"
    )
    surveys_dir: Path = Field(default=PROJECT_ROOT / "surveys", description="Instruments, studies")
    default_study: str = Field(default="keep4o-panel", description="Study key served at /join")
    export_dir: Path | None = Field(
        default=None,
        description="Where researcher exports started from the API are kept (one zip per "
        "job); default: exports/ next to the SQLite database, else ./exports",
    )
    max_body_bytes: int = Field(default=65_536, ge=1024, description="Larger request bodies: 413")
    magic_link_ttl_days: int = Field(
        default=7, ge=1, le=30,
        description="Lifetime of an emailed sign-in link (used once; a newer link replaces it)")
    session_ttl_hours: int = Field(default=24 * 14, ge=1, description="Browser session lifetime")
    staff_token_ttl_days: int = Field(
        default=90, ge=1, le=366,
        description="Lifetime of a staff token from when it was issued (`wellpanel staff rotate` "
        "issues a new one); an expired token opens neither the API nor the staff pages")
    staff_totp_roles: str = Field(
        default="",
        description="Staff roles that must give a TOTP code (pyotp) after their token at the "
        "staff login, comma-separated, e.g. researcher,irb,admin; empty: none. Enroll with "
        "`wellpanel staff totp-enroll NAME`")

    smtp_host: str = Field(default="localhost", description="SMTP server")
    smtp_port: int = Field(default=25, ge=1, le=65535, description="SMTP port")
    smtp_starttls: bool = Field(default=False, description="Upgrade the connection with STARTTLS")
    smtp_username: str | None = Field(default=None, description="SMTP login, if required")
    smtp_password: str | None = Field(default=None, description="SMTP password, if required")
    smtp_connect_timeout: float = Field(
        default=10.0, gt=0, le=120,
        description="Seconds to wait for the SMTP server to accept the connection and greet")
    smtp_send_timeout: float = Field(
        default=30.0, gt=0, le=600,
        description="Seconds to wait for each SMTP reply while a message is sent; a server "
        "that accepts and never answers costs at most this, then the message is retried")
    outbox_lease_seconds: float = Field(
        default=300.0, gt=0, le=86400,
        description="How long a sender holds a claimed outbox message; a message whose sender "
        "died is sent by another after this. Must exceed the two SMTP timeouts together")
    job_lease_seconds: float = Field(
        default=60.0, ge=1, le=3600,
        description="How long a process holds a background job (export, analysis) without a "
        "heartbeat; its heartbeat renews the lease every quarter of this, and a job whose "
        "process died is taken over by another process after this")
    job_poll_seconds: float = Field(
        default=5.0, gt=0, le=600,
        description="How often each process looks for queued jobs and expired leases")
    job_max_attempts: int = Field(
        default=3, ge=1, le=20,
        description="Attempts of one background job (failures and lost leases) before it "
        "ends failed")
    mail_from: str = Field(default="wellpanel <study@wellpanel.invalid>",
                           description="Sender of messages to participants")
    notify_channel: Literal["smtp", "console"] = Field(
        default="smtp", description="console prints messages to the log instead of sending"
    )
    bounce_webhook_secret: str | None = Field(
        default=None, min_length=16,
        description="Shared secret of the bounce webhook (POST /api/v1/notify/bounces, sent as "
        "Authorization: Bearer <secret>); unset: the webhook is off")

    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR")
    log_json: bool = Field(default=True, description="Structured JSON logs")

    rate_limits_enabled: bool = Field(
        default=True, description="Limit enrollment, magic-link and staff-login attempts"
    )
    rate_limit_enroll_per_ip: str = Field(
        default="30/minute;300/day", description="Enrollments (API and /join form) per client IP"
    )
    rate_limit_enroll_per_email: str = Field(
        default="5/hour;20/day", description="Enrollments naming the same email address"
    )
    rate_limit_magic_link_per_ip: str = Field(
        default="30/minute;300/day", description="Magic links opened (/p/login/...) per client IP"
    )
    rate_limit_staff_login_per_ip: str = Field(
        default="10/minute;100/day", description="Staff login attempts per client IP"
    )
    rate_limit_auth_failures_per_ip: str = Field(
        default="30/minute;300/day",
        description="Failed authentications (401 on any route) per client IP before 429",
    )
    metrics_token: str | None = Field(
        default=None,
        description="Bearer token for /metrics; unset: /metrics answers loopback clients only",
    )
    ledger_dir: Path | None = Field(
        default=None,
        description="Where signed checkpoints of the audit ledger are written (outside the "
        "database); default: <name>.ledger/ beside a SQLite file, for PostgreSQL "
        "$XDG_DATA_HOME/wellpanel/ledger/<host>-<port>-<database>/ (~/.local/share if unset)")
    ledger_key_file: Path | None = Field(
        default=None,
        description="The Ed25519 key that signs checkpoints, created on first use (mode 0600); "
        "default: <ledger dir>-signing-key.pem beside the ledger directory (never inside it)")
    ledger_checkpoint_rows: int = Field(
        default=1000, ge=1, description="A checkpoint after this many new ledger rows")
    ledger_checkpoint_minutes: int = Field(
        default=60, ge=1,
        description="... or when this many minutes passed since the last one and rows were added")
    ledger_checkpoint_email: str = Field(
        default="",
        description="Also email each checkpoint (SMTP settings above) to these addresses, "
        "comma-separated, e.g. the IRB's; empty: directory only")
    ledger_s3_url: str | None = Field(
        default=None,
        description="Also write each checkpoint to this S3 bucket, s3://BUCKET/PREFIX, with "
        "Object Lock retention (the bucket must have Object Lock and versioning enabled, or it "
        "is refused); credentials come from boto3's usual sources (AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, an instance role), never from here; unset: no bucket")
    ledger_s3_endpoint_url: str | None = Field(
        default=None,
        description="An S3-compatible server instead of AWS, e.g. http://minio:9000")
    ledger_s3_region: str | None = Field(
        default=None, description="The bucket's region, e.g. eu-central-1; unset: boto3's own")
    ledger_s3_lock_mode: Literal["COMPLIANCE", "GOVERNANCE"] = Field(
        default="COMPLIANCE",
        description="Object Lock mode of each checkpoint: COMPLIANCE (nobody, not even the "
        "account's root, can delete it or shorten its retention) or GOVERNANCE (whoever holds "
        "s3:BypassGovernanceRetention can)")
    ledger_s3_retention_days: int = Field(
        default=3650, ge=1, le=36500,
        description="How long each checkpoint object is locked, in days")
    allowed_hosts: str = Field(
        default="",
        description="Host names the server answers to, comma-separated (`*.example.org` for "
        "subdomains, `*` for any); empty: the host of the base URL plus localhost, 127.0.0.1 "
        "and ::1 (health checks). Any other Host header gets 400")
    api_docs: bool = Field(
        default=False,
        description="Serve the API documentation (/docs, /redoc, /openapi.json) in production "
        "too; outside production it is always served")

    @field_validator("database_url", "migration_database_url")
    @classmethod
    def _known_database(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("sqlite", "postgresql")):
            raise ValueError("must be a sqlite:// or postgresql+psycopg:// URL")
        if value.startswith("postgresql://"):
            # psycopg 3 is the only PostgreSQL driver we ship.
            value = "postgresql+psycopg://" + value.removeprefix("postgresql://")
        return value

    @field_validator(
        "rate_limit_enroll_per_ip", "rate_limit_enroll_per_email",
        "rate_limit_magic_link_per_ip", "rate_limit_staff_login_per_ip",
        "rate_limit_auth_failures_per_ip",
    )
    @classmethod
    def _rate_limit_notation(cls, value: str) -> str:
        from limits import parse_many

        try:
            parse_many(value)
        except ValueError as exc:
            raise ValueError("use the notation N/period, e.g. 10/minute;100/day") from exc
        return value

    @field_validator("staff_totp_roles")
    @classmethod
    def _known_staff_roles(cls, value: str) -> str:
        from app.auth.models import STAFF_ROLES

        roles = [r.strip() for r in value.split(",") if r.strip()]
        unknown = [r for r in roles if r not in STAFF_ROLES]
        if unknown:
            raise ValueError(f"unknown role {unknown[0]!r}; roles are {', '.join(STAFF_ROLES)}")
        return ",".join(dict.fromkeys(roles))

    @field_validator("ledger_s3_url")
    @classmethod
    def _s3_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parts = urlsplit(value.strip())
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError("must look like s3://BUCKET or s3://BUCKET/PREFIX")
        if parts.query or parts.fragment or "@" in parts.netloc:
            raise ValueError("must be s3://BUCKET/PREFIX, without credentials, ? or #")
        if not _S3_BUCKET.fullmatch(parts.netloc) or ".." in parts.netloc:
            raise ValueError(f"{parts.netloc!r} is not a valid S3 bucket name (3 to 63 "
                             "lowercase letters, digits, dots and hyphens)")
        prefix = parts.path.strip("/")
        return f"s3://{parts.netloc}/{prefix}/" if prefix else f"s3://{parts.netloc}/"

    @field_validator("ledger_s3_endpoint_url")
    @classmethod
    def _s3_endpoint(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL, e.g. http://minio:9000")
        if parts.username or parts.password:
            raise ValueError("must not hold credentials; set AWS_ACCESS_KEY_ID and "
                             "AWS_SECRET_ACCESS_KEY in the environment instead")
        return value.strip().rstrip("/")

    @field_validator("ledger_s3_lock_mode", mode="before")
    @classmethod
    def _s3_lock_mode_upper(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @model_validator(mode="after")
    def _lease_outlasts_a_send(self) -> Settings:
        # A sender renews its lease right before each message; a send that outlasted the lease
        # could meet a second sender of the same message.
        if self.outbox_lease_seconds <= self.smtp_connect_timeout + self.smtp_send_timeout:
            raise ValueError("WELLPANEL_OUTBOX_LEASE_SECONDS must exceed "
                             "WELLPANEL_SMTP_CONNECT_TIMEOUT + WELLPANEL_SMTP_SEND_TIMEOUT")
        return self

    @model_validator(mode="after")
    def _s3_settings_need_a_bucket(self) -> Settings:
        if self.ledger_s3_url is None and (self.ledger_s3_endpoint_url or self.ledger_s3_region):
            raise ValueError("WELLPANEL_LEDGER_S3_ENDPOINT_URL or WELLPANEL_LEDGER_S3_REGION is "
                             "set, but WELLPANEL_LEDGER_S3_URL (s3://BUCKET/PREFIX) is not")
        return self

    @model_validator(mode="after")
    def _no_default_secret_in_production(self) -> Settings:
        if self.environment == "production" and self.secret_key == _DEV_SECRET:
            raise ValueError("WELLPANEL_SECRET_KEY must be set in production")
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def owner_database_url(self) -> str:
        """Where schema changes and restores connect: the owner's URL if one is set."""
        return self.migration_database_url or self.database_url

    @property
    def staff_token_ttl(self) -> timedelta:
        return timedelta(days=self.staff_token_ttl_days)

    @property
    def totp_roles(self) -> frozenset[str]:
        return frozenset(r for r in self.staff_totp_roles.split(",") if r)

    @property
    def secure_cookies(self) -> bool:
        return self.environment == "production"

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    @property
    def public_origin(self) -> str:
        """scheme://host[:port] of the base URL, as a browser sends it in Origin."""
        parts = urlsplit(self.base_url)
        default_port = {"http": 80, "https": 443}.get(parts.scheme)
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        port = f":{parts.port}" if parts.port and parts.port != default_port else ""
        return f"{parts.scheme}://{host}{port}".lower()

    @property
    def trusted_hosts(self) -> list[str]:
        """allowed_hosts, or by default the base URL's host and the loopback names."""
        listed = [h.strip().lower() for h in self.allowed_hosts.split(",") if h.strip()]
        return listed or [urlsplit(self.base_url).hostname or "", *LOOPBACK_HOSTS]


@lru_cache
def get_settings() -> Settings:
    return Settings()

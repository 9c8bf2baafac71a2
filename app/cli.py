"""The `wellpanel` command."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from sqlmodel import Session

from analysis import cli as analysis_cli
from app.audit import cli as audit_cli
from app.cli_support import fail, load_settings, parse_now
from app.config import Settings
from app.export import cli as export_cli
from app.notify import cli as notify_cli
from app.ops import cli as ops_cli
from app.participants import cli as participants_cli
from app.scheduling import cli as scheduling_cli
from app.simulate import cli as simulate_cli

app = typer.Typer(help="wellpanel: consent-gated longitudinal wellbeing studies.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
study_app = typer.Typer(help="Study protocols.", no_args_is_help=True)
staff_app = typer.Typer(help="Staff accounts.", no_args_is_help=True)
audit_app = typer.Typer(help="The audit ledger.", no_args_is_help=True)
scheduler_app = typer.Typer(help="The dispatcher: opens surveys, sends invitations.",
                            no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(study_app, name="study")
app.add_typer(staff_app, name="staff")
app.add_typer(audit_app, name="audit")
audit_cli.register(audit_app)  # audit verify, checkpoint, key
app.add_typer(scheduler_app, name="scheduler")
analysis_cli.register(app)  # analyze, power
export_cli.register(app)  # export panel
notify_cli.register(app)  # mail read-bounces
ops_cli.register(app)  # backup, restore
participants_cli.register(app)  # participants erase-expired-contacts
scheduling_cli.register(app)  # compliance
simulate_cli.register(app)  # simulate


T = TypeVar("T")


def _settings() -> Settings:
    return load_settings()


def _session(settings: Settings) -> Session:
    from app.audit import anchor
    from app.db import make_engine

    engine = make_engine(settings.database_url)
    anchor.attach(engine, settings)  # ledger rows written by a command are checkpointed too
    return Session(engine, expire_on_commit=False)


def _fail(message: str, code: int = 1) -> None:
    fail(message, code)


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply migrations up to REVISION (default: the newest) as the tables' owner
    (WELLPANEL_MIGRATION_DATABASE_URL if set); then, if the app connects as another
    PostgreSQL user, grant that user the app's privileges (see `db grant-app-role`)."""
    from app import migrate
    from app.privileges import needs_app_role_grant

    settings = _settings()
    migrate.upgrade(settings.owner_database_url, revision)
    typer.echo(f"database at {revision}")
    role = needs_app_role_grant(settings.database_url, settings.owner_database_url)
    if role is not None:
        _grant_app_role(settings, role)


@db_app.command("downgrade")
def db_downgrade(revision: str) -> None:
    """Revert migrations down to REVISION (e.g. -1 or base), as the tables' owner."""
    from app import migrate

    migrate.downgrade(_settings().owner_database_url, revision)
    typer.echo(f"database at {revision}")


@db_app.command("grant-app-role")
def db_grant_app_role(role: Annotated[str, typer.Argument(
        help="The app's PostgreSQL role (default: the user of WELLPANEL_DATABASE_URL)")] = "",
) -> None:
    """PostgreSQL: as the tables' owner (WELLPANEL_MIGRATION_DATABASE_URL), give ROLE only
    SELECT and INSERT on the append-only tables (ledger, consent), SELECT on alembic_version,
    ordinary DML on the rest and the sequences; no TRUNCATE, no ALTER, no CREATE."""
    from app.privileges import database_user

    settings = _settings()
    role = role or database_user(settings.database_url) or ""
    if not role:
        _fail("name the role (WELLPANEL_DATABASE_URL names no user)", 2)
    _grant_app_role(settings, role)


def _grant_app_role(settings: Settings, role: str) -> None:
    from app.db import make_engine
    from app.privileges import PrivilegeError, grant_app_role

    engine = make_engine(settings.owner_database_url)
    try:
        with engine.begin() as conn:
            done = grant_app_role(conn, role)
    except PrivilegeError as exc:
        _fail(exc.message, 2)
        return
    finally:
        engine.dispose()
    typer.echo(f"role {role}: SELECT, INSERT on {', '.join(done.append_only)} (append-only); "
               f"SELECT on {', '.join(done.read_only)}; SELECT, INSERT, DELETE on "
               f"{', '.join(done.no_update)}; SELECT, INSERT, UPDATE, DELETE on "
               f"{len(done.read_write)} other tables")


StudyFile = Annotated[Path, typer.Argument(exists=True, dir_okay=False)]


@study_app.command("diff")
def study_diff(file: StudyFile,
               as_json: Annotated[bool, typer.Option("--json", help="JSON output")] = False
               ) -> None:
    """Show what loading FILE would change (instruments, schedule, consent, the rest), checked
    as a load checks it; writes nothing."""
    from app.core.errors import AppError
    from app.studies import diff as study_diffs
    from app.studies import service as studies

    settings = _settings()
    with _session(settings) as session:
        try:
            diff = studies.preview_load(session, file, settings.surveys_dir)
        except AppError as exc:
            _fail(exc.message)
            return
    typer.echo(diff.model_dump_json(indent=2) if as_json else study_diffs.as_text(diff))


@study_app.command("load")
def study_load(file: StudyFile,
               dry_run: Annotated[bool, typer.Option(
                   "--dry-run", help="only show what would change (as `study diff`)")] = False
               ) -> None:
    """Load a study file; unchanged content is a no-op, changed content a new version."""
    from app.core.errors import AppError
    from app.studies import service as studies

    if dry_run:
        study_diff(file)
        return
    settings = _settings()
    with _session(settings) as session:
        try:
            result = studies.load_study(session, file, settings.surveys_dir, actor="cli")
        except AppError as exc:
            _fail(exc.message)
            return
    state = "new protocol version" if result.created else "unchanged"
    typer.echo(f"{result.study_key}: protocol version {result.protocol_version} ({state})"
               + (f"; published consent {', '.join(result.new_consent_versions)}"
                  if result.new_consent_versions else ""))


@staff_app.command("add")
def staff_add(
    name: str,
    role: Annotated[str, typer.Option(help="researcher, irb, admin or safety")] = "researcher",
) -> None:
    """Create a staff member and print their token once (only its hash is stored)."""
    from app.auth import service as auth
    from app.core.errors import AppError

    with _session(_settings()) as session:
        try:
            token = auth.add_staff(session, name, role)
        except AppError as exc:
            _fail(exc.message)
            return
    typer.echo(f"staff member {name!r} ({role}) created. Token (shown once, keep it safe):")
    typer.echo(token)


def _staff_change(name: str, change: Callable[..., T]) -> T:
    """Run one change to the member called NAME as `cli` at the current time, commit, and
    return its result; a refusal (unknown name, last admin...) is an error message, exit 1."""
    from app.auth import service as auth
    from app.core.errors import AppError
    from app.db import utcnow

    settings = _settings()
    with _session(settings) as session:
        try:
            member = auth.staff_by_name(session, name)
            result = change(session, member, settings, utcnow())
        except AppError as exc:
            session.rollback()
            fail(exc.message, 1)
        session.commit()
    return result


@staff_app.command("list")
def staff_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List staff: role, status, created, expires, revoked, last used, TOTP (never tokens)."""
    from app.auth import service as auth
    from app.db import utcnow

    settings = _settings()
    with _session(settings) as session:
        members = auth.list_staff(session, now=utcnow(), ttl=settings.staff_token_ttl)
    if as_json:
        typer.echo(json.dumps([m.model_dump(mode="json") for m in members], indent=2))
        return

    def day(moment: datetime | None) -> str:
        return moment.strftime("%Y-%m-%d %H:%M") if moment else "-"

    rows = [("NAME", "ROLE", "STATUS", "CREATED", "EXPIRES", "REVOKED", "LAST USED", "TOTP")]
    rows += [(m.name, m.role, m.status, day(m.created_at), day(m.expires_at), day(m.revoked_at),
              day(m.last_used_at), "yes" if m.second_factor else "no") for m in members]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        typer.echo("  ".join(cells).rstrip())
    typer.echo(f"(times in UTC; tokens last {settings.staff_token_ttl_days} days from issue)")


@staff_app.command("revoke")
def staff_revoke(name: str) -> None:
    """End NAME's token and every staff session of theirs at once (final; audited)."""
    from app.auth import service as auth

    ended = _staff_change(name, lambda session, member, settings, now: auth.revoke_staff(
        session, member, actor="cli", now=now, ttl=settings.staff_token_ttl))
    typer.echo(f"staff member {name!r} revoked; {ended} browser session(s) ended.")


@staff_app.command("rotate")
def staff_rotate(name: str) -> None:
    """Issue NAME a new token (printed once); the old one and its sessions stop working."""
    from app.auth import service as auth

    token = _staff_change(name, lambda session, member, settings, now: auth.rotate_staff_token(
        session, member, actor="cli", now=now, ttl=settings.staff_token_ttl))
    typer.echo(f"new token for {name!r} (shown once, keep it safe; the old one no longer "
               "works):")
    typer.echo(token)


@staff_app.command("totp-enroll")
def staff_totp_enroll(name: str) -> None:
    """Give NAME a TOTP second factor; prints its provisioning URI once (replaces an older one).

    Roles named in WELLPANEL_STAFF_TOTP_ROLES must give its code after their token at login."""
    from app.auth import service as auth

    uri = _staff_change(name, lambda session, member, settings, now: auth.enroll_totp(
        session, member, secret_key=settings.secret_key, actor="cli", now=now))
    typer.echo(f"second factor for {name!r}: add this to an authenticator app (shown once):")
    typer.echo(uri)


@staff_app.command("totp-remove")
def staff_totp_remove(name: str) -> None:
    """Remove NAME's second factor (e.g. a lost phone); enroll a new one with totp-enroll."""
    from app.auth import service as auth

    _staff_change(name, lambda session, member, settings, now: auth.remove_totp(
        session, member, actor="cli", now=now))
    typer.echo(f"second factor of {name!r} removed.")


@scheduler_app.command("run")
def scheduler_run(interval: Annotated[int, typer.Option(help="seconds between ticks")] = 60
                  ) -> None:
    """Run the dispatcher every INTERVAL seconds until stopped (the compose `scheduler`)."""
    from app.db import make_engine
    from app.logging_setup import configure_logging
    from app.notify.channels import make_channel
    from app.scheduling.runner import run_forever

    settings = _settings()
    configure_logging(settings.log_level, settings.log_json)
    run_forever(make_engine(settings.database_url), settings, make_channel(settings), interval)


@scheduler_app.command("tick")
def scheduler_tick(
    now: Annotated[str | None, typer.Option(help="ISO time with offset, e.g. 2026-12-01T09:00Z")]
    = None,
) -> None:
    """Run one dispatcher tick at NOW (default: the current time) and print what it did."""
    from app.db import make_engine
    from app.notify.channels import make_channel
    from app.scheduling.dispatcher import tick

    settings = _settings()
    moment = parse_now(now)
    report = tick(make_engine(settings.database_url), settings, make_channel(settings),
                  now=moment)
    typer.echo(json.dumps({"now": moment.isoformat()} | report.__dict__))


@app.command("serve")
def serve(host: str = "127.0.0.1", port: int = 8000, workers: int = 1) -> None:
    """Run the API and participant pages with uvicorn."""
    import uvicorn

    from app.logging_setup import configure_logging

    settings = _settings()
    configure_logging(settings.log_level, settings.log_json)
    uvicorn.run("app.asgi:app", host=host, port=port, workers=workers, log_config=None,
                proxy_headers=True)


@app.command("demo")
def demo(
    host: str = "127.0.0.1",
    port: int = 8000,
    database: Annotated[Path, typer.Option(help="SQLite file, recreated")] = Path("demo.db"),
    seed: Annotated[bool, typer.Option(
        "--seed/--no-seed", help="Fill the study with simulated participants (wellpanel "
        "simulate) so the staff console has something to show")] = True,
) -> None:
    """A fresh SQLite database with the default study (seeded with simulated participants
    unless --no-seed), staff tokens, and the server running."""
    import uvicorn

    from app import migrate
    from app.auth import service as auth
    from app.main import create_app
    from app.studies import service as studies

    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    settings = Settings(database_url=f"sqlite:///{database}", environment="demo",
                        notify_channel="console", base_url=f"http://{host}:{port}",
                        log_json=False)
    migrate.upgrade(settings.database_url)
    with _session(settings) as session:
        study_file = settings.surveys_dir / "studies" / f"{settings.default_study}.yaml"
        studies.load_study(session, study_file, settings.surveys_dir, actor="demo")
    seeded = _seed_demo(settings) if seed else "not seeded (--no-seed)"
    with _session(settings) as session:
        researcher = auth.add_staff(session, "demo-researcher", "researcher")
        irb = auth.add_staff(session, "demo-irb", "irb")
        admin = auth.add_staff(session, "demo-admin", "admin")
    typer.echo(f"""
wellpanel demo is starting on {settings.base_url}

  Join the study as a participant:  {settings.base_url}/join
  Demo mailbox (links 'sent'):      {settings.base_url}/demo/mailbox
  Demo study:                       {seeded}
  Staff login:                      {settings.base_url}/staff/login
     researcher token: {researcher}
     irb token:        {irb}
     admin token:      {admin}

Press Ctrl+C to stop.
""")
    from app.scheduling.runner import start_in_background

    application = create_app(settings)
    start_in_background(application.state.engine, settings, application.state.channel, 30)
    uvicorn.run(application, host=host, port=port, log_level="warning")


DEMO_PARTICIPANTS, DEMO_WAVES = 40, 6


def _seed_demo(settings: Settings) -> str:
    """A modest simulated study (the empty demo database only), so the console has data."""
    from app.db import make_engine
    from app.simulate.service import SimulateOptions, simulate

    engine = make_engine(settings.database_url)
    try:
        result = simulate(engine, SimulateOptions(participants=DEMO_PARTICIPANTS,
                                                  waves=DEMO_WAVES, seed=0),
                          surveys_dir=settings.surveys_dir, default_study=settings.default_study)
    finally:
        engine.dispose()
    return (f"{result.participants} simulated participants x {DEMO_WAVES} waves, "
            f"{result.responses} responses ({result.seconds:.1f} s; addresses @example.invalid, "
            "never contacted)")


def main() -> None:
    app()


if __name__ == "__main__":
    main()

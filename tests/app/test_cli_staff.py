"""`wellpanel staff list|revoke|rotate|totp-enroll`, run as a real process on both databases
(on the real clock, as the command runs: nothing here uses the fixed test clock)."""

from __future__ import annotations

import json
from datetime import timedelta

import pyotp
from sqlmodel import Session, select

from app.audit.models import AuditEvent
from app.auth import service as auth
from app.auth import totp
from app.auth.models import StaffMember
from app.db import utcnow
from tests.app.test_cli import run

TTL = timedelta(days=90)
CLI_SECRET = "cli-test-secret-0123"  # what tests.app.test_cli.run gives the command


def _token(db_url: str, name: str, role: str) -> str:
    result = run(db_url, "staff", "add", name, "--role", role)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def _member(engine, name: str) -> StaffMember:  # type: ignore[no-untyped-def]
    with Session(engine) as s:
        return s.exec(select(StaffMember).where(StaffMember.name == name)).one()


def test_list_shows_each_member_and_never_a_token(db_url, engine):
    alice = _token(db_url, "alice", "researcher")
    root = _token(db_url, "root", "admin")
    listed = run(db_url, "staff", "list")
    assert listed.returncode == 0
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["NAME", "ROLE", "STATUS", "CREATED", "EXPIRES", "REVOKED",
                              "LAST", "USED", "TOTP"]
    assert rows[0].split()[:3] == ["alice", "researcher", "active"]
    assert rows[1].split()[:3] == ["root", "admin", "active"]
    as_json = json.loads(run(db_url, "staff", "list", "--json").stdout)
    assert [m["name"] for m in as_json] == ["alice", "root"]
    assert all("token" not in key for m in as_json for key in m)
    for token in (alice, root, _member(engine, "alice").token_hash):
        assert token not in listed.stdout and token not in json.dumps(as_json)
    expires = as_json[0]["expires_at"][:10]
    assert expires == (_member(engine, "alice").created_at + TTL).date().isoformat()


def test_rotate_prints_a_new_token_and_ends_the_old_one_with_its_sessions(db_url, engine):
    old = _token(db_url, "bob", "irb")
    with Session(engine) as s:
        browser, _ = auth.start_staff_session(s, _member(engine, "bob"), timedelta(hours=8),
                                              now=utcnow())
        s.commit()
    rotated = run(db_url, "staff", "rotate", "bob")
    assert rotated.returncode == 0 and "shown once" in rotated.stdout
    new = rotated.stdout.strip().splitlines()[-1]
    assert new != old
    with Session(engine) as s:
        assert auth.staff_for_token(s, old, now=utcnow(), ttl=TTL) is None
        assert auth.staff_for_token(s, new, now=utcnow(), ttl=TTL).name == "bob"  # type: ignore[union-attr]
        assert auth.staff_for_session(s, browser, now=utcnow(), token_ttl=TTL) is None
        row = s.exec(select(AuditEvent).where(AuditEvent.action == "staff.rotate")).one()
    assert row.actor == "cli" and row.details["sessions_ended"] == 1
    assert old not in rotated.stdout and new not in json.dumps(row.details)


def test_revoke_ends_token_and_sessions_is_final_and_keeps_an_admin(db_url, engine):
    token = _token(db_url, "carol", "researcher")
    _token(db_url, "admin-one", "admin")
    with Session(engine) as s:
        browser, _ = auth.start_staff_session(s, _member(engine, "carol"), timedelta(hours=8),
                                              now=utcnow())
        s.commit()
    revoked = run(db_url, "staff", "revoke", "carol")
    assert revoked.returncode == 0 and "1 browser session(s) ended" in revoked.stdout
    with Session(engine) as s:
        assert auth.staff_for_token(s, token, now=utcnow(), ttl=TTL) is None
        assert auth.staff_for_session(s, browser, now=utcnow(), token_ttl=TTL) is None
        row = s.exec(select(AuditEvent).where(AuditEvent.action == "staff.revoke")).one()
    assert _member(engine, "carol").revoked_at is not None
    assert row.actor == "cli" and row.target == f"staff:{_member(engine, 'carol').id}"
    assert "revoked" in run(db_url, "staff", "list").stdout.splitlines()[2]

    again = run(db_url, "staff", "rotate", "carol")
    assert again.returncode == 1 and "revocation is final" in again.stderr
    last = run(db_url, "staff", "revoke", "admin-one")
    assert last.returncode == 1 and "last active admin" in last.stderr
    assert _member(engine, "admin-one").revoked_at is None
    unknown = run(db_url, "staff", "revoke", "nobody")
    assert unknown.returncode == 1 and "no staff member called 'nobody'" in unknown.stderr
    assert "Traceback" not in last.stderr + unknown.stderr + again.stderr


def test_totp_enroll_prints_the_provisioning_uri_once_and_stores_the_secret_sealed(
        db_url, engine):
    _token(db_url, "dana", "irb")
    enrolled = run(db_url, "staff", "totp-enroll", "dana")
    assert enrolled.returncode == 0
    uri = enrolled.stdout.strip().splitlines()[-1]
    secret = pyotp.parse_uri(uri).secret
    stored = _member(engine, "dana").totp_secret
    assert stored and secret not in stored
    assert totp.unseal(stored, CLI_SECRET) == secret
    assert run(db_url, "staff", "list").stdout.splitlines()[1].split()[-1] == "yes"
    assert secret not in run(db_url, "staff", "list", "--json").stdout
    removed = run(db_url, "staff", "totp-remove", "dana")
    assert removed.returncode == 0 and _member(engine, "dana").totp_secret is None

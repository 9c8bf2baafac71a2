"""Tokens: participant magic links and sessions, staff API tokens and browser sessions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import bindparam, func, or_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, select, update

from app.auth.models import (
    STAFF_ROLES,
    ParticipantCredential,
    StaffLoginChallenge,
    StaffLoginFailure,
    StaffMember,
    StaffMemberPublic,
    StaffSession,
)
from app.core.errors import Conflict, NotFound, ValidationFailed
from app.core.security import hash_token, new_token
from app.db import utcnow
from app.participants.models import Contact, Participant

# A participant's credentials: an emailed `link` is used once, to start a `session` (browser
# cookie, or a token for an API client); an `api` token is made from a session for a program.
# Only sessions and API tokens open the API and the pages; a link opens nothing but itself.
REQUEST_KINDS = ("session", "api")
KINDS = ("link", *REQUEST_KINDS)


def issue_participant_token(
    session: Session, participant_id: str, kind: str, ttl: timedelta, *, now: datetime
) -> str:
    """A new credential of `kind`; a new link replaces the participant's unused older ones."""
    if kind == "link":
        _revoke(session, participant_id, ("link",), now)
    token = new_token()
    session.add(ParticipantCredential(
        participant_id=participant_id, kind=kind, token_hash=hash_token(token),
        created_at=now, expires_at=now + ttl))
    return token


def redeem_link(session: Session, token: str, session_ttl: timedelta, *, now: datetime
                ) -> tuple[Participant, str] | None:
    """Use an emailed link once: mark it used and start a session. None for a link that is
    unknown, expired, used or replaced (or for any other kind of token). The caller commits."""
    credential = session.exec(select(ParticipantCredential).where(
        ParticipantCredential.token_hash == hash_token(token))).first()
    if (credential is None or credential.kind != "link" or credential.revoked_at is not None
            or credential.expires_at <= now):
        return None
    used = session.exec(update(ParticipantCredential)  # type: ignore[call-overload]
                        .where(col(ParticipantCredential.id) == credential.id,
                               col(ParticipantCredential.revoked_at).is_(None))
                        .values(revoked_at=now))
    if used.rowcount != 1:  # the same link opened twice at once: only one wins
        return None
    participant = session.get(Participant, credential.participant_id)
    if participant is None:
        return None
    return participant, issue_participant_token(session, participant.id, "session",
                                                session_ttl, now=now)


def revoke_all(session: Session, participant_id: str, *, now: datetime) -> dict[str, int]:
    """End every credential of the participant (withdrawal, erasure); the caller commits."""
    return {f"{kind}s_revoked": _revoke(session, participant_id, (kind,), now)
            for kind in KINDS}


def _revoke(session: Session, participant_id: str, kinds: tuple[str, ...], now: datetime
            ) -> int:
    result = session.exec(update(ParticipantCredential)  # type: ignore[call-overload]
                          .where(col(ParticipantCredential.participant_id) == participant_id,
                                 col(ParticipantCredential.kind).in_(kinds),
                                 col(ParticipantCredential.revoked_at).is_(None),
                                 col(ParticipantCredential.expires_at) > now)
                          .values(revoked_at=now))
    return int(result.rowcount)


def api_tokens(session: Session, participant_id: str, *, now: datetime
               ) -> list[ParticipantCredential]:
    """The participant's live API tokens (for listing; never the token itself)."""
    return list(session.exec(select(ParticipantCredential).where(
        ParticipantCredential.participant_id == participant_id,
        ParticipantCredential.kind == "api", col(ParticipantCredential.revoked_at).is_(None),
        col(ParticipantCredential.expires_at) > now)
        .order_by(col(ParticipantCredential.id))).all())


def revoke_api_token(session: Session, participant_id: str, token_id: int, *, now: datetime
                     ) -> bool:
    """Revoke one of the participant's own API tokens; False if there is no such live one."""
    result = session.exec(update(ParticipantCredential)  # type: ignore[call-overload]
                          .where(col(ParticipantCredential.id) == token_id,
                                 col(ParticipantCredential.participant_id) == participant_id,
                                 col(ParticipantCredential.kind) == "api",
                                 col(ParticipantCredential.revoked_at).is_(None))
                          .values(revoked_at=now))
    return bool(result.rowcount)


def participant_for_token(
    session: Session, token: str, *, now: datetime
) -> tuple[Participant, ParticipantCredential] | None:
    found = participant_request_context(session, token, now=now)
    return None if found is None else (found.participant, found.credential)


@lru_cache(maxsize=1)
def _request_context_query() -> Any:
    # Built once: composing the consent subqueries costs more CPU than running them.
    from app.consent import service as consent

    gate = consent.state_columns(Participant.id, Participant.study_id)
    return (select(ParticipantCredential, Participant, Contact.participant_id,
                   Contact.verified_at, *gate)
            .join(Participant, col(Participant.id) == ParticipantCredential.participant_id)
            .outerjoin(Contact, col(Contact.participant_id) == Participant.id)
            .where(ParticipantCredential.token_hash == bindparam("token_hash")))


@dataclass(frozen=True)
class TokenLookup:
    participant: Participant
    credential: ParticipantCredential
    has_contact: bool
    contact_verified_at: datetime | None
    consent_row: tuple[Any, ...]  # consent.state_columns() values, for the gate


def participant_request_context(session: Session, token: str, *, now: datetime
                                ) -> TokenLookup | None:
    """What every participant request needs, in one round trip: the token's credential, its
    participant, whether their contact is verified, and the consent gate's inputs."""
    found = session.exec(_request_context_query(),  # type: ignore[call-overload]
                         params={"token_hash": hash_token(token)}).first()
    if found is None:
        return None
    credential, participant, contact_id, verified_at, *consent_row = found
    if (credential.kind not in REQUEST_KINDS or credential.revoked_at is not None
            or credential.expires_at <= now):
        return None
    return TokenLookup(participant, credential, contact_id is not None, verified_at,
                       tuple(consent_row))


def sign_out(session: Session, credential: ParticipantCredential, *, now: datetime) -> None:
    """Revoke the one credential this request came with (this browser's session), audited.

    The caller commits; the ledger names the participant and the kind of credential only."""
    from app.audit import service as audit

    session.exec(update(ParticipantCredential)  # type: ignore[call-overload]
                 .where(col(ParticipantCredential.id) == credential.id,
                        col(ParticipantCredential.revoked_at).is_(None))
                 .values(revoked_at=now))
    audit.append(session, actor=f"participant:{credential.participant_id}",
                 action="participant.sign_out", target=f"participant:{credential.participant_id}",
                 details={"credential": credential.kind}, now=now)


def sign_out_everywhere(session: Session, participant_id: str, *, now: datetime
                        ) -> dict[str, int]:
    """Revoke every live session, API token and outstanding link of the participant, audited
    with how many of each (the caller commits). Returns those counts."""
    from app.audit import service as audit

    revoked = revoke_all(session, participant_id, now=now)
    audit.append(session, actor=f"participant:{participant_id}",
                 action="participant.sign_out_everywhere", target=f"participant:{participant_id}",
                 details=revoked, now=now)
    return revoked


# ---- staff ---------------------------------------------------------------------------------
# A staff member's token opens the JSON API (bearer) and the staff login (for a browser
# session). It expires `staff_token_ttl_days` after it was issued; rotation issues a new one;
# revocation ends it for good. Either ends the member's browser sessions at once, and
# staff_for_session() checks the member on every request, so an expired member's sessions stop
# too. Every change is audited with the actor ("cli" or "staff:<id>"), never with a token.

STAFF_CHALLENGE_TTL = timedelta(minutes=5)  # from a right token to its TOTP code
STAFF_CHALLENGE_MAX_WRONG_CODES = 5  # then the token must be given again
LAST_USED_RESOLUTION = timedelta(minutes=1)  # `last used` is written at most once a minute
# Failed logins: the ledger gets the first failure per client IP, channel and minute, and at
# most FAILED_LOGIN_LEDGER_ROWS_PER_MINUTE such rows a minute from all IPs together; every
# failure is counted in staff_login_failures (kept FAILED_LOGIN_KEEP). Why: a guesser must not
# be able to grow the append-only, never-pruned ledger at the speed of its requests (nor drown
# real events in it), yet each attacking address shows up in it, with the time and the member
# it aimed at when the token was a real one; exact counts stay queryable in the table.
FAILED_LOGIN_LEDGER_ROWS_PER_MINUTE = 30
FAILED_LOGIN_KEEP = timedelta(days=90)


@dataclass(frozen=True)
class StaffCheck:
    """The outcome of a staff credential: `member` when the credential named one (valid or
    not, for the ledger), `problem` None when it is valid."""

    member: StaffMember | None
    problem: str | None  # unknown_token | revoked | expired | wrong_code | replayed_code | ...
    retry: bool = False  # a wrong TOTP code: the same login challenge takes another one

    @property
    def ok(self) -> bool:
        return self.problem is None and self.member is not None


def staff_expires_at(member: StaffMember, ttl: timedelta) -> datetime:
    return member.token_issued_at + ttl


def staff_status(member: StaffMember, *, now: datetime, ttl: timedelta) -> str:
    if member.revoked_at is not None:
        return "revoked"
    return "expired" if staff_expires_at(member, ttl) <= now else "active"


def staff_public(member: StaffMember, *, now: datetime, ttl: timedelta) -> StaffMemberPublic:
    return StaffMemberPublic(
        id=member.id, name=member.name, role=member.role,  # type: ignore[arg-type]
        status=staff_status(member, now=now, ttl=ttl), created_at=member.created_at,
        expires_at=staff_expires_at(member, ttl), revoked_at=member.revoked_at,
        last_used_at=member.last_used_at, second_factor=member.totp_secret is not None)


def list_staff(session: Session, *, now: datetime, ttl: timedelta) -> list[StaffMemberPublic]:
    members = session.exec(select(StaffMember).order_by(col(StaffMember.name))).all()
    return [staff_public(m, now=now, ttl=ttl) for m in members]


def staff_by_name(session: Session, name: str) -> StaffMember:
    member = session.exec(select(StaffMember).where(StaffMember.name == name.strip())).first()
    if member is None:
        raise NotFound(f"There is no staff member called {name.strip()!r}.")
    return member


def staff_by_id(session: Session, member_id: int) -> StaffMember:
    member = session.get(StaffMember, member_id)
    if member is None:
        raise NotFound("There is no such staff member.")
    return member


def _check_role(role: str) -> None:
    if role not in STAFF_ROLES:
        raise ValidationFailed(f"role: must be one of {', '.join(STAFF_ROLES)}",
                               details=[{"field": "role", "problem": "unknown role"}])


def create_staff(session: Session, name: str, role: str, *, actor: str, now: datetime
                 ) -> tuple[StaffMember, str]:
    """A new staff member and their token (shown once; only its hash is kept), audited. The
    caller commits."""
    from app.audit import service as audit

    _check_role(role)
    name = name.strip()
    if not name or len(name) > 100:
        raise ValidationFailed("name: give a name of 1 to 100 characters",
                               details=[{"field": "name", "problem": "1 to 100 characters"}])
    if session.exec(select(StaffMember).where(StaffMember.name == name)).first():
        raise Conflict(f"A staff member called {name!r} already exists.",
                       details=[{"field": "name", "problem": "taken"}])
    token = new_token()
    member = StaffMember(name=name, role=role, token_hash=hash_token(token), created_at=now,
                         token_issued_at=now)
    session.add(member)
    session.flush()
    audit.append(session, actor=actor, action="staff.add", target=f"staff:{member.id}",
                 new_value={"name": name, "role": role}, now=now)
    return member, token


def add_staff(session: Session, name: str, role: str, *, now: datetime | None = None,
              actor: str = "cli") -> str:
    """Create a staff member, commit, and return their token (the CLI's and tests' way)."""
    _member, token = create_staff(session, name, role, actor=actor, now=now or utcnow())
    session.commit()
    return token


def _refuse_if_revoked(member: StaffMember) -> None:
    if member.revoked_at is not None:
        raise Conflict(f"{member.name!r} was revoked on {member.revoked_at:%Y-%m-%d}; revocation "
                       "is final: add the person again under a new name.", code="revoked")


def _keep_an_admin(session: Session, member: StaffMember, *, now: datetime, ttl: timedelta,
                   change: str) -> None:
    """Refuse to revoke or demote the last active admin (nobody could manage staff after)."""
    if member.role != "admin" or staff_status(member, now=now, ttl=ttl) != "active":
        return
    # Locked on PostgreSQL (SQLite transactions are serialized already), so two admins who
    # remove each other at the same moment cannot both succeed.
    admins = session.exec(select(StaffMember).where(
        StaffMember.role == "admin", col(StaffMember.revoked_at).is_(None)).with_for_update()).all()
    if not any(a.id != member.id and staff_status(a, now=now, ttl=ttl) == "active"
               for a in admins):
        raise Conflict(f"{member.name!r} is the last active admin: add or promote another admin "
                       f"before you {change} this one.", code="last_admin")


def _end_staff_sessions(session: Session, staff_id: int, now: datetime) -> int:
    """End every live browser session and unfinished login of the member."""
    ended = session.exec(update(StaffSession)  # type: ignore[call-overload]
                         .where(col(StaffSession.staff_id) == staff_id,
                                col(StaffSession.revoked_at).is_(None),
                                col(StaffSession.expires_at) > now)
                         .values(revoked_at=now))
    session.exec(update(StaffLoginChallenge)  # type: ignore[call-overload]
                 .where(col(StaffLoginChallenge.staff_id) == staff_id,
                        col(StaffLoginChallenge.used_at).is_(None))
                 .values(used_at=now))
    return int(ended.rowcount)


def revoke_staff(session: Session, member: StaffMember, *, actor: str, now: datetime,
                 ttl: timedelta) -> int:
    """End the member's token and every session of theirs at once (audited); returns how many
    sessions ended. The caller commits."""
    from app.audit import service as audit

    if member.revoked_at is not None:
        raise Conflict(f"{member.name!r} is already revoked.", code="already_revoked")
    _keep_an_admin(session, member, now=now, ttl=ttl, change="revoke")
    member.revoked_at = now
    session.add(member)
    ended = _end_staff_sessions(session, member.id, now)  # type: ignore[arg-type]
    audit.append(session, actor=actor, action="staff.revoke", target=f"staff:{member.id}",
                 old_value={"revoked_at": None}, new_value={"revoked_at": now.isoformat()},
                 details={"name": member.name, "role": member.role, "sessions_ended": ended},
                 now=now)
    return ended


def rotate_staff_token(session: Session, member: StaffMember, *, actor: str, now: datetime,
                       ttl: timedelta) -> str:
    """A new token for the member (returned once); the old one and every session made with it
    stop working. Also renews an expired token. The caller commits."""
    from app.audit import service as audit

    _refuse_if_revoked(member)
    was = staff_status(member, now=now, ttl=ttl)
    token = new_token()
    member.token_hash = hash_token(token)
    member.token_issued_at = now
    session.add(member)
    ended = _end_staff_sessions(session, member.id, now)  # type: ignore[arg-type]
    audit.append(session, actor=actor, action="staff.rotate", target=f"staff:{member.id}",
                 details={"name": member.name, "status_before": was, "sessions_ended": ended,
                          "expires_at": staff_expires_at(member, ttl).isoformat()}, now=now)
    return token


def change_staff_role(session: Session, member: StaffMember, role: str, *, actor: str,
                      now: datetime, ttl: timedelta) -> bool:
    """Give the member another role (audited with old and new); False when it is the same.
    Their sessions end, so the next login follows the new role's rules (e.g. TOTP)."""
    from app.audit import service as audit

    _check_role(role)
    _refuse_if_revoked(member)
    if role == member.role:
        return False
    if role != "admin":
        _keep_an_admin(session, member, now=now, ttl=ttl, change="demote")
    old = member.role
    member.role = role
    session.add(member)
    ended = _end_staff_sessions(session, member.id, now)  # type: ignore[arg-type]
    audit.append(session, actor=actor, action="staff.role_change", target=f"staff:{member.id}",
                 old_value={"role": old}, new_value={"role": role},
                 details={"name": member.name, "sessions_ended": ended}, now=now)
    return True


def enroll_totp(session: Session, member: StaffMember, *, secret_key: str, actor: str,
                now: datetime) -> str:
    """A new TOTP secret for the member (replacing any older one), stored encrypted; returns
    the provisioning URI, to be shown once. The caller commits."""
    from app.audit import service as audit
    from app.auth import totp

    _refuse_if_revoked(member)
    replaced = member.totp_secret is not None
    secret = totp.new_secret()
    member.totp_secret = totp.seal(secret, secret_key)
    member.totp_last_step = None
    session.add(member)
    session.flush()
    audit.append(session, actor=actor, action="staff.totp_enroll", target=f"staff:{member.id}",
                 details={"name": member.name, "replaced": replaced}, now=now)
    return totp.provisioning_uri(secret, member.name)


def remove_totp(session: Session, member: StaffMember, *, actor: str, now: datetime) -> None:
    """Forget the member's TOTP secret (a lost phone); audited. The caller commits."""
    from app.audit import service as audit

    if member.totp_secret is None:
        raise Conflict(f"{member.name!r} has no second factor enrolled.", code="not_enrolled")
    member.totp_secret = None
    member.totp_last_step = None
    session.add(member)
    session.flush()
    audit.append(session, actor=actor, action="staff.totp_remove", target=f"staff:{member.id}",
                 details={"name": member.name}, now=now)


def _staff_problem(member: StaffMember, now: datetime, ttl: timedelta) -> str | None:
    status = staff_status(member, now=now, ttl=ttl)
    return None if status == "active" else status


def check_staff_token(session: Session, token: str, *, now: datetime, ttl: timedelta
                      ) -> StaffCheck:
    """Whose token this is and whether it is valid now (unknown, revoked, expired)."""
    member = session.exec(select(StaffMember).where(
        StaffMember.token_hash == hash_token(token))).first() if token else None
    if member is None:
        return StaffCheck(None, "unknown_token")
    return StaffCheck(member, _staff_problem(member, now, ttl))


def staff_for_token(session: Session, token: str, *, now: datetime, ttl: timedelta
                    ) -> StaffMember | None:
    check = check_staff_token(session, token, now=now, ttl=ttl)
    return check.member if check.ok else None


def touch_staff(session: Session, member: StaffMember, *, now: datetime) -> bool:
    """Note that the member used their credentials (at most once a minute; the caller commits
    when True)."""
    if member.last_used_at is not None and now - member.last_used_at < LAST_USED_RESOLUTION:
        return False
    member.last_used_at = now
    session.add(member)
    return True


def start_staff_session(
    session: Session, member: StaffMember, ttl: timedelta, *, now: datetime
) -> tuple[str, str]:
    token, csrf = new_token(), new_token()
    session.add(StaffSession(staff_id=member.id, token_hash=hash_token(token),  # type: ignore[arg-type]
                             csrf_token=csrf, created_at=now, expires_at=now + ttl))
    touch_staff(session, member, now=now)
    return token, csrf


def staff_for_session(
    session: Session, token: str, *, now: datetime, token_ttl: timedelta
) -> tuple[StaffMember, StaffSession] | None:
    """The member behind a browser session, while both the session and the member's token
    are valid (a revoked or expired member's sessions stop at once)."""
    row = session.exec(select(StaffSession).where(
        StaffSession.token_hash == hash_token(token))).first()
    if row is None or row.revoked_at is not None or row.expires_at <= now:
        return None
    member = session.get(StaffMember, row.staff_id)
    if member is None or _staff_problem(member, now, token_ttl) is not None:
        return None
    return member, row


def end_staff_session(session: Session, token: str, *, now: datetime) -> None:
    session.exec(update(StaffSession)  # type: ignore[call-overload]
                 .where(col(StaffSession.token_hash) == hash_token(token))
                 .values(revoked_at=now))


def needs_second_factor(member: StaffMember, totp_roles: frozenset[str]) -> bool:
    return member.role in totp_roles


def start_login_challenge(session: Session, member: StaffMember, *, now: datetime) -> str:
    """After a right token, when the role needs TOTP: a short-lived, single-use challenge
    (its token goes in a cookie) that the code is checked against."""
    token = new_token()
    session.add(StaffLoginChallenge(staff_id=member.id, token_hash=hash_token(token),  # type: ignore[arg-type]
                                    created_at=now, expires_at=now + STAFF_CHALLENGE_TTL))
    return token


def check_login_code(session: Session, challenge_token: str, code: str, *, now: datetime,
                     ttl: timedelta, secret_key: str) -> StaffCheck:
    """The second login step: the challenge must be live and the code right, for a time step
    later than the last one accepted (no replay). A right code uses the challenge up; the
    caller commits either way (wrong codes are counted)."""
    from app.auth import totp

    challenge = session.exec(select(StaffLoginChallenge).where(
        StaffLoginChallenge.token_hash == hash_token(challenge_token))).first() \
        if challenge_token else None
    if (challenge is None or challenge.used_at is not None or challenge.expires_at <= now
            or challenge.wrong_codes >= STAFF_CHALLENGE_MAX_WRONG_CODES):
        return StaffCheck(None, "challenge_expired")
    member = session.get(StaffMember, challenge.staff_id)
    problem = None if member is None else _staff_problem(member, now, ttl)
    secret = (totp.unseal(member.totp_secret, secret_key)
              if member is not None and member.totp_secret else None)
    if member is None or problem is not None or secret is None:
        challenge.used_at = now
        session.add(challenge)
        return StaffCheck(member, problem or "second_factor_unreadable")
    step = totp.matching_step(secret, code, now=now, after=member.totp_last_step)
    if step is not None:
        # conditional: two requests with the same code at once cannot both get in
        taken = session.exec(update(StaffMember)  # type: ignore[call-overload]
                             .where(col(StaffMember.id) == member.id,
                                    or_(col(StaffMember.totp_last_step).is_(None),
                                        col(StaffMember.totp_last_step) < step))
                             .values(totp_last_step=step))
        if taken.rowcount == 1:
            member.totp_last_step = step
            challenge.used_at = now
            session.add(challenge)
            return StaffCheck(member, None)
    replayed = totp.matching_step(secret, code, now=now, after=None) is not None
    challenge.wrong_codes += 1
    spent = challenge.wrong_codes >= STAFF_CHALLENGE_MAX_WRONG_CODES
    if spent:
        challenge.used_at = now
    session.add(challenge)
    return StaffCheck(member, "replayed_code" if replayed else "wrong_code", retry=not spent)


def record_failed_login(session: Session, *, ip: str, channel: str, check: StaffCheck,
                        now: datetime) -> bool:
    """Count a failed staff login and, for the first one of this minute from this IP on this
    channel (web, api, totp), append it to the ledger (see FAILED_LOGIN_LEDGER_ROWS_PER_MINUTE
    for why not each one). Never the token or the code. True when it was ledgered; the caller
    commits."""
    from app.audit import service as audit

    window = now.replace(second=0, microsecond=0)
    table = StaffLoginFailure.__table__  # type: ignore[attr-defined]
    connection = session.connection()
    insert_ = pg_insert if connection.dialect.name == "postgresql" else sqlite_insert
    upsert = insert_(table).values(window_start=window, ip=ip[:64], channel=channel,
                                   attempts=1, ledgered=False)
    upsert = upsert.on_conflict_do_update(
        index_elements=[table.c.window_start, table.c.ip, table.c.channel],
        set_={"attempts": table.c.attempts + 1}).returning(table.c.attempts, table.c.id)
    attempts, row_id = connection.execute(upsert).one()
    if attempts != 1:
        return False
    ledgered = connection.execute(select(func.count()).select_from(table).where(
        table.c.window_start == window, table.c.ledgered.is_(True))).scalar_one()
    if ledgered >= FAILED_LOGIN_LEDGER_ROWS_PER_MINUTE:
        return False
    connection.execute(table.update().where(table.c.id == row_id).values(ledgered=True))
    connection.execute(table.delete().where(table.c.window_start < now - FAILED_LOGIN_KEEP))
    member = check.member
    audit.append(session, actor="unauthenticated", action="staff.login_failed",
                 target=f"staff:{member.id}" if member is not None else None,
                 details={"channel": channel, "reason": check.problem, "ip": ip[:64],
                          "minute": window.isoformat(),
                          "later_failures": "counted in staff_login_failures"}, now=now)
    return True


# ---- whether a request's credential is live (for the rate limiter) ---------------------------

# What a request may present, named for where it comes from: `bearer` (Authorization header:
# a participant session or API token, or a staff token), `participant_session` / `staff_session`
# (the browser cookies), `link` (an emailed link being used) and `staff_token` (typed into the
# staff login form).
PRESENTED_KINDS = ("bearer", "participant_session", "staff_session", "link", "staff_token")


def _live_participant_credential(session: Session, token: str, kinds: tuple[str, ...],
                                 now: datetime) -> bool:
    credential = session.exec(select(ParticipantCredential).where(
        ParticipantCredential.token_hash == hash_token(token))).first()
    return (credential is not None and credential.kind in kinds
            and credential.revoked_at is None and credential.expires_at > now)


def credential_is_live(session: Session, kind: str, token: str, *, now: datetime,
                       staff_ttl: timedelta) -> bool:
    """Whether the credential a request presents (`kind`: one of PRESENTED_KINDS) is valid now.
    Read only: the rate limiter asks it to let a valid user through their IP's failed-login
    limit; the route still checks everything (consent, role, second factor) itself."""
    if not token:
        return False
    if kind == "link":
        return _live_participant_credential(session, token, ("link",), now)
    if kind == "participant_session":
        return _live_participant_credential(session, token, REQUEST_KINDS, now)
    if kind == "staff_session":
        return staff_for_session(session, token, now=now, token_ttl=staff_ttl) is not None
    if kind == "staff_token":
        return staff_for_token(session, token, now=now, ttl=staff_ttl) is not None
    if kind == "bearer":
        return (_live_participant_credential(session, token, REQUEST_KINDS, now)
                or staff_for_token(session, token, now=now, ttl=staff_ttl) is not None)
    raise ValueError(f"unknown credential kind {kind!r}")

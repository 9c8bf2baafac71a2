"""Tokens: participant magic links and sessions, staff API tokens and browser sessions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import bindparam
from sqlmodel import Session, col, select, update

from app.auth.models import STAFF_ROLES, ParticipantCredential, StaffMember, StaffSession
from app.core.errors import Conflict, ValidationFailed
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

def add_staff(session: Session, name: str, role: str, *, now: datetime | None = None) -> str:
    """Create a staff member and return their token; only its hash is kept."""
    from app.audit import service as audit

    now = now or utcnow()
    if role not in STAFF_ROLES:
        raise ValidationFailed(f"role: must be one of {', '.join(STAFF_ROLES)}")
    name = name.strip()
    if not name or len(name) > 100:
        raise ValidationFailed("name: give a name of 1 to 100 characters")
    if session.exec(select(StaffMember).where(StaffMember.name == name)).first():
        raise Conflict(f"A staff member called {name!r} already exists.")
    token = new_token()
    member = StaffMember(name=name, role=role, token_hash=hash_token(token), created_at=now)
    session.add(member)
    session.flush()
    audit.append(session, actor="cli", action="staff.add", target=f"staff:{member.id}",
                 new_value={"name": name, "role": role}, now=now)
    session.commit()
    return token


def staff_for_token(session: Session, token: str) -> StaffMember | None:
    member = session.exec(select(StaffMember).where(
        StaffMember.token_hash == hash_token(token))).first()
    if member is None or member.revoked_at is not None:
        return None
    return member


def start_staff_session(
    session: Session, member: StaffMember, ttl: timedelta, *, now: datetime
) -> tuple[str, str]:
    token, csrf = new_token(), new_token()
    session.add(StaffSession(staff_id=member.id, token_hash=hash_token(token),  # type: ignore[arg-type]
                             csrf_token=csrf, created_at=now, expires_at=now + ttl))
    return token, csrf


def staff_for_session(
    session: Session, token: str, *, now: datetime
) -> tuple[StaffMember, StaffSession] | None:
    row = session.exec(select(StaffSession).where(
        StaffSession.token_hash == hash_token(token))).first()
    if row is None or row.revoked_at is not None or row.expires_at <= now:
        return None
    member = session.get(StaffMember, row.staff_id)
    if member is None or member.revoked_at is not None:
        return None
    return member, row


def end_staff_session(session: Session, token: str, *, now: datetime) -> None:
    session.exec(update(StaffSession)  # type: ignore[call-overload]
                 .where(col(StaffSession.token_hash) == hash_token(token))
                 .values(revoked_at=now))

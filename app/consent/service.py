"""Consent: publishing versions, signing and declining, the gate, withdrawal, IRB review."""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import bindparam
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, func, select

from app.audit import service as audit
from app.consent.document import render_markdown
from app.consent.models import (
    ConsentCopy,
    ConsentDocument,
    ConsentDocumentPublic,
    ConsentLogEntry,
    ConsentRecord,
    ConsentRecordPublic,
    ConsentSubmit,
    ConsentVersion,
    ConsentVersionReview,
    LanguageStatus,
    RequiredElementReview,
    StatementPublic,
    Withdrawal,
)
from app.core import csv_cells
from app.core.errors import AppError, Conflict, Forbidden, NotFound, ValidationFailed
from app.core.security import (
    canonical_json,
    hash_token,
    keyed_pseudonym,
    new_token,
    sha256_text,
)
from app.db import utcnow
from app.participants.models import Participant
from app.studies.models import Study

IDENTITY_METHOD = "email_magic_link"
WITHDRAWAL_CONFIRM_WINDOW = timedelta(hours=1)


class ConsentVersionImmutable(AppError):
    status_code = 409
    code = "consent_version_immutable"


class ConsentCopyMismatch(AppError):
    """The stored copy of what someone signed no longer matches the ledger: it is refused (and
    reported), never re-rendered from tables that may have been edited."""

    status_code = 409
    code = "consent_copy_mismatch"


# ---- publishing ----------------------------------------------------------------------------

def publish_versions(
    session: Session,
    study_id: int,
    study: dict[str, Any],
    documents: dict[str, dict[str, str]],
    *,
    actor: str,
    now: datetime,
) -> list[str]:
    """Store consent versions new in the file; refuse any change to a published one."""
    published = {v.version: v for v in session.exec(
        select(ConsentVersion).where(ConsentVersion.study_id == study_id)).all()}
    next_ordinal = max((v.ordinal for v in published.values()), default=0) + 1
    created: list[str] = []
    for spec in study["consent"]["versions"]:
        existing = published.get(spec["version"])
        docs = documents[spec["version"]]
        if existing is None:
            _publish_new(session, study_id, study["key"], spec, docs, next_ordinal, actor, now)
            next_ordinal += 1
            created.append(spec["version"])
        else:
            _check_unchanged(session, study["key"], existing, spec, docs, actor, now)
    return created


def _publish_new(
    session: Session, study_id: int, study_key: str, spec: dict[str, Any],
    docs: dict[str, str], ordinal: int, actor: str, now: datetime,
) -> None:
    version = ConsentVersion(
        study_id=study_id, version=spec["version"], ordinal=ordinal,
        approval_ref=spec["approval_ref"], requires_reconsent=spec.get("requires_reconsent", False),
        statements=[{"id": s["id"], "text": s["text"], "required": s.get("required", True)}
                    for s in spec["statements"]],
        signature_meaning=spec["signature_meaning"], published_at=now,
    )
    session.add(version)
    session.flush()
    hashes = {}
    for lang, text in docs.items():
        hashes[lang] = sha256_text(text)
        session.add(ConsentDocument(consent_version_id=version.id, language=lang,
                                    sha256=hashes[lang], body_md=text))
    audit.append(session, actor=actor, action="consent_version.publish",
                 target=f"study:{study_key}/consent:{spec['version']}",
                 details={"approval_ref": spec["approval_ref"], "ordinal": ordinal,
                          "requires_reconsent": version.requires_reconsent},
                 new_value={"documents": hashes}, now=now)


def _check_unchanged(
    session: Session, study_key: str, existing: ConsentVersion, spec: dict[str, Any],
    docs: dict[str, str], actor: str, now: datetime,
) -> None:
    label = f"consent version {existing.version} of {study_key}"
    fields = {
        "approval_ref": (existing.approval_ref, spec["approval_ref"]),
        "requires_reconsent": (existing.requires_reconsent, spec.get("requires_reconsent", False)),
        "statements": (existing.statements,
                       [{"id": s["id"], "text": s["text"], "required": s.get("required", True)}
                        for s in spec["statements"]]),
        "signature_meaning": (existing.signature_meaning, spec["signature_meaning"]),
    }
    for name, (old, new) in fields.items():
        if old != new:
            raise ConsentVersionImmutable(
                f"{label} is published and cannot change ({name} differs); "
                "publish the new text as a new version instead.")
    stored = {d.language: d for d in session.exec(
        select(ConsentDocument).where(ConsentDocument.consent_version_id == existing.id)).all()}
    for lang, text in docs.items():
        digest = sha256_text(text)
        if lang in stored and stored[lang].sha256 != digest:
            raise ConsentVersionImmutable(
                f"{label} is published and cannot change: the {lang} document's SHA-256 is "
                f"{digest[:12]}..., the published one is {stored[lang].sha256[:12]}...; "
                "publish the new text as a new version instead.")
        if lang not in stored:
            # A translation added later is allowed; it is its own immutable document.
            session.add(ConsentDocument(consent_version_id=existing.id, language=lang,
                                        sha256=digest, body_md=text))
            audit.append(session, actor=actor, action="consent_document.add",
                         target=f"study:{study_key}/consent:{existing.version}",
                         new_value={"language": lang, "sha256": digest}, now=now)


# ---- reading versions ----------------------------------------------------------------------

def current_version(session: Session, study_id: int) -> ConsentVersion:
    from app.studies.models import ProtocolVersion

    # One round trip on the consent gate's path (every participant request); the two-step
    # lookup below only runs to name what is missing.
    current_name = (select(ProtocolVersion.consent_current)
                    .where(ProtocolVersion.study_id == study_id)
                    .order_by(col(ProtocolVersion.version).desc()).limit(1).scalar_subquery())
    version = session.exec(select(ConsentVersion).where(
        ConsentVersion.study_id == study_id, ConsentVersion.version == current_name)).first()
    if version is not None:
        return version
    return _current_version_stepwise(session, study_id)


def _current_version_stepwise(session: Session, study_id: int) -> ConsentVersion:
    from app.studies import service as studies

    name = studies.current_consent_version_name(session, study_id)
    return _version_by_name(session, study_id, name)


def _version_by_name(session: Session, study_id: int, name: str) -> ConsentVersion:
    version = session.exec(select(ConsentVersion).where(
        ConsentVersion.study_id == study_id, ConsentVersion.version == name)).first()
    if version is None:
        raise NotFound(f"There is no consent version {name!r} in this study.",
                       code="unknown_consent_version")
    return version


def documents_of(session: Session, version_id: int) -> dict[str, ConsentDocument]:
    return {d.language: d for d in session.exec(
        select(ConsentDocument).where(ConsentDocument.consent_version_id == version_id)).all()}


def language_versions(languages: list[str] | dict[str, Any]) -> dict[str, LanguageStatus]:
    """A version's `languages` from the study file: a list (all covered by its approval) or a
    mapping language -> {status, approved}."""
    if isinstance(languages, dict):
        return {lang: LanguageStatus(**spec) for lang, spec in languages.items()}
    return {lang: LanguageStatus() for lang in languages}


def language_versions_of(
    session: Session, study_id: int, version_name: str, at: datetime | None = None
) -> dict[str, LanguageStatus]:
    """The language versions of a consent version as the study file said at `at` (now if
    None): a translation approved later was still unapproved when someone signed it."""
    from app.studies import service as studies

    for content in ((studies.protocol_at(session, study_id, at),) if at else ()) + (
            studies.current_protocol(session, study_id),):
        spec = next((v for v in content["consent"]["versions"]
                     if v["version"] == version_name), None)
        if spec is not None:
            return language_versions(spec["languages"])
    return {}


def document_for(
    session: Session, study: Study, language: str, default_language: str,
    version: ConsentVersion | None = None, prefer: Iterable[str] = (),
) -> ConsentDocumentPublic:
    """The consent document in `language`, else in the first of `prefer` there is one in, else
    in the study's default language (else any)."""
    assert study.id is not None
    version = version or current_version(session, study.id)
    docs = documents_of(session, version.id)  # type: ignore[arg-type]
    available = sorted(docs)
    chosen = next((lang for lang in (language, *prefer, default_language) if lang in docs),
                  available[0])
    doc = docs[chosen]
    statuses = language_versions_of(session, study.id, version.version)
    return ConsentDocumentPublic(
        study=study.key, version=version.version, approval_ref=version.approval_ref,
        language=chosen, available_languages=available,
        requested_language_available=language in docs, sha256=doc.sha256,
        body_markdown=doc.body_md, body_html=render_markdown(doc.body_md),
        statements=[StatementPublic(id=s["id"], text=_text(s["text"], chosen),
                                    required=s.get("required", True))
                    for s in version.statements],
        signature_meaning=_text(version.signature_meaning, chosen),
        language_versions={lang: statuses.get(lang, LanguageStatus()) for lang in available},
    )


def _text(texts: dict[str, str], language: str) -> str:
    return texts.get(language) or texts.get("en") or next(iter(texts.values()))


# ---- signing and declining -----------------------------------------------------------------

def record_decision(
    session: Session,
    participant: Participant,
    submit: ConsentSubmit,
    *,
    identity_verified_at: datetime | None,
    now: datetime | None = None,
) -> ConsentRecord:
    """Sign or decline the current consent version, in one transaction with its audit row."""
    now = now or utcnow()
    if participant.status == "withdrawn":
        raise Forbidden("You have withdrawn from this study; nothing more can be recorded.",
                        code="withdrawn")
    _check_decision_allowed(session, participant, submit.decision)
    if identity_verified_at is None:
        raise Forbidden("Please open the link we emailed you first, to confirm your address.",
                        code="identity_not_confirmed")
    version = _version_by_name(session, participant.study_id, submit.version)
    current = current_version(session, participant.study_id)
    if version.id != current.id:
        raise ValidationFailed(
            f"Consent version {submit.version} is not the current version; "
            f"the current version is {current.version}.",
            code="consent_version_not_current", details={"field": "version"})
    docs = documents_of(session, version.id)  # type: ignore[arg-type]
    if submit.language not in docs:
        raise ValidationFailed(
            f"The consent document is not available in {submit.language!r}; "
            f"available: {', '.join(sorted(docs))}.", details={"field": "language"})
    if submit.decision == "consent":
        _check_signature(version, submit)
    record = ConsentRecord(
        participant_id=participant.id, consent_version_id=version.id,  # type: ignore[arg-type]
        decision=submit.decision, language=submit.language,
        document_sha256=docs[submit.language].sha256,
        signature_name=submit.signature_name if submit.decision == "consent" else None,
        signature_meaning=_text(version.signature_meaning, submit.language)
        if submit.decision == "consent" else None,
        statements=sorted(set(submit.statements)) if submit.decision == "consent" else [],
        decided_at=now, identity_method=IDENTITY_METHOD, identity_verified_at=identity_verified_at,
    )
    session.add(record)
    old_status = participant.status
    if submit.decision == "consent":
        participant.status = "active" if old_status in ("enrolled", "declined") else old_status
        participant.enrolled_at = participant.enrolled_at or now
    elif old_status == "enrolled":
        participant.status = "declined"
    session.add(participant)
    session.flush()
    copy_sha256 = _store_copy(session, participant, record, now)
    if submit.decision == "consent":
        from app.consent import copy_mail
        from app.scheduling import service as scheduling

        scheduling.plan_at_enrollment(session, participant, now=now)
        copy_mail.queue_on_signing(session, participant, record.id, now=now)  # type: ignore[arg-type]
    audit.append(session, actor=f"participant:{participant.id}",
                 action=f"consent.{'sign' if submit.decision == 'consent' else 'decline'}",
                 target=f"consent_record:{record.id}",
                 details={"version": version.version, "language": submit.language,
                          "document_sha256": record.document_sha256,
                          "statements": record.statements, "copy_sha256": copy_sha256},
                 old_value={"status": old_status}, new_value={"status": participant.status},
                 now=now)
    if submit.decision == "decline":
        from app.participants import erasure

        # Someone who said no is never written to again: the address goes now, in this
        # transaction (its own audit row, without the address).
        erasure.erase_contact(session, participant, actor=f"participant:{participant.id}",
                              reason="declined", now=now)
    return record


def _check_decision_allowed(session: Session, participant: Participant, decision: str) -> None:
    """Declining is for people who have not consented; after a decline nothing more is taken."""
    if participant.status == "declined":
        raise Conflict("You declined to take part in this study, and your email address was "
                       "erased. To take part after all, please join again with your email "
                       "address.", code="declined")
    if decision == "decline" and _has_consented(session, participant.id):
        raise Conflict("You have already consented, so there is nothing to decline. To stop "
                       "taking part, please withdraw from the study instead (Withdraw, on the "
                       "study page).", code="already_consented",
                       details={"withdraw": "/api/v1/me/withdrawal"})


def _has_consented(session: Session, participant_id: str) -> bool:
    return session.exec(select(ConsentRecord.id).where(
        ConsentRecord.participant_id == participant_id,
        ConsentRecord.decision == "consent").limit(1)).first() is not None


def _check_signature(version: ConsentVersion, submit: ConsentSubmit) -> None:
    """Refuse an incomplete signature, naming every problem at once (`details.problems`), so
    a form can mark the name field and the statements in one round."""
    known = {s["id"] for s in version.statements}
    unknown = sorted(set(submit.statements) - known)
    if unknown:
        raise ValidationFailed(f"Unknown statement {unknown[0]!r}.",
                               details={"field": "statements", "unknown": unknown})
    missing = [s["id"] for s in version.statements
               if s.get("required", True) and s["id"] not in submit.statements]
    problems = ([{"code": "signature_required", "field": "signature_name"}]
                if not submit.signature_name else [])
    if missing:
        problems.append({"code": "statement_missing", "field": "statements"})
    if not problems:
        return
    messages = {"signature_required": "Please type your name to sign.",
                "statement_missing": "Please tick every required statement; missing: "
                                     f"{', '.join(missing)}."}
    raise ValidationFailed(" ".join(messages[p["code"]] for p in problems),
                           code=problems[0]["code"],
                           details={"field": problems[0]["field"], "missing": missing,
                                    "problems": problems})


# ---- the gate ------------------------------------------------------------------------------

@dataclass(frozen=True)
class ConsentState:
    signed_version: str | None
    current_version: str
    needs_consent: bool
    needs_reconsent: bool


def consent_state(session: Session, participant: Participant) -> ConsentState:
    row = session.exec(_state_query(), params={  # type: ignore[call-overload]
        "gate_participant_id": participant.id, "gate_study_id": participant.study_id}).one()
    return state_from(session, participant, *row)


@lru_cache(maxsize=1)
def _state_query() -> Any:
    # Built once: composing these subqueries costs more CPU than running them.
    return select(*state_columns(bindparam("gate_participant_id"), bindparam("gate_study_id")))


def state_columns(participant_id: Any, study_id: Any) -> tuple[Any, ...]:
    """The consent state as scalar subqueries (current version and ordinal, signed version and
    ordinal, reconsent floor), so the gate needs no round trip of its own: the auth query on
    every participant request selects them next to the token (`participant_id` and `study_id`
    may be its columns) and state_from() reads them. Slow to compose: build statements with
    them once."""
    from app.studies.models import ProtocolVersion

    current, signed, floor = (aliased(ConsentVersion, name=name)
                              for name in ("cv_current", "cv_signed", "cv_floor"))
    current_name = (select(ProtocolVersion.consent_current)
                    .where(ProtocolVersion.study_id == study_id)
                    .order_by(col(ProtocolVersion.version).desc()).limit(1)
                    .correlate_except(ProtocolVersion).scalar_subquery())

    # correlate_except: the outer query's participant columns stay references at any depth.
    def of_current(column: Any) -> Any:
        return (select(column).where(current.study_id == study_id,
                                     current.version == current_name).limit(1)
                .correlate_except(current).scalar_subquery())

    def of_signed(column: Any) -> Any:
        return (select(column).select_from(ConsentRecord)
                .join(signed, col(signed.id) == ConsentRecord.consent_version_id)
                .where(ConsentRecord.participant_id == participant_id,
                       ConsentRecord.decision == "consent")
                .order_by(col(signed.ordinal).desc()).limit(1)
                .correlate_except(ConsentRecord, signed).scalar_subquery())

    current_ordinal = of_current(current.ordinal)
    reconsent_floor = select(func.max(floor.ordinal)).where(
        floor.study_id == study_id, col(floor.requires_reconsent).is_(True),
        floor.ordinal <= current_ordinal).correlate_except(floor).scalar_subquery()
    return (of_current(current.version), current_ordinal, of_signed(signed.version),
            of_signed(signed.ordinal), reconsent_floor)


def state_from(session: Session, participant: Participant, current_version_name: str | None,
               current_ordinal: int | None, signed_version: str | None,
               signed_ordinal: int | None, floor: int | None) -> ConsentState:
    if current_version_name is None:  # misconfigured study: the step-by-step lookup names it
        _current_version_stepwise(session, participant.study_id)
        raise AssertionError("unreachable: the current consent version exists")
    if signed_version is None:
        return ConsentState(None, current_version_name, needs_consent=True,
                            needs_reconsent=False)
    needs_reconsent = floor is not None and signed_ordinal < floor  # type: ignore[operator]
    return ConsentState(signed_version, current_version_name, needs_consent=False,
                        needs_reconsent=needs_reconsent)


def check_gate(session: Session, participant: Participant,
               state_row: tuple[Any, ...] | None = None) -> None:
    """Raise unless the participant may send or read study data right now (`state_row`: the
    state_columns() values when already read with the participant)."""
    if participant.status == "withdrawn":
        raise Forbidden("You have withdrawn from this study.", code="withdrawn")
    state = (consent_state(session, participant) if state_row is None
             else state_from(session, participant, *state_row))
    if state.needs_consent:
        raise Forbidden("Please read and sign the consent form first.", code="consent_required",
                        details={"current_version": state.current_version})
    if state.needs_reconsent:
        raise Forbidden(
            f"The consent form changed (version {state.current_version}); please read and sign "
            "it again to continue.", code="reconsent_required",
            details={"signed_version": state.signed_version,
                     "current_version": state.current_version})


def records_of(session: Session, participant_id: str) -> list[tuple[ConsentRecord, str]]:
    rows = session.exec(
        select(ConsentRecord, ConsentVersion.version)
        .join(ConsentVersion, col(ConsentVersion.id) == ConsentRecord.consent_version_id)
        .where(ConsentRecord.participant_id == participant_id)
        .order_by(col(ConsentRecord.decided_at), col(ConsentRecord.id))
    ).all()
    return [(r, v) for r, v in rows]


def record_of(session: Session, participant_id: str, record_id: int) -> tuple[ConsentRecord, str]:
    for record, version in records_of(session, participant_id):
        if record.id == record_id:
            return record, version
    # Someone else's record looks exactly like a missing one.
    raise NotFound("There is no such consent record.")


# ---- withdrawal ----------------------------------------------------------------------------

def start_withdrawal(
    session: Session, participant: Participant, scope: str, *, now: datetime | None = None
) -> tuple[Withdrawal, str]:
    now = now or utcnow()
    if participant.status == "withdrawn":
        raise Conflict("You have already withdrawn from this study.", code="already_withdrawn")
    _refuse_if_declined(participant)
    token = new_token()
    withdrawal = Withdrawal(participant_id=participant.id, scope=scope, requested_at=now,
                            confirm_token_hash=hash_token(token))
    session.add(withdrawal)
    session.flush()
    audit.append(session, actor=f"participant:{participant.id}", action="withdrawal.request",
                 target=f"withdrawal:{withdrawal.id}", details={"scope": scope}, now=now)
    return withdrawal, token


def _refuse_if_declined(participant: Participant) -> None:
    """Declining ended it (the address is erased, nothing was collected): a withdrawal would
    put a "withdraw" in the IRB log of someone who never took part."""
    if participant.status == "declined":
        raise Conflict("You declined to take part in this study, so there is nothing to "
                       "withdraw from; your email address was already erased.", code="declined")


def confirm_withdrawal(
    session: Session,
    participant: Participant,
    withdrawal_id: int,
    token: str,
    *,
    delete_allowed: bool,
    now: datetime | None = None,
) -> Withdrawal:
    """Second step: mark withdrawn, stop every contact, erase data where the policy allows."""
    from app.notify import service as notify
    from app.participants import service as participants

    now = now or utcnow()
    withdrawal = session.get(Withdrawal, withdrawal_id)
    if withdrawal is None or withdrawal.participant_id != participant.id:
        raise NotFound("There is no such withdrawal request.")
    if withdrawal.confirmed_at is not None:
        raise Conflict("This withdrawal was already confirmed.", code="already_withdrawn")
    _refuse_if_declined(participant)  # asked for before declining
    if hash_token(token) != withdrawal.confirm_token_hash:
        raise Forbidden("The confirmation does not match this request.", code="bad_confirmation")
    if now - withdrawal.requested_at > WITHDRAWAL_CONFIRM_WINDOW:
        raise Conflict("This request has expired; please start again.", code="expired")
    old_status = participant.status
    participant.status = "withdrawn"
    participant.withdrawn_at = now
    session.add(participant)
    withdrawal.confirmed_at = now
    deleted = withdrawal.scope == "delete_data" and delete_allowed
    if deleted:
        participants.erase_research_data(session, participant.id)
    withdrawal.data_deleted = deleted
    withdrawal.outcome_note = _withdrawal_note(withdrawal.scope, delete_allowed)
    session.add(withdrawal)
    cancelled = notify.cancel_pending(session, participant.id, now=now)
    if not deleted:
        from app.surveys import service as surveys

        surveys.cancel_open_instances(session, participant.id)
    participants.forget_contact(session, participant.id)
    from app.auth import service as auth

    # Every link, session and API token ends here: after withdrawal nothing opens anything.
    revoked = auth.revoke_all(session, participant.id, now=now)
    audit.append(session, actor=f"participant:{participant.id}", action="withdrawal.confirm",
                 target=f"withdrawal:{withdrawal.id}",
                 details={"scope": withdrawal.scope, "data_deleted": deleted,
                          "messages_cancelled": cancelled,
                          "credentials_revoked": sum(revoked.values())},
                 old_value={"status": old_status}, new_value={"status": "withdrawn"}, now=now)
    return withdrawal


def _withdrawal_note(scope: str, delete_allowed: bool) -> str:
    if scope == "stop_contact":
        return "You will not be contacted again. The answers you gave so far are kept."
    if delete_allowed:
        return "You will not be contacted again, and your answers have been erased."
    return ("You will not be contacted again. Your answers could not be erased: this study's "
            "approved protocol requires keeping data already collected.")


# ---- IRB review ----------------------------------------------------------------------------

def irb_pseudonym(secret_key: str, participant_id: str) -> str:
    return keyed_pseudonym("irb:" + secret_key, participant_id)


def review_versions(session: Session) -> list[ConsentVersionReview]:
    from app.studies import service as studies

    out: list[ConsentVersionReview] = []
    rows = session.exec(select(ConsentVersion, Study.key)
                        .join(Study, col(Study.id) == ConsentVersion.study_id)
                        .order_by(col(Study.key), col(ConsentVersion.ordinal))).all()
    currents: dict[int, str] = {}
    specs: dict[tuple[int, str], dict[str, Any]] = {}
    elements: dict[int, list[dict[str, Any]]] = {}
    for version, key in rows:
        if version.study_id not in currents:
            currents[version.study_id] = studies.current_consent_version_name(
                session, version.study_id)
            protocol = studies.current_protocol(session, version.study_id)
            specs.update({(version.study_id, v["version"]): v
                          for v in protocol["consent"]["versions"]})
            elements[version.study_id] = protocol["consent"].get("required_elements", [])
        spec = specs.get((version.study_id, version.version), {})
        mapped = spec.get("sections", {})
        out.append(ConsentVersionReview(
            study=key, version=version.version, ordinal=version.ordinal,
            approval_ref=version.approval_ref, requires_reconsent=version.requires_reconsent,
            published_at=version.published_at,
            current=currents[version.study_id] == version.version,
            languages={lang: d.sha256 for lang, d in documents_of(session, version.id).items()},  # type: ignore[arg-type]
            language_versions=language_versions(spec.get("languages", [])),
            required_elements=[
                RequiredElementReview(id=e["id"], title=e["title"], regulations=e["regulations"],
                                      section=mapped[e["id"]])
                for e in elements.get(version.study_id, []) if e["id"] in mapped],
        ))
    return out


LOG_ACTIONS = ("consent", "decline", "withdraw")


def consent_log(
    session: Session,
    secret_key: str,
    *,
    date_from: datetime | None = None,
    date_to: datetime | None = None,
    version: str | None = None,
    action: str | None = None,
    participant_id: str | None = None,
) -> list[ConsentLogEntry]:
    """Consent decisions and confirmed withdrawals, oldest first, filtered."""
    entries: list[ConsentLogEntry] = []
    if action in (None, "consent", "decline"):
        entries.extend(_decision_entries(session, secret_key, date_from, date_to, version,
                                         action, participant_id))
    if action in (None, "withdraw") and version is None:
        entries.extend(_withdrawal_entries(session, secret_key, date_from, date_to,
                                           participant_id))
    return sorted(entries, key=lambda e: (e.at, e.action))


def _decision_entries(
    session: Session, secret_key: str, date_from: datetime | None, date_to: datetime | None,
    version: str | None, action: str | None, participant_id: str | None,
) -> Iterable[ConsentLogEntry]:
    query = (select(ConsentRecord, ConsentVersion.version, Study.key)
             .join(ConsentVersion, col(ConsentVersion.id) == ConsentRecord.consent_version_id)
             .join(Study, col(Study.id) == ConsentVersion.study_id))
    if date_from:
        query = query.where(ConsentRecord.decided_at >= date_from)
    if date_to:
        query = query.where(ConsentRecord.decided_at < date_to)
    if version:
        query = query.where(ConsentVersion.version == version)
    if action:
        query = query.where(ConsentRecord.decision == action)
    if participant_id:
        query = query.where(ConsentRecord.participant_id == participant_id)
    for record, version_name, study_key in session.exec(query).all():
        yield ConsentLogEntry(
            at=record.decided_at, action=record.decision,
            pseudonym=irb_pseudonym(secret_key, record.participant_id), study=study_key,
            version=version_name, language=record.language,
            document_sha256=record.document_sha256, identity_method=record.identity_method,
            statements=record.statements, record_id=record.id,
        )


def _withdrawal_entries(
    session: Session, secret_key: str, date_from: datetime | None, date_to: datetime | None,
    participant_id: str | None,
) -> Iterable[ConsentLogEntry]:
    query = (select(Withdrawal, Study.key)
             .join(Participant, col(Participant.id) == Withdrawal.participant_id)
             .join(Study, col(Study.id) == Participant.study_id)
             .where(col(Withdrawal.confirmed_at).is_not(None)))
    if date_from:
        query = query.where(Withdrawal.confirmed_at >= date_from)  # type: ignore[operator]
    if date_to:
        query = query.where(Withdrawal.confirmed_at < date_to)  # type: ignore[operator]
    if participant_id:
        query = query.where(Withdrawal.participant_id == participant_id)
    for withdrawal, study_key in session.exec(query).all():
        yield ConsentLogEntry(
            at=withdrawal.confirmed_at, action="withdraw",  # type: ignore[arg-type]
            pseudonym=irb_pseudonym(secret_key, withdrawal.participant_id), study=study_key,
            version=None, language=None, document_sha256=None, identity_method=None,
            statements=[], record_id=None, scope=withdrawal.scope,
            data_deleted=withdrawal.data_deleted,
        )


def participant_by_pseudonym(session: Session, secret_key: str, pseudonym: str) -> Participant:
    # Pseudonyms are keyed hashes, so finding one means hashing every id; fine at study scale.
    for participant in session.exec(select(Participant)).all():
        if irb_pseudonym(secret_key, participant.id) == pseudonym:
            return participant
    raise NotFound("No participant has this pseudonym.")


def consent_log_csv(entries: list[ConsentLogEntry]) -> str:
    buffer = io.StringIO()
    fields = list(ConsentLogEntry.model_fields)
    # a typed signature name like =HYPERLINK(...) is neutralized (OWASP CSV injection)
    writer = csv_cells.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    for entry in entries:
        row = entry.model_dump()
        row["at"] = entry.at.isoformat()
        row["statements"] = ";".join(entry.statements)
        writer.writerow(row)
    return buffer.getvalue()


# ---- the participant's own records ---------------------------------------------------------

def to_public(record: ConsentRecord, version: str, study_key: str, *,
              approval_ref: str | None = None,
              language_versions: dict[str, LanguageStatus] | None = None) -> ConsentRecordPublic:
    return ConsentRecordPublic(
        id=record.id, study=study_key, version=version,  # type: ignore[arg-type]
        decision=record.decision, language=record.language,
        document_sha256=record.document_sha256, signature_name=record.signature_name,
        signature_meaning=record.signature_meaning, statements=record.statements,
        decided_at=record.decided_at, identity_method=record.identity_method,
        identity_verified_at=record.identity_verified_at,
        approval_ref=approval_ref, language_versions=language_versions or {},
    )


def public_records(session: Session, participant: Participant) -> list[ConsentRecordPublic]:
    study = session.get(Study, participant.study_id)
    assert study is not None
    return [to_public(r, v, study.key) for r, v in records_of(session, participant.id)]


@dataclass(frozen=True)
class SignedCopy:
    record: ConsentRecordPublic
    body_md: str
    statement_texts: list[str]


def _render_copy(session: Session, participant: Participant, record_id: int) -> SignedCopy:
    """What this participant saw and ticked for one of their records, from the tables."""
    record, version_name = record_of(session, participant.id, record_id)
    study = session.get(Study, participant.study_id)
    assert study is not None and study.id is not None
    version = _version_by_name(session, study.id, version_name)
    doc = documents_of(session, version.id)[record.language]  # type: ignore[arg-type]
    texts = {s["id"]: _text(s["text"], record.language) for s in version.statements}
    public = to_public(record, version_name, study.key, approval_ref=version.approval_ref,
                       language_versions=language_versions_of(session, study.id, version_name,
                                                              at=record.decided_at))
    return SignedCopy(public, doc.body_md, [texts[s] for s in record.statements if s in texts])


def _copy_content(copy: SignedCopy) -> str:
    return canonical_json({"record": copy.record.model_dump(mode="json"),
                           "body_md": copy.body_md, "statements": copy.statement_texts})


def _store_copy(session: Session, participant: Participant, record: ConsentRecord,
                now: datetime) -> str:
    """Freeze the copy at signing; its hash goes into the ledger row of the decision."""
    content = _copy_content(_render_copy(session, participant, record.id))  # type: ignore[arg-type]
    digest = sha256_text(content)
    session.add(ConsentCopy(record_id=record.id, sha256=digest, content=content,  # type: ignore[arg-type]
                            created_at=now))
    return digest


def signed_copy(session: Session, participant: Participant, record_id: int) -> SignedCopy:
    """The participant's copy of one of their records: the snapshot stored at signing, served
    only when its hash matches the one in the ledger (records older than snapshots: the
    document, only when its hash matches the record's and the ledger's)."""
    record, _version = record_of(session, participant.id, record_id)
    recorded = audit.recorded_details(session, f"consent_record:{record_id}",
                                      ("consent.sign", "consent.decline"))
    stored = session.get(ConsentCopy, record_id)
    problems: list[str] = []
    copy: SignedCopy | None
    if recorded is None:
        problems.append("the ledger holds no row for this decision")
    elif recorded.get("document_sha256") != record.document_sha256:
        problems.append("the record's document hash differs from the ledger's")
    if stored is None:
        copy = _render_copy(session, participant, record_id)
        if recorded is not None and "copy_sha256" in recorded:
            problems.append("the stored copy is missing")
    else:
        content = stored.content
        if sha256_text(content) != stored.sha256:
            problems.append("the stored copy does not match its own hash")
        if recorded is not None and recorded.get("copy_sha256") != sha256_text(content):
            problems.append("the stored copy does not match the hash in the ledger")
        copy = None if problems else _copy_from(content)
    if copy is not None and sha256_text(copy.body_md) != record.document_sha256:
        problems.append("the document text does not match the hash that was signed")
    if problems or copy is None:
        _report_copy_refused(session, participant, record_id, problems)
        raise ConsentCopyMismatch(
            "Your copy cannot be shown: the stored text no longer matches what the ledger "
            "recorded when you decided. The study team has been told.",
            details={"record_id": record_id})
    return copy


def _copy_from(content: str) -> SignedCopy:
    import json

    data = json.loads(content)
    return SignedCopy(ConsentRecordPublic.model_validate(data["record"]), data["body_md"],
                      list(data["statements"]))


def _report_copy_refused(session: Session, participant: Participant, record_id: int,
                         problems: list[str]) -> None:
    """Logged and ledgered, committed here although the request then fails: the refusal must
    be on record (the caller has only read so far)."""
    import logging

    logging.getLogger("wellpanel.consent").error(
        "consent copy refused: it does not match the ledger",
        extra={"record_id": record_id, "problems": problems})
    audit.append(session, actor="system", action="consent.copy_refused",
                 target=f"consent_record:{record_id}", details={"problems": problems})
    session.commit()


def confirm_withdrawal_by_policy(
    session: Session, participant: Participant, withdrawal_id: int, token: str,
    *, now: datetime | None = None,
) -> Withdrawal:
    """Confirm a withdrawal, erasing data only if the study's protocol allows it."""
    from app.studies import service as studies

    protocol = studies.current_protocol(session, participant.study_id)
    return confirm_withdrawal(
        session, participant, withdrawal_id, token,
        delete_allowed=protocol["data_policy"]["delete_on_withdrawal"], now=now)


# ---- the participant's own data (for "download my data") -----------------------------------

def own_consent_records(session: Session, participant: Participant) -> list[dict[str, Any]]:
    """Every consent decision of the participant with the statements' texts as they read them
    (the document itself is identified by its hash; its copy is on the consent pages)."""
    versions = {v.id: v for v in session.exec(select(ConsentVersion).where(
        ConsentVersion.study_id == participant.study_id)).all()}
    out = []
    for record, version_name in records_of(session, participant.id):
        version = versions[record.consent_version_id]
        texts = {s["id"]: _text(s["text"], record.language) for s in version.statements}
        out.append({
            "id": record.id, "version": version_name, "approval_ref": version.approval_ref,
            "decision": record.decision, "language": record.language,
            "document_sha256": record.document_sha256, "signature_name": record.signature_name,
            "signature_meaning": record.signature_meaning,
            "statements": [{"id": s, "text": texts.get(s, "")} for s in record.statements],
            "decided_at": record.decided_at, "identity_method": record.identity_method,
            "identity_verified_at": record.identity_verified_at})
    return out


def own_withdrawals(session: Session, participant: Participant) -> list[dict[str, Any]]:
    """The participant's withdrawal requests, confirmed or not (never the confirmation token)."""
    rows = session.exec(select(Withdrawal).where(Withdrawal.participant_id == participant.id)
                        .order_by(col(Withdrawal.requested_at), col(Withdrawal.id))).all()
    return [{"id": w.id, "scope": w.scope, "requested_at": w.requested_at,
             "confirmed_at": w.confirmed_at, "data_deleted": w.data_deleted,
             "outcome_note": w.outcome_note} for w in rows]


# ---- what the ledger vouches for (audit verify --deep) -------------------------------------

@dataclass(frozen=True)
class StoredDocument:
    study: str
    version: str
    language: str
    stored_sha256: str  # the column
    text_sha256: str  # recomputed from the text


def stored_document_hashes(session: Session) -> list[StoredDocument]:
    rows = session.exec(select(Study.key, ConsentVersion.version, ConsentDocument.language,
                               ConsentDocument.sha256, ConsentDocument.body_md)
                        .join(ConsentVersion,
                              col(ConsentVersion.id) == ConsentDocument.consent_version_id)
                        .join(Study, col(Study.id) == ConsentVersion.study_id)).all()
    return [StoredDocument(key, version, lang, sha, sha256_text(body))
            for key, version, lang, sha, body in rows]


def stored_copy_hashes(session: Session) -> list[tuple[int, str, str]]:
    """(record id, stored hash, hash of the stored content) of every frozen copy."""
    return [(record_id, sha, sha256_text(content)) for record_id, sha, content in session.exec(
        select(ConsentCopy.record_id, ConsentCopy.sha256, ConsentCopy.content)).all()]


def stored_record_hashes(session: Session) -> dict[int, str]:
    """record id -> the document hash the record says was signed."""
    return dict(session.exec(select(ConsentRecord.id, ConsentRecord.document_sha256)).all())


def erased_participants(session: Session) -> set[str]:
    """Participants whose research data was deleted on withdrawal (their answers are gone on
    purpose)."""
    return set(session.exec(select(Withdrawal.participant_id)
                            .where(col(Withdrawal.data_deleted).is_(True))).all())


def existing_participant_ids(session: Session, candidates: set[str]) -> set[str]:
    """Which of these strings are participant ids (to show them only as pseudonyms)."""
    found: set[str] = set()
    ordered = sorted(candidates)
    for start in range(0, len(ordered), 500):
        found.update(session.exec(select(Participant.id).where(
            col(Participant.id).in_(ordered[start:start + 500]))).all())
    return found


def related_targets(session: Session, participant_id: str) -> set[str]:
    """Ledger targets that concern this participant besides `participant:<id>` itself."""
    records = session.exec(select(ConsentRecord.id).where(
        ConsentRecord.participant_id == participant_id)).all()
    withdrawals = session.exec(select(Withdrawal.id).where(
        Withdrawal.participant_id == participant_id)).all()
    return {f"consent_record:{r}" for r in records} | {f"withdrawal:{w}" for w in withdrawals}

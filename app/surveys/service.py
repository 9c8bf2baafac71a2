"""Survey instances and responses: what a participant sees, and safe submission.

Submission stores the raw answers first, scores them and records safety events in the same
transaction, so an answer is never stored unscored or lost. The Idempotency-Key makes retries
return the stored result; a unique constraint settles concurrent duplicates.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from types import SimpleNamespace
from typing import Any

from sqlalchemy import bindparam, insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, col, delete, func, select, update

from app.audit import service as audit
from app.core.errors import AppError, Conflict, NotFound, ValidationFailed
from app.core.security import canonical_json, sha256_json
from app.i18n import translator
from app.participants.models import Participant
from app.studies import crisis
from app.studies import service as studies
from app.studies.models import ProtocolVersion
from app.surveys.answers import AnswerValidationError, validate_answers
from app.surveys.instruments import Instrument, LocalizedInstrument
from app.surveys.models import (
    CrisisResource,
    ResponseScore,
    SafetyEvent,
    SafetyEventPublic,
    ScoresPublic,
    SubmissionResult,
    SurveyInstance,
    SurveyResponse,
    SurveySummary,
)
from app.surveys.scoring import safety_flags, score

CRISIS_FLAGS = {"suicidal_ideation"}


class SurveyClosed(AppError):
    status_code = 409
    code = "survey_not_open"


# ---- instruments as pinned in the protocol -------------------------------------------------

@lru_cache(maxsize=256)
def _parse_instrument(definition_json: str) -> Instrument:
    return Instrument.model_validate(json.loads(definition_json))


# Protocol versions never change once loaded and their sha256 is the hash of their content, so
# their parsed content and instruments are cached by it: a submission reads two short columns
# instead of the whole protocol, and never parses an instrument twice.
_CACHE_SIZE = 256
_contents: dict[str, dict[str, Any]] = {}
_instruments: dict[tuple[str, str], tuple[Instrument, list[str]]] = {}


def _remember(cache: dict[Any, Any], key: Any, value: Any) -> Any:
    if len(cache) >= _CACHE_SIZE:
        cache.pop(next(iter(cache)), None)
    cache[key] = value
    return value


def _content_by_sha(session: Session, sha256: str) -> dict[str, Any]:
    content = _contents.get(sha256)
    if content is None:
        content = _remember(_contents, sha256, session.exec(select(ProtocolVersion.content).where(
            ProtocolVersion.sha256 == sha256).limit(1)).one())
    return content


def _pinned_instrument(session: Session, sha256: str, key: str) -> tuple[Instrument, list[str]]:
    found = _instruments.get((sha256, key))
    if found is None:
        pinned = _content_by_sha(session, sha256)["instruments"][key]
        found = _remember(_instruments, (sha256, key), (
            _parse_instrument(canonical_json(pinned["definition"])), list(pinned["languages"])))
    return found


def _protocol_shas(session: Session, study_id: int, version: int) -> tuple[str, str]:
    """(sha256 of the given protocol version, sha256 of the study's newest version)."""
    rows = session.exec(select(ProtocolVersion.version, ProtocolVersion.sha256).where(
        ProtocolVersion.study_id == study_id)).all()
    by_version = dict(rows)
    return by_version[version], by_version[max(by_version)]


def _submission_context(session: Session, participant: Participant, instance: SurveyInstance,
                        shas: tuple[str, str] | None = None
                        ) -> tuple[Instrument, list[str], str]:
    """The pinned instrument, its languages and the study's default language, in one query
    (none when `shas`, the pinned and newest protocol's, were read with the instance)."""
    pinned_sha, latest_sha = shas or _protocol_shas(session, participant.study_id,
                                                    instance.protocol_version)
    instrument, languages = _pinned_instrument(session, pinned_sha, instance.instrument_key)
    default = _content_by_sha(session, latest_sha)["study"]["default_language"]
    return instrument, languages, default


@lru_cache(maxsize=1)
def _instance_query() -> Any:
    # Built once (composing a statement costs CPU on every submission).
    pinned = (select(ProtocolVersion.sha256)
              .where(ProtocolVersion.study_id == bindparam("study_id"),
                     ProtocolVersion.version == SurveyInstance.protocol_version)
              .correlate(SurveyInstance).scalar_subquery())
    latest = (select(ProtocolVersion.sha256)
              .where(ProtocolVersion.study_id == bindparam("study_id"))
              .order_by(col(ProtocolVersion.version).desc()).limit(1).scalar_subquery())
    return select(SurveyInstance, pinned, latest).where(
        SurveyInstance.id == bindparam("instance_id"))


def _instance_and_shas(session: Session, participant: Participant, instance_id: str
                       ) -> tuple[SurveyInstance | None, tuple[str, str] | None]:
    """The instance and the sha256 of its pinned and of the newest protocol, in one query."""
    row = session.exec(_instance_query(), params={  # type: ignore[call-overload]
        "instance_id": instance_id, "study_id": participant.study_id}).first()
    if row is None:
        return None, None
    instance, pinned_sha, latest_sha = row
    return instance, (pinned_sha, latest_sha) if pinned_sha is not None else None


def instrument_of(session: Session, instance: SurveyInstance) -> tuple[Instrument, list[str]]:
    """The instrument definition the instance was planned with, and its accepted languages."""
    participant = session.get(Participant, instance.participant_id)
    assert participant is not None
    pinned_sha, _ = _protocol_shas(session, participant.study_id, instance.protocol_version)
    return _pinned_instrument(session, pinned_sha, instance.instrument_key)


def protocol_of(session: Session, instance: SurveyInstance) -> ProtocolVersion:
    participant = session.get(Participant, instance.participant_id)
    assert participant is not None
    protocol = session.exec(select(ProtocolVersion).where(
        ProtocolVersion.study_id == participant.study_id,
        ProtocolVersion.version == instance.protocol_version)).one()
    return protocol


def language_for(participant: Participant, languages: list[str], default: str) -> str:
    return participant.language if participant.language in languages else default


def localized(session: Session, participant: Participant, instance: SurveyInstance
              ) -> LocalizedInstrument:
    instrument, languages, default = _submission_context(session, participant, instance)
    return instrument.localized(language_for(participant, languages, default))


# ---- reading -------------------------------------------------------------------------------

def get_own_instance(session: Session, participant: Participant, instance_id: str
                     ) -> SurveyInstance:
    instance = session.get(SurveyInstance, instance_id)
    if instance is None or instance.participant_id != participant.id:
        raise NotFound("There is no such survey.")  # someone else's looks the same as none
    return instance


def open_instances(session: Session, participant: Participant, now: datetime
                   ) -> list[SurveyInstance]:
    rows = session.exec(select(SurveyInstance).where(
        SurveyInstance.participant_id == participant.id, SurveyInstance.status == "open",
        col(SurveyInstance.closes_at) > now)
        .order_by(col(SurveyInstance.scheduled_at), col(SurveyInstance.position))).all()
    return list(rows)


def occasion_of(session: Session, instance: SurveyInstance) -> list[SurveyInstance]:
    """The instances planned together with this one (same schedule entry and wave)."""
    return list(session.exec(select(SurveyInstance).where(
        SurveyInstance.participant_id == instance.participant_id,
        SurveyInstance.protocol_version == instance.protocol_version,
        SurveyInstance.schedule_entry == instance.schedule_entry,
        SurveyInstance.wave == instance.wave).order_by(col(SurveyInstance.position))).all())


def summaries(session: Session, participant: Participant, now: datetime) -> list[SurveySummary]:
    out = []
    for instance in open_instances(session, participant, now):
        title = localized(session, participant, instance).title
        out.append(SurveySummary(
            id=instance.id, instrument=instance.instrument_key, title=title,
            status=instance.status, wave=instance.wave, opens_at=instance.scheduled_at,
            closes_at=instance.closes_at, local_time=instance.local_time,
            timezone=instance.timezone))
    return out


def mark_viewed(session: Session, instance: SurveyInstance, now: datetime) -> None:
    if instance.first_viewed_at is None:
        instance.first_viewed_at = now
        session.add(instance)
        session.commit()


# ---- submitting ----------------------------------------------------------------------------

def submit(
    session: Session,
    participant: Participant,
    instance_id: str,
    answers: dict[str, Any],
    idempotency_key: str,
    *,
    now: datetime,
) -> SubmissionResult:
    request_sha = sha256_json({"instance": instance_id, "answers": answers})
    instance, shas = _instance_and_shas(session, participant, instance_id)
    if instance is None or instance.participant_id != participant.id or (
            instance.status != "open"):
        # A retry usually finds its survey answered: the stored result is the answer. A first
        # submission skips this query; the unique key on (participant, key) catches a replay.
        replay = _replay(session, participant, idempotency_key, request_sha)
        if replay is not None:
            return replay
    instance = get_own_instance(session, participant, instance_id)
    _check_open(instance, now)
    instrument, languages, default = _submission_context(session, participant, instance, shas)
    try:
        cleaned = validate_answers(instrument, answers)
    except AnswerValidationError as exc:
        errors = exc.as_dicts()
        first = errors[0]
        raise ValidationFailed(
            f"{first['item'] or 'answers'}: {first['code'].replace('_', ' ')}",
            details=errors) from exc
    language = language_for(participant, languages, default)
    try:
        result = _store(session, participant, instance, instrument, cleaned, language,
                        idempotency_key, request_sha, now)
        session.commit()
    except IntegrityError as exc:
        # A concurrent duplicate won the race: answer as a retry would be answered.
        session.rollback()
        replay = _replay(session, participant, idempotency_key, request_sha)
        if replay is not None:
            return replay
        raise Conflict("This survey has already been answered.",
                       code="already_completed") from exc
    return result


def _check_open(instance: SurveyInstance, now: datetime) -> None:
    if instance.status == "completed":
        raise Conflict("This survey has already been answered.", code="already_completed")
    if instance.status == "cancelled":
        raise SurveyClosed("This survey was withdrawn and can no longer be answered.")
    if instance.status == "expired" or now >= instance.closes_at:
        raise SurveyClosed("This survey has closed; the next one will come by email.",
                           code="survey_expired")
    if instance.status != "open" or now < instance.scheduled_at:
        raise SurveyClosed("This survey is not open yet.")


def _store(
    session: Session, participant: Participant, instance: SurveyInstance,
    instrument: Instrument, cleaned: dict[str, Any], language: str, idempotency_key: str,
    request_sha: str, now: datetime,
) -> SubmissionResult:
    # Core statements on the session's connection and transaction: the same rows as the ORM
    # would write, without its unit-of-work bookkeeping (most of a submission's CPU).
    connection = session.connection()
    response = SimpleNamespace(
        instance_id=instance.id, participant_id=participant.id,
        instrument_key=instrument.key, instrument_version=instrument.version, language=language,
        translation_status=instrument.languages[language].translation_status,
        answers=cleaned, submitted_at=now, idempotency_key=idempotency_key,
        request_sha256=request_sha)
    # the raw answers are in before anything is derived from them
    response.id = connection.execute(_INSERT_RESPONSE, vars(response)).scalar_one()
    scored = score(instrument, cleaned)
    row = None
    if scored is not None:
        row = SimpleNamespace(
            response_id=response.id, primary_name=scored.primary_name,
            primary=_float(scored.primary), raw=_float(scored.raw), raw_sum=float(scored.raw_sum),
            band=scored.band, valid=scored.valid, n_answered=scored.n_answered,
            n_items=scored.n_items, prorated=scored.prorated,
            subscales={k: _float(v) for k, v in scored.subscales.items()}, scored_at=now)
        connection.execute(_INSERT_SCORE, vars(row))
    connection.execute(_COMPLETE_INSTANCE, {"instance_id": instance.id, "at": now})
    # ... and the loaded instance says so, as if the ORM had written it
    set_committed_value(instance, "status", "completed")
    set_committed_value(instance, "completed_at", now)
    flags = safety_flags(instrument, cleaned)
    events = [(connection.execute(_INSERT_SAFETY_EVENT, {
        "participant_id": participant.id, "response_id": response.id, "flag": flag,
        "created_at": now, "acknowledged_at": None, "acknowledged_by": None, "note": None,
    }).scalar_one(), flag) for flag in flags]  # their ids name them in the ledger
    crisis = bool(CRISIS_FLAGS & set(flags))
    if events:  # the on-call alerts go into their outbox in this same transaction: never lost
        from app.safety import service as safety

        safety.queue_alerts(session, participant.study_id, [e for e, _ in events], now=now)
    # Everything a reply needs is read before the ledger is locked: the audit rows come last,
    # so the lock is held for their inserts and the commit only.
    result = _result_of(session, participant, response, row, instrument, crisis,  # type: ignore[arg-type]
                        replayed=False)
    for event_id, flag in events:
        audit.append(session, actor=f"participant:{participant.id}", action="safety.flag",
                     target=f"safety_event:{event_id}",
                     details={"flag": flag, "instrument": instrument.key}, now=now)
    audit.append(session, actor=f"participant:{participant.id}", action="response.store",
                 target=f"survey_instance:{instance.id}",
                 details={"instrument": instrument.key, "version": instrument.version,
                          "language": language, "response_sha256": sha256_json(cleaned),
                          "scored": scored is not None}, now=now)
    return result


_responses, _scores_table, _safety_events, _instances = (
    SurveyResponse.__table__, ResponseScore.__table__, SafetyEvent.__table__,  # type: ignore[attr-defined]
    SurveyInstance.__table__)  # type: ignore[attr-defined]
_INSERT_RESPONSE = insert(_responses).returning(_responses.c.id)
_INSERT_SCORE = insert(_scores_table)
_INSERT_SAFETY_EVENT = insert(_safety_events).returning(_safety_events.c.id)
_COMPLETE_INSTANCE = (update(_instances).where(_instances.c.id == bindparam("instance_id"))
                      .values(status="completed", completed_at=bindparam(
                          "at", type_=_instances.c.completed_at.type)))


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _replay(session: Session, participant: Participant, key: str, request_sha: str
            ) -> SubmissionResult | None:
    stored = session.exec(select(SurveyResponse).where(
        SurveyResponse.participant_id == participant.id,
        SurveyResponse.idempotency_key == key)).first()
    if stored is None:
        return None
    if stored.request_sha256 != request_sha:
        raise ValidationFailed(
            "This Idempotency-Key was already used for a different submission; "
            "use a new key for new answers.", code="idempotency_key_reused",
            details={"field": "Idempotency-Key"})
    return _result(session, participant, stored, replayed=True)


def _result(session: Session, participant: Participant, response: SurveyResponse,
            *, replayed: bool) -> SubmissionResult:
    row = session.get(ResponseScore, response.id)
    instance = session.get(SurveyInstance, response.instance_id)
    assert instance is not None
    instrument, _ = instrument_of(session, instance)
    flags = session.exec(select(SafetyEvent.flag).where(
        SafetyEvent.response_id == response.id)).all()
    crisis = bool(CRISIS_FLAGS & set(flags))
    return _result_of(session, participant, response, row, instrument, crisis,
                      replayed=replayed)


def _result_of(session: Session, participant: Participant, response: SurveyResponse,
               row: ResponseScore | None, instrument: Instrument, crisis: bool,
               *, replayed: bool) -> SubmissionResult:
    return SubmissionResult(
        response_id=response.id, instance_id=response.instance_id,  # type: ignore[arg-type]
        instrument=response.instrument_key, submitted_at=response.submitted_at,
        replayed=replayed, scores=_scores(row, instrument) if row else None,
        show_crisis_resources=crisis,
        crisis_resources=crisis_resources(session, participant) if crisis else [])


def _scores(row: ResponseScore, instrument: Instrument) -> ScoresPublic:
    labels = {b.key: b.label for b in instrument.scoring.bands} if instrument.scoring else {}
    return ScoresPublic(
        primary_name=row.primary_name, primary=row.primary, raw=row.raw, band=row.band,
        band_label=labels.get(row.band) if row.band else None, valid=row.valid,
        n_answered=row.n_answered, n_items=row.n_items, prorated=row.prorated,
        subscales=row.subscales)


# ---- safety --------------------------------------------------------------------------------

def _crisis_config(session: Session, study_id: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The study file's crisis_resources block and the protocol's pinned instruments."""
    protocol = studies.latest_protocol(session, study_id)
    if protocol is None:
        raise NotFound("This study has no protocol loaded yet.")
    return (protocol.content["study"].get("crisis_resources") or {},
            protocol.content.get("instruments") or {})


def _offered(config: dict[str, Any], instruments: dict[str, Any]) -> list[str]:
    try:
        return crisis.offered_countries(config, instruments)
    except (KeyError, ValueError):  # a protocol loaded before crisis_resources had this shape
        return []


def participant_country(session: Session, participant: Participant,
                        config: dict[str, Any] | None = None) -> str | None:
    """The participant's latest answer to the question the study file names as giving their
    country (crisis_resources.country_from); None before it is answered."""
    if config is None:
        config, _ = _crisis_config(session, participant.study_id)
    source = config.get("country_from")
    if not source:
        return None
    answers = session.exec(select(SurveyResponse.answers).where(
        SurveyResponse.participant_id == participant.id,
        SurveyResponse.instrument_key == source["instrument"])
        .order_by(col(SurveyResponse.submitted_at).desc())).all()
    for answer in answers:
        value = (answer or {}).get(source["item"])
        if isinstance(value, str):
            return value
    return None


def crisis_help(session: Session, participant: Participant, language: str, *,
                full_list: bool = False) -> crisis.CrisisHelp:
    """The participant's country's lines and emergency numbers (None when the country is
    unknown: not answered, or an answer such as "other"), the directories and, with
    `full_list`, every offered country (theirs first)."""
    config, instruments = _crisis_config(session, participant.study_id)
    country = participant_country(session, participant, config)
    return crisis.crisis_help(config, country, language,
                              _offered(config, instruments) if full_list else None)


def study_crisis_help(session: Session, study_id: int, language: str) -> crisis.CrisisHelp:
    """Every offered country's lines and emergency numbers, for a visitor nobody knows."""
    config, instruments = _crisis_config(session, study_id)
    return crisis.crisis_help(config, None, language, _offered(config, instruments))


def crisis_resources(session: Session, participant: Participant) -> list[CrisisResource]:
    """The API's flat list: the participant's country's lines, then its emergency numbers (or
    the advice to call the local one), then the directories; in the participant's language."""
    language = participant.language
    found = crisis_help(session, participant, language)
    t = translator(language)
    entries: list[CrisisResource] = []
    if found.country is not None:
        entries += [CrisisResource(kind="line", name=line.name, phone=line.phone, url=line.url,
                                   hours=crisis.ALWAYS_OPEN if line.always_open else line.hours)
                    for line in found.country.lines]
        entries += [CrisisResource(kind="emergency", name=t(f"help.emergency_{e.service}"),
                                   phone=e.number) for e in found.country.emergency]
    else:
        entries.append(CrisisResource(kind="emergency", name=t("help.call_local_emergency")))
    entries += [CrisisResource(kind="directory", name=d.name, url=d.url)
                for d in found.directory]
    return entries


# ---- erasure -------------------------------------------------------------------------------

def erase_participant_responses(session: Session, participant_id: str) -> int:
    """Erase answers and their scores (delete_data withdrawal). Safety events keep no answers
    but point at responses, so they go too; the audit ledger keeps that they existed."""
    ids = list(session.exec(select(SurveyResponse.id).where(
        SurveyResponse.participant_id == participant_id)).all())
    if ids:
        from app.notify import staff_alerts

        session.exec(delete(ResponseScore).where(col(ResponseScore.response_id).in_(ids)))  # type: ignore[call-overload]
        for event_id in session.exec(select(SafetyEvent.id).where(
                col(SafetyEvent.response_id).in_(ids))).all():
            staff_alerts.cancel_pending(session, f"safety_event:{event_id}",
                                        "the event was erased with the participant's answers")
        session.exec(delete(SafetyEvent).where(col(SafetyEvent.response_id).in_(ids)))  # type: ignore[call-overload]
        session.exec(delete(SurveyResponse).where(col(SurveyResponse.id).in_(ids)))  # type: ignore[call-overload]
    session.exec(delete(SurveyInstance).where(  # type: ignore[call-overload]
        col(SurveyInstance.participant_id) == participant_id))
    return len(ids)


def cancel_open_instances(session: Session, participant_id: str) -> None:
    for instance in session.exec(select(SurveyInstance).where(
            SurveyInstance.participant_id == participant_id,
            col(SurveyInstance.status).in_(("planned", "open")))).all():
        instance.status = "cancelled"
        session.add(instance)


def safety_events(session: Session, secret_key: str, *, open_only: bool = False,
                  now: datetime | None = None) -> list[SafetyEventPublic]:
    """Safety events for staff, newest first, under the IRB pseudonym (never an address), with
    the answer that raised each flag, the score and band, who acknowledged it and how long it
    waited (until acknowledged; until `now` while open, when given)."""
    from app.auth.models import StaffMember
    from app.consent.service import irb_pseudonym
    from app.studies.models import Study

    query = (select(SafetyEvent, SurveyResponse.instrument_key, SurveyResponse.answers,
                    SurveyInstance.protocol_version, Participant.study_id, Study.key,
                    ResponseScore, StaffMember.name, Participant.status)
             .join(SurveyResponse, col(SurveyResponse.id) == SafetyEvent.response_id)
             .join(SurveyInstance, col(SurveyInstance.id) == SurveyResponse.instance_id)
             .join(Participant, col(Participant.id) == SafetyEvent.participant_id)
             .join(Study, col(Study.id) == Participant.study_id)
             .outerjoin(ResponseScore, col(ResponseScore.response_id) == SurveyResponse.id)
             .outerjoin(StaffMember, col(StaffMember.id) == SafetyEvent.acknowledged_by)
             .order_by(col(SafetyEvent.created_at).desc(), col(SafetyEvent.id).desc()))
    if open_only:
        query = query.where(col(SafetyEvent.acknowledged_at).is_(None))
    pinned: dict[tuple[int, int, str], Instrument] = {}
    out = []
    for (event, key, answers, version, study_id, study_key, row, staff_name,
         status) in session.exec(query).all():
        if (study_id, version, key) not in pinned:
            sha, _ = _protocol_shas(session, study_id, version)
            pinned[(study_id, version, key)] = _pinned_instrument(session, sha, key)[0]
        instrument = pinned[(study_id, version, key)]
        ended = event.acknowledged_at or now
        out.append(SafetyEventPublic(
            id=event.id, pseudonym=irb_pseudonym(secret_key, event.participant_id),  # type: ignore[arg-type]
            flag=event.flag, instrument=key, created_at=event.created_at,
            acknowledged_at=event.acknowledged_at, note=event.note, study=study_key,
            participant_status=status,
            **_trigger(instrument, event.flag, answers or {}), **_score_fields(row, instrument),
            waiting_seconds=(max(0, int((ended - event.created_at).total_seconds()))
                             if ended is not None else None),
            acknowledged_by=staff_name, escalated_at=event.escalated_at))
    return out


def _trigger(instrument: Instrument, flag: str, answers: dict[str, Any]) -> dict[str, Any]:
    """The item whose answer raised the flag, its value and the chosen option's label."""
    rule = next((r for r in instrument.safety if r.flag == flag), None)
    if rule is None:
        return {}
    value = answers.get(rule.when.item)
    item = next((i for i in instrument.localized("en").items if i.id == rule.when.item), None)
    label = None
    if item is not None and value is not None:
        label = ", ".join(_shown(item, value))
    return {"trigger_item": rule.when.item, "trigger_value": value, "trigger_label": label}


def _score_fields(row: ResponseScore | None, instrument: Instrument) -> dict[str, Any]:
    if row is None:
        return {}
    labels = {b.key: b.label for b in instrument.scoring.bands} if instrument.scoring else {}
    return {"score_name": row.primary_name, "score": row.primary, "band": row.band,
            "band_label": labels.get(row.band) if row.band else None}


@dataclass(frozen=True)
class OpenSafetyEvent:
    id: int
    participant_id: str
    study_id: int
    created_at: datetime
    escalated_at: datetime | None


def open_safety_events(session: Session) -> list[OpenSafetyEvent]:
    """Unacknowledged events, oldest first (for escalation)."""
    rows = session.exec(
        select(SafetyEvent.id, SafetyEvent.participant_id, Participant.study_id,
               SafetyEvent.created_at, SafetyEvent.escalated_at)
        .join(Participant, col(Participant.id) == SafetyEvent.participant_id)
        .where(col(SafetyEvent.acknowledged_at).is_(None))
        .order_by(col(SafetyEvent.created_at), col(SafetyEvent.id))).all()
    return [OpenSafetyEvent(*row) for row in rows]


def open_safety_stats(session: Session) -> tuple[int, datetime | None]:
    """(unacknowledged events, when the oldest of them was raised)."""
    count, oldest = session.exec(select(func.count(), func.min(SafetyEvent.created_at)).where(
        col(SafetyEvent.acknowledged_at).is_(None))).one()
    return int(count), oldest


def open_safety_event_ids(session: Session, participant_id: str) -> list[int]:
    return list(session.exec(select(SafetyEvent.id).where(
        SafetyEvent.participant_id == participant_id,
        col(SafetyEvent.acknowledged_at).is_(None))).all())  # type: ignore[arg-type]


def get_safety_event(session: Session, event_id: int) -> SafetyEvent | None:
    return session.get(SafetyEvent, event_id)


def mark_escalated(session: Session, event_id: int, now: datetime) -> bool:
    """Claim an event's escalation: True for exactly one caller, and only while the event is
    still unacknowledged (a conditional update, like acknowledging). The caller commits."""
    claimed = session.exec(update(SafetyEvent)  # type: ignore[call-overload]
                           .where(col(SafetyEvent.id) == event_id,
                                  col(SafetyEvent.acknowledged_at).is_(None),
                                  col(SafetyEvent.escalated_at).is_(None))
                           .values(escalated_at=now))
    return bool(claimed.rowcount == 1)


NOTE_MAX_CHARS = 2000


def acknowledge_safety_event(session: Session, event_id: int, *, staff_id: int | None,
                             note: str, now: datetime, actor: str | None = None) -> SafetyEvent:
    """A staff member has looked at the event; audit-logged. Only once per event. (`actor`
    without `staff_id`: a system closes it, e.g. a simulated participant's.)"""
    note = note.strip()
    if not note or len(note) > NOTE_MAX_CHARS:
        raise ValidationFailed(f"note: write what was done, 1 to {NOTE_MAX_CHARS} characters",
                               details=[{"field": "note", "max_length": NOTE_MAX_CHARS}])
    event = session.get(SafetyEvent, event_id)
    if event is None:
        raise NotFound(f"There is no safety event {event_id}.")
    # Conditional update: two reviewers acknowledging at once cannot both win.
    claimed = session.exec(update(SafetyEvent)  # type: ignore[call-overload]
                           .where(col(SafetyEvent.id) == event_id,
                                  col(SafetyEvent.acknowledged_at).is_(None))
                           .values(acknowledged_at=now, acknowledged_by=staff_id, note=note))
    if claimed.rowcount != 1:
        raise Conflict(f"Safety event {event_id} was already acknowledged.",
                       code="already_acknowledged")
    audit.append(session, actor=actor or f"staff:{staff_id}", action="safety.acknowledge",
                 target=f"safety_event:{event_id}",
                 # The note stays on the event; the ledger pins it by hash.
                 details={"flag": event.flag, "note_sha256": sha256_json(note)}, now=now)
    session.commit()
    session.refresh(event)
    return event


def safety_event_public(session: Session, secret_key: str, event: SafetyEvent
                        ) -> SafetyEventPublic:
    from app.consent.service import irb_pseudonym

    response = session.get(SurveyResponse, event.response_id)
    return SafetyEventPublic(
        id=event.id, pseudonym=irb_pseudonym(secret_key, event.participant_id),  # type: ignore[arg-type]
        flag=event.flag, instrument=response.instrument_key if response else "",
        created_at=event.created_at, acknowledged_at=event.acknowledged_at, note=event.note)


# ---- reading answers back to the participant -----------------------------------------------

@dataclass(frozen=True)
class AnswerShown:
    """One answered item as the participant reads it: the question and the chosen labels."""

    item: str
    question: str
    value: Any  # as stored
    answer: list[str]  # option labels (or the number or text typed), in the page language


@dataclass(frozen=True)
class SavedAnswers:
    instance_id: str
    instrument: str
    instrument_version: str
    title: str
    language: str  # of the question texts and labels shown (may differ from the one answered in)
    answered_language: str
    submitted_at: datetime
    answers: list[AnswerShown]


def _shown(item: Any, value: Any) -> list[str]:
    labels = {str(option.value): option.label for option in item.options}
    values = value if isinstance(value, list) else [value]
    return [labels.get(str(v), str(v)) for v in values]


def _read_back(response: SurveyResponse, localized: LocalizedInstrument) -> SavedAnswers:
    return SavedAnswers(
        instance_id=response.instance_id, instrument=response.instrument_key,
        instrument_version=response.instrument_version, title=localized.title,
        language=localized.language, answered_language=response.language,
        submitted_at=response.submitted_at,
        answers=[AnswerShown(item.id, item.text, response.answers[item.id],
                             _shown(item, response.answers[item.id]))
                 for item in localized.items if item.id in response.answers])


def saved_answers(session: Session, participant: Participant, instance: SurveyInstance
                  ) -> SavedAnswers | None:
    """The stored answers of one of the participant's questionnaires, with question texts and
    option labels in their language (None when nothing is stored)."""
    response = session.exec(select(SurveyResponse).where(
        SurveyResponse.instance_id == instance.id,
        SurveyResponse.participant_id == participant.id)).first()
    if response is None:
        return None
    return _read_back(response, localized(session, participant, instance))


def occasion_finished(session: Session, instance: SurveyInstance) -> bool:
    """True when nothing of this instance's occasion is left to answer (all submitted or
    closed), i.e. the questionnaire set is over."""
    return not any(s.status in ("planned", "open") for s in occasion_of(session, instance))


def own_responses(session: Session, participant: Participant) -> list[dict[str, Any]]:
    """Every stored response of the participant, read back (questions and chosen labels in
    their language) with its scores: their part of "download my data"."""
    rows = session.exec(
        select(SurveyResponse, SurveyInstance, ResponseScore)
        .join(SurveyInstance, col(SurveyInstance.id) == SurveyResponse.instance_id)
        .outerjoin(ResponseScore, col(ResponseScore.response_id) == SurveyResponse.id)
        .where(SurveyResponse.participant_id == participant.id)
        .order_by(col(SurveyResponse.submitted_at), col(SurveyResponse.id))).all()
    out = []
    for response, instance, row in rows:
        instrument, _ = instrument_of(session, instance)
        readable = _read_back(response, localized(session, participant, instance))
        out.append({
            "instance_id": instance.id, "schedule_entry": instance.schedule_entry,
            "wave": instance.wave, "instrument": response.instrument_key,
            "instrument_version": response.instrument_version, "title": readable.title,
            "answered_in_language": response.language,
            "translation_status": response.translation_status,
            "submitted_at": response.submitted_at,
            "answers": [{"item": a.item, "question": a.question, "value": a.value,
                         "answer": a.answer} for a in readable.answers],
            "scores": _scores(row, instrument).model_dump() if row is not None else None,
        })
    return out


def own_safety_events(session: Session, participant: Participant) -> list[dict[str, Any]]:
    """Safety events about the participant: what was flagged, when, and whether the study team
    has looked at it. The staff note and the reviewer's id stay out: the note is free text
    written by staff that may name staff members or other people (their data, not the
    participant's); the team can be asked for it through the contact in the consent document."""
    rows = session.exec(
        select(SafetyEvent, SurveyResponse.instrument_key, SurveyResponse.instance_id)
        .join(SurveyResponse, col(SurveyResponse.id) == SafetyEvent.response_id)
        .where(SafetyEvent.participant_id == participant.id)
        .order_by(col(SafetyEvent.created_at), col(SafetyEvent.id))).all()
    return [{"id": event.id, "flag": event.flag, "instrument": instrument,
             "instance_id": instance_id, "created_at": event.created_at,
             "reviewed_by_study_team_at": event.acknowledged_at}
            for event, instrument, instance_id in rows]


def stored_answer_hashes(session: Session, batch: int = 5000
                         ) -> Iterator[tuple[str, str, str]]:
    """(survey instance id, participant id, SHA-256 of the stored answers) for every response,
    hashed as the ledger's response.store row hashed them (audit verify --deep)."""
    last = 0
    while True:
        rows = session.exec(select(SurveyResponse.id, SurveyResponse.instance_id,
                                   SurveyResponse.participant_id, SurveyResponse.answers)
                            .where(col(SurveyResponse.id) > last)
                            .order_by(col(SurveyResponse.id)).limit(batch)).all()
        if not rows:
            return
        for _id, instance_id, participant_id, answers in rows:
            yield instance_id, participant_id, sha256_json(answers)
        last = rows[-1][0]

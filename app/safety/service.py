"""Safety events followed up: on-call alerts, escalation, the queue's details, contact reveal.

- A new event (recorded by app/surveys when an answer meets an instrument's safety rule) queues
  one alert per on-call address of the study file's `safety` block, in the submission's own
  transaction. The API sends them right after answering (a background task); the scheduler's
  tick sends whatever is still due (SMTP was down, the API process died), first thing in every
  tick. With the default 60 s interval an alert leaves at most one tick after the answer while
  SMTP accepts mail, and keeps being retried (at most 5 minutes apart) while it does not.
- An event nobody acknowledged within `acknowledge_within_minutes` is escalated once: a
  conditional update claims it (two schedulers cannot both), the escalation contact's alert is
  queued and the ledger records it, in one transaction.
- Alerts hold the event id, the IRB pseudonym, the study, the time and the console link: never
  an answer, never a participant's address (email is not a safe place for either).
- A staff member whose role or name the study file lists may reveal a participant's address to
  follow up on an event, stating a reason; the ledger records who, which event, why and what
  was shown (never the address). Others are refused, and the refusal is recorded too.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from babel.dates import format_timedelta
from fastapi import FastAPI
from pydantic import BaseModel
from sqlalchemy import Engine
from sqlmodel import Session

from app.audit import service as audit
from app.auth.models import StaffMember
from app.config import Settings
from app.core.errors import Forbidden, NotFound, ValidationFailed
from app.notify import staff_alerts
from app.notify.channels import Channel, Message
from app.notify.models import StaffAlert
from app.safety.config import SafetyConfig, from_study
from app.surveys import service as surveys

log = logging.getLogger("wellpanel.safety")

ALERT, ESCALATION = "safety_alert", "safety_escalation"
REASON_MIN, REASON_MAX = 10, 500
_ADDRESS_LIKE = re.compile(r"\S+(?:@|%40)\S+")


def subject_ref(event_id: int) -> str:
    return f"safety_event:{event_id}"


def console_link(settings: Settings, event_id: int) -> str:
    return f"{settings.base_url}/staff/researcher/safety#event-{event_id}"


def config_for_study(session: Session, study_id: int) -> SafetyConfig | None:
    """The safety block of the study's current protocol (None before one had it)."""
    from app.studies import service as studies

    try:
        return from_study(studies.current_protocol(session, study_id))
    except NotFound:
        return None


def _dedupe_key(kind: str, event_id: int, email: str) -> str:
    # the address hashed: keys stay short and the key alone names nobody
    digest = hashlib.sha256(email.strip().lower().encode()).hexdigest()[:24]
    return f"{kind}:{event_id}:{digest}"


# ---- alerting ------------------------------------------------------------------------------

def queue_alerts(session: Session, study_id: int, event_ids: Iterable[int], *,
                 now: datetime) -> int:
    """Queue the on-call alerts of new events (in the caller's transaction); how many."""
    config = config_for_study(session, study_id)
    event_ids = list(event_ids)
    if config is None:
        log.error("safety event without an on-call list: the study file has no safety block",
                  extra={"study_id": study_id, "events": event_ids})
        return 0
    return sum(staff_alerts.queue(
        session, kind=ALERT, subject_ref=subject_ref(event_id), recipient_name=person.name,
        recipient=person.email, dedupe_key=_dedupe_key(ALERT, event_id, person.email), now=now)
        for event_id in event_ids for person in config.on_call)


def escalate_overdue(session: Session, *, now: datetime) -> int:
    """Escalate, once each, the events not acknowledged within their study's deadline; each
    in its own transaction. Returns how many were escalated now."""
    configs: dict[int, SafetyConfig | None] = {}
    escalated = 0
    for event in surveys.open_safety_events(session):
        if event.escalated_at is not None:
            continue
        if event.study_id not in configs:
            configs[event.study_id] = config_for_study(session, event.study_id)
        config = configs[event.study_id]
        if config is None or event.created_at + config.acknowledge_within > now:
            continue
        if not surveys.mark_escalated(session, event.id, now):
            session.rollback()  # acknowledged or escalated by someone else meanwhile
            continue
        contact = config.escalation
        staff_alerts.queue(session, kind=ESCALATION, subject_ref=subject_ref(event.id),
                           recipient_name=contact.name, recipient=contact.email,
                           dedupe_key=_dedupe_key(ESCALATION, event.id, contact.email), now=now)
        audit.append(session, actor="system:scheduler", action="safety.escalate",
                     target=subject_ref(event.id),
                     details={"deadline_minutes": config.acknowledge_within_minutes,
                              "waited_seconds": int((now - event.created_at).total_seconds()),
                              "contact": contact.name}, now=now)
        session.commit()
        escalated += 1
    session.commit()
    return escalated


def deliver_alerts(engine: Engine, settings: Settings, channel: Channel, *,
                   now: datetime) -> dict[str, int]:
    """Send every due staff alert once (see app/notify/staff_alerts.py)."""
    return staff_alerts.deliver_due(engine, settings, channel, _render, now=now,
                                    after_send=_record_sent)


async def deliver_now(app: FastAPI) -> None:
    """Right after an answer raised an event (a background task, after the commit): wakes the
    API process's deliverer thread, which sends the alert at once, off the request's thread
    (app/notify/dispatch.py). Whatever fails there is retried by the scheduler's next tick."""
    from app.notify.dispatch import deliver_soon

    deliver_soon(app, alerts=True)


def _utc(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _render(session: Session, alert: StaffAlert, settings: Settings, now: datetime
            ) -> Message | str:
    from app.consent.service import irb_pseudonym

    event_id = int(alert.subject_ref.rsplit(":", 1)[1])
    event = surveys.get_safety_event(session, event_id)
    if event is None:
        return "the event was erased with the participant's answers"
    if event.acknowledged_at is not None:
        return "the event was acknowledged before this alert could be sent"
    config = None
    from app.participants.models import Participant

    participant = session.get(Participant, event.participant_id)
    if participant is not None:
        config = config_for_study(session, participant.study_id)
    study = _study_key(session, participant.study_id) if participant else "?"
    pseudonym = irb_pseudonym(settings.secret_key, event.participant_id)
    lines = [f"Event: {event.id}", f"Study: {study}", f"Participant (IRB pseudonym): {pseudonym}",
             f"Raised: {_utc(event.created_at)}"]
    if alert.kind == ESCALATION:
        minutes = config.acknowledge_within_minutes if config else None
        subject = f"[wellpanel] ESCALATED: safety event {event.id} not acknowledged"
        intro = (f"Safety event {event.id} has not been acknowledged"
                 + (f" within {minutes} minutes" if minutes else "")
                 + ". You are the study's escalation contact: please make sure it is followed "
                 "up now.")
    else:
        subject = f"[wellpanel] Safety event {event.id} needs review"
        intro = "A participant's answer raised a safety event that needs review now."
        if config is not None:
            lines.append(f"Acknowledge by: {_utc(event.created_at + config.acknowledge_within)}"
                         f" (then it escalates to {config.escalation.name})")
    body = "\n".join([
        f"Hello {alert.recipient_name},", "", intro, "", *lines, "",
        f"Open it in the console: {console_link(settings, event.id)}", "",
        "This email holds no answers and no contact details on purpose: sign in to the console "
        "to read the event and follow the study's safety protocol.", ""])
    return Message(to=alert.recipient, subject=subject, body=body, language="en")


def _study_key(session: Session, study_id: int) -> str:
    from app.studies.models import Study

    study = session.get(Study, study_id)
    return study.key if study else "?"


def _record_sent(session: Session, alert: StaffAlert, now: datetime) -> None:
    """The ledger names the person alerted (their name from the study file, not the address)."""
    audit.append(session, actor="system:notify", action="safety.alert_sent",
                 target=alert.subject_ref,
                 details={"kind": alert.kind, "to": alert.recipient_name, "alert_id": alert.id,
                          "attempts": alert.attempts}, now=now)


SIMULATED_NOTE = ("Simulated participant (wellpanel simulate): synthetic answers, nobody to "
                  "follow up; no alert was sent.")


def close_simulated(session: Session, participant_id: str, *, actor: str, now: datetime) -> int:
    """A simulated participant contacts nobody, staff included: their events' alerts are
    cancelled and the events closed with a note saying why, so nothing escalates either."""
    closed = 0
    for event_id in surveys.open_safety_event_ids(session, participant_id):
        staff_alerts.cancel_pending(session, subject_ref(event_id), "simulated participant")
        surveys.acknowledge_safety_event(session, event_id, staff_id=None, note=SIMULATED_NOTE,
                                         now=now, actor=actor)
        closed += 1
    return closed


# ---- the queue -----------------------------------------------------------------------------

@dataclass(frozen=True)
class AlertStatus:
    kind: str  # safety_alert | safety_escalation
    to: str  # the staff member's name
    status: str
    sent_at: datetime | None
    attempts: int


def alert_statuses(session: Session, event_ids: list[int]) -> dict[int, list[AlertStatus]]:
    """For each event, the alerts about it (who, sent when), for the console."""
    out: dict[int, list[AlertStatus]] = {}
    for alert in staff_alerts.for_subjects(session, [subject_ref(i) for i in event_ids]):
        event_id = int(alert.subject_ref.rsplit(":", 1)[1])
        out.setdefault(event_id, []).append(AlertStatus(
            alert.kind, alert.recipient_name, alert.status, alert.sent_at, alert.attempts))
    return out


def reveals(session: Session, event_ids: list[int]) -> dict[int, list[dict[str, object]]]:
    """Who revealed each event's contact, when and why (read back from the ledger)."""
    if not event_ids:
        return {}
    targets = {subject_ref(i) for i in event_ids}
    out: dict[int, list[dict[str, object]]] = {}
    first, *rest = sorted(targets)
    for row in audit.entries_about(session, first, set(rest)):
        if row.action == "safety.reveal_contact" and row.target in targets:
            out.setdefault(int(row.target.rsplit(":", 1)[1]), []).append(
                {"at": row.occurred_at, "by": row.details.get("by"),
                 "reason": row.details.get("reason"), "outcome": row.details.get("outcome")})
    return out


def humanized(seconds: int | None) -> tuple[str, str]:
    """(about how long, to the second): "2 hours", "2 h 05 min 12 s"."""
    if seconds is None:
        return "", ""
    human = format_timedelta(timedelta(seconds=seconds), locale="en", threshold=1.0)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    exact = f"{hours} h {minutes:02d} min {secs:02d} s"
    return human, f"{days} d {exact}" if days else exact


def open_stats(session: Session, now: datetime) -> tuple[int, float]:
    """(unacknowledged events, the oldest one's age in seconds; 0 when none waits)."""
    count, oldest = surveys.open_safety_stats(session)
    if oldest is None:
        return count, 0.0
    if oldest.tzinfo is None:  # SQLite's aggregate bypasses the column type: stored UTC
        oldest = oldest.replace(tzinfo=now.tzinfo)
    return count, max(0.0, (now - oldest).total_seconds())


# ---- revealing a participant's contact -----------------------------------------------------

class ContactReveal(BaseModel):
    event_id: int
    pseudonym: str
    # revealed: the address is shown; withdrawn: the person withdrew and is never contacted
    # again; no_contact: no address is held any more (erased after the retention period)
    outcome: Literal["revealed", "withdrawn", "no_contact"]
    email: str | None
    message: str


class RevealRefused(Forbidden):
    code = "reveal_not_allowed"


def may_reveal(session: Session, member: StaffMember, study_id: int) -> bool:
    config = config_for_study(session, study_id)
    return config is not None and config.may_reveal(member.role, member.name)


def _study_id(session: Session, key: str | None) -> int | None:
    from app.studies import service as studies

    if not key:
        return None
    try:
        return studies.get_study(session, key).id
    except NotFound:
        return None


def reveal_permissions(session: Session, member: StaffMember, study_keys: Iterable[str | None]
                       ) -> dict[str, bool]:
    """study key -> whether this staff member may reveal contacts in it (what the page offers;
    reveal_contact checks again)."""
    out = {}
    for key in set(study_keys):
        study_id = _study_id(session, key)
        if key and study_id is not None:
            out[key] = may_reveal(session, member, study_id)
    return out


def placeholder_addresses(session: Session, study_key: str) -> list[str]:
    """The study's alert addresses that reach nobody (example.org...): to be replaced."""
    study_id = _study_id(session, study_key)
    config = config_for_study(session, study_id) if study_id is not None else None
    return config.placeholders() if config else []


def clean_reason(reason: str) -> str:
    reason = " ".join(reason.split())
    if not REASON_MIN <= len(reason) <= REASON_MAX:
        raise ValidationFailed(
            f"reason: say why you need the address, {REASON_MIN} to {REASON_MAX} characters",
            details=[{"field": "reason", "min_length": REASON_MIN, "max_length": REASON_MAX}])
    if _ADDRESS_LIKE.search(reason):
        # the reason goes into the ledger, which must never hold an address
        raise ValidationFailed("reason: do not write an email address in the reason",
                               details=[{"field": "reason", "problem": "contains_address"}])
    return reason


def reveal_contact(session: Session, secret_key: str, event_id: int, member: StaffMember,
                   reason: str, *, via: str, now: datetime) -> ContactReveal:
    """The participant's address for following up on an event, if the study file lets this
    staff member see it. Refusals raise RevealRefused after writing the refusal to the ledger
    (the caller commits it). The caller commits."""
    from app.consent.service import irb_pseudonym
    from app.participants import service as participants
    from app.participants.models import Participant

    event = surveys.get_safety_event(session, event_id)
    participant = session.get(Participant, event.participant_id) if event else None
    if event is None or participant is None:
        raise NotFound(f"There is no safety event {event_id}.")
    actor = f"staff:{member.id}"
    if not may_reveal(session, member, participant.study_id):
        audit.append(session, actor=actor, action="safety.reveal_contact_refused",
                     target=subject_ref(event_id), details={"role": member.role, "via": via},
                     now=now)
        raise RevealRefused("The study file does not let your role or name reveal a "
                            "participant's contact (safety.reveal_contact_roles / "
                            "reveal_contact_staff).")
    reason = clean_reason(reason)
    contact = None if participant.status == "withdrawn" else participants.own_contact(
        session, participant)
    if participant.status == "withdrawn":
        outcome, message = "withdrawn", ("This participant withdrew from the study and must "
                                         "not be contacted; no address is shown.")
    elif contact is None:
        outcome, message = "no_contact", ("No address is held for this participant any more "
                                          "(erased after the retention period).")
    else:
        outcome, message = "revealed", "Use this address only to follow up on this event."
    audit.append(session, actor=actor, action="safety.reveal_contact",
                 target=subject_ref(event_id),
                 # never the address itself: who, why, and whether one was shown
                 details={"by": member.name, "role": member.role, "reason": reason,
                          "outcome": outcome, "via": via}, now=now)
    return ContactReveal(event_id=event_id,
                         pseudonym=irb_pseudonym(secret_key, participant.id),
                         outcome=outcome,  # type: ignore[arg-type]
                         email=str(contact["email"]) if contact else None, message=message)

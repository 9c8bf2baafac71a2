"""Compliance for researchers: who was asked, who was reached, who answered, in aggregate SQL.

Every figure is computed by the database (GROUP BY and window functions that SQLite and
PostgreSQL both run), so a study with millions of survey instances is summarised without loading
them. Participants are only ever named by their IRB pseudonym (app/consent ``irb_pseudonym``, the
one the IRB pages show); internal ids and contact details never leave this module.

Definitions (per survey instance; cancelled instances, e.g. after a withdrawal or an amendment,
are left out everywhere):

* ``scheduled``: instances planned for the instrument and wave (whether due yet or not);
* ``sent``: the occasion's invitation email was sent (outbox ``invitation`` row with status
  ``sent``), or the instance was opened without any invitation being queued (the baseline, opened
  on screen at consent);
* ``opened``: the participant looked at it (``first_viewed_at``);
* ``completed`` / ``expired``: by status;
* ``median_answer_seconds``: median of ``completed_at`` minus the time it opened (``opened_at``,
  else ``scheduled_at``) over completed instances;
* missed in a row: a *sitting* is everything a participant was due to answer at one time
  (instances sharing ``scheduled_at``); a closed sitting is missed when nothing of it was
  completed and something expired. A participant is listed when their longest run of
  consecutive missed sittings reaches ``missed_in_a_row``.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel
from sqlalchemy import String, case, cast, func, literal
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col, select

from app.consent.service import irb_pseudonym
from app.core.errors import NotFound, ValidationFailed
from app.notify.models import OutboxMessage
from app.participants.models import Participant
from app.studies.models import Study
from app.surveys.models import SurveyInstance

CellStatus = Literal["completed", "missed", "expired", "open", "planned"]

SI = SurveyInstance


# ---- answers -----------------------------------------------------------------------------------

class ComplianceRow(BaseModel):
    entry: str
    instrument: str
    wave: int
    scheduled: int
    sent: int
    opened: int
    completed: int
    expired: int
    completion_rate: float | None  # completed / (completed + expired): closed instances only
    median_answer_seconds: float | None


class MissedInARow(BaseModel):
    threshold: int
    count: int
    pseudonyms: list[str]  # IRB pseudonyms, sorted


class ComplianceReport(BaseModel):
    study: str
    generated_at: datetime
    rows: list[ComplianceRow]
    missed: MissedInARow


class WeekCompliance(BaseModel):
    week_start: date  # the Monday (UTC) of the calendar week of scheduled_at
    scheduled: int
    completed: int
    expired: int
    completion_rate: float | None  # completed / (completed + expired)


class MatrixRow(BaseModel):
    pseudonym: str
    cells: dict[str, CellStatus]  # wave label -> status; absent when never planned


class WaveMatrix(BaseModel):
    waves: list[str]  # labels "entry:wave", in the order they first happen
    rows: list[MatrixRow]


# ---- the service -------------------------------------------------------------------------------

def find_study(session: Session, key: str | None) -> Study:
    """The study ``key``, or the only study loaded when ``key`` is None."""
    if key is not None:
        study = session.exec(select(Study).where(Study.key == key)).first()
        if study is None:
            raise NotFound(f"There is no study called {key!r}.", details={"field": "study"})
        return study
    studies = session.exec(select(Study).order_by(col(Study.key))).all()
    if not studies:
        raise NotFound("No study is loaded yet.", details={"field": "study"})
    if len(studies) > 1:
        raise ValidationFailed(f"Several studies are loaded ({', '.join(s.key for s in studies)})"
                               ": name one with study.", details={"field": "study"})
    return studies[0]


def compliance(session: Session, study: Study, *, secret_key: str, now: datetime,
               missed_in_a_row: int = 3) -> ComplianceReport:
    """Per entry, instrument and wave: the counts, rates and median time to answer; and the
    participants whose longest run of missed sittings reaches ``missed_in_a_row``."""
    if missed_in_a_row < 1:
        raise ValueError("missed_in_a_row must be at least 1")
    counts = {(r.entry, r.instrument, r.wave): r for r in _counts(session, study)}
    medians = _median_answer_seconds(session, study)
    rows = [ComplianceRow(**r._asdict(), completion_rate=_rate(r.completed, r.expired),
                          median_answer_seconds=medians.get(key))
            for key, r in sorted(counts.items(), key=lambda kv: (kv[1].first_at, kv[0]))]
    missing = [p for p, run in _longest_missed_runs(session, study) if run >= missed_in_a_row]
    pseudonyms = sorted(irb_pseudonym(secret_key, p) for p in missing)
    return ComplianceReport(study=study.key, generated_at=now, rows=rows, missed=MissedInARow(
        threshold=missed_in_a_row, count=len(pseudonyms), pseudonyms=pseudonyms))


def compliance_by_week(session: Session, study: Study) -> list[WeekCompliance]:
    """Completion per calendar week (Monday to Sunday, UTC) of ``scheduled_at``, oldest first:
    a line chart of the completion rate over the study's life."""
    week = _week_start(session)
    found = session.exec(
        select(week.label("week"), func.count(), _count_if(SI.status == "completed"),
               _count_if(SI.status == "expired"))
        .select_from(SI).join(Participant, col(Participant.id) == col(SI.participant_id))
        .where(*_in_study(study)).group_by(week).order_by(week)).all()
    return [WeekCompliance(week_start=_as_date(w), scheduled=n, completed=done, expired=gone,
                           completion_rate=_rate(done, gone))
            for w, n, done, gone in found]


def participant_wave_matrix(session: Session, study: Study, *, secret_key: str,
                            limit: int = 200) -> WaveMatrix:
    """Status of each (entry, wave) for up to ``limit`` participants (the earliest enrolled
    first), for a heat map. A cell is ``completed`` when every instrument was answered,
    ``open`` or ``planned`` while anything is, ``missed`` when it closed with nothing answered
    and never viewed, and ``expired`` when it closed otherwise (viewed or partly answered)."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    people = (select(Participant.id).where(Participant.study_id == study.id)
              .order_by(col(Participant.enrolled_at), col(Participant.id)).limit(limit)
              .scalar_subquery())
    cells = session.exec(
        select(SI.participant_id, SI.schedule_entry, SI.wave, func.min(SI.scheduled_at),
               func.count(), _count_if(SI.status == "completed"), _count_if(SI.status == "open"),
               _count_if(SI.status == "planned"), _count_if(col(SI.first_viewed_at).is_not(None)))
        .where(col(SI.participant_id).in_(people), SI.status != "cancelled")
        .group_by(SI.participant_id, SI.schedule_entry, SI.wave)).all()
    first_at: dict[str, datetime] = {}
    by_person: dict[str, dict[str, CellStatus]] = {}
    for pid, entry, wave, at, n, done, open_, planned, viewed in cells:
        label = f"{entry}:{wave}"
        first_at[label] = min(at, first_at.get(label, at))
        by_person.setdefault(pid, {})[label] = _cell(n, done, open_, planned, viewed)
    waves = sorted(first_at, key=lambda label: (first_at[label], label))
    rows = sorted((MatrixRow(pseudonym=irb_pseudonym(secret_key, pid), cells=statuses)
                   for pid, statuses in by_person.items()), key=lambda r: r.pseudonym)
    return WaveMatrix(waves=waves, rows=rows)


# ---- the queries -------------------------------------------------------------------------------

def _in_study(study: Study) -> list[ColumnElement[bool]]:
    return [col(Participant.study_id) == study.id, col(SI.status) != "cancelled"]


def _count_if(condition: Any) -> Any:
    return func.count(case((condition, 1)))


def _counts(session: Session, study: Study) -> list[Any]:
    key = (literal("invitation:") + SI.participant_id + literal(":") + SI.schedule_entry
           + literal(":") + cast(SI.wave, String))
    invitation = OutboxMessage
    sent = _count_if((col(invitation.status) == "sent")
                     | (col(invitation.id).is_(None) & col(SI.opened_at).is_not(None)))
    return list(session.exec(
        select(SI.schedule_entry.label("entry"), SI.instrument_key.label("instrument"),  # type: ignore[attr-defined]
               SI.wave.label("wave"), func.count().label("scheduled"),  # type: ignore[attr-defined]
               sent.label("sent"),
               _count_if(col(SI.first_viewed_at).is_not(None)).label("opened"),
               _count_if(SI.status == "completed").label("completed"),
               _count_if(SI.status == "expired").label("expired"),
               func.min(SI.scheduled_at).label("first_at"))
        .select_from(SI).join(Participant, col(Participant.id) == col(SI.participant_id))
        .outerjoin(invitation, (col(invitation.dedupe_key) == key)
                   & (col(invitation.kind) == "invitation"))
        .where(*_in_study(study))
        .group_by(SI.schedule_entry, SI.instrument_key, SI.wave)).all())


def _seconds_to_answer(session: Session) -> Any:
    opened = func.coalesce(SI.opened_at, SI.scheduled_at)
    if session.get_bind().dialect.name == "postgresql":
        return func.extract("epoch", col(SI.completed_at) - opened)
    # SQLite keeps UTC timestamps as text; julianday() reads them.
    return (func.julianday(SI.completed_at) - func.julianday(opened)) * 86400.0


def _median_answer_seconds(session: Session, study: Study) -> dict[tuple[str, str, int], float]:
    """Median by (entry, instrument, wave): the middle one or two of the sorted durations,
    found with ROW_NUMBER and COUNT windows (SQLite has no percentile function)."""
    group = (SI.schedule_entry, SI.instrument_key, SI.wave)
    seconds = _seconds_to_answer(session)
    ranked = (select(*group, seconds.label("seconds"),
                     func.row_number().over(partition_by=group, order_by=seconds).label("rn"),
                     func.count().over(partition_by=group).label("n"))
              .select_from(SI).join(Participant, col(Participant.id) == col(SI.participant_id))
              .where(*_in_study(study), SI.status == "completed",
                     col(SI.completed_at).is_not(None))
              .subquery())
    middle = (ranked.c.rn == (ranked.c.n + 1) // 2) | (ranked.c.rn == (ranked.c.n + 2) // 2)
    found = session.exec(
        select(ranked.c.schedule_entry, ranked.c.instrument_key, ranked.c.wave,
               func.avg(ranked.c.seconds))
        .where(middle).group_by(ranked.c.schedule_entry, ranked.c.instrument_key,
                                ranked.c.wave)).all()
    return {(e, i, w): round(float(s), 1) for e, i, w, s in found}


def _longest_missed_runs(session: Session, study: Study) -> list[tuple[str, int]]:
    """(participant id, longest run of consecutive missed sittings) for everyone with one:
    gaps and islands, numbering each person's closed sittings in time order twice (all of them,
    and within missed or answered) so that a run of misses shares one difference."""
    answered = func.max(case((SI.status == "completed", 1), else_=0))
    sittings = (select(SI.participant_id, SI.scheduled_at, answered.label("answered"))
                .select_from(SI)
                .join(Participant, col(Participant.id) == col(SI.participant_id))
                .where(*_in_study(study))
                .group_by(SI.participant_id, SI.scheduled_at)
                .having((answered == 1)
                        | (func.max(case((SI.status == "expired", 1), else_=0)) == 1))
                .subquery())
    island = (func.row_number().over(partition_by=sittings.c.participant_id,
                                     order_by=sittings.c.scheduled_at)
              - func.row_number().over(partition_by=(sittings.c.participant_id,
                                                     sittings.c.answered),
                                       order_by=sittings.c.scheduled_at))
    runs = (select(sittings.c.participant_id, sittings.c.answered, island.label("island"))
            .subquery())
    lengths = (select(runs.c.participant_id, func.count().label("run"))
               .where(runs.c.answered == 0).group_by(runs.c.participant_id, runs.c.island)
               .subquery())
    return [(p, n) for p, n in session.exec(
        select(lengths.c.participant_id, func.max(lengths.c.run))
        .group_by(lengths.c.participant_id)).all()]


def _week_start(session: Session) -> Any:
    if session.get_bind().dialect.name == "postgresql":
        return func.date(func.date_trunc("week", func.timezone("UTC", SI.scheduled_at)))
    # SQLite: the Sunday on or after the day, minus six days, is that week's Monday.
    return func.date(SI.scheduled_at, "weekday 0", "-6 days")


def _as_date(value: date | str) -> date:
    return value if isinstance(value, date) else date.fromisoformat(value)


def _rate(completed: int, expired: int) -> float | None:
    closed = completed + expired
    return round(completed / closed, 4) if closed else None


def _cell(n: int, done: int, open_: int, planned: int, viewed: int) -> CellStatus:
    if done == n:
        return "completed"
    if open_:
        return "open"
    if planned:
        return "planned" if not done else "open"
    return "missed" if not done and not viewed else "expired"

"""`wellpanel simulate`: fill a database with a synthetic study, through the services the API uses.

``simulate(engine, SimulateOptions(participants=N, waves=T), surveys_dir=...)`` draws a study
(:mod:`app.simulate.draw`: scores and usage from :mod:`analysis.simulate`, so the true effects
are known) and plays it forward on a fake clock, step by step in time order:

- join: ``participants.service.enroll`` (screening, contact, the first-link message), then the
  address is confirmed (``mark_contact_verified``);
- consent: ``consent.service.record_decision`` (which plans the schedule and opens the
  baseline), or a decline;
- each answered wave: ``scheduling.service.plan_at_enrollment`` rolls the participant's horizon
  forward and opens what is due, then ``surveys.service.submit`` stores every questionnaire
  (validated, scored, safety-checked, audit-logged) exactly as the API does;
- the end: withdrawal of either scope (``start_withdrawal`` + ``confirm_withdrawal_by_policy``),
  a pause (``set_paused``), or completion after the last wave.

Nobody is ever contacted: addresses are under the reserved ``example.invalid`` domain, every
message the services queue is cancelled at once (``notify.service.cancel_pending``), a simulated
safety event is closed at once with a note and its on-call alerts cancelled (so no staff member
is alerted and nothing escalates: ``safety.service.close_simulated``), nothing is
delivered, and by the end no simulated participant is active, so no later scheduler tick
invites them either. Missed surveys expire as the dispatcher would expire them.

Steps are committed in batches (the services' own commits only flush inside one transaction
per batch), so large studies are feasible; should a service refuse a step, the batch in progress
is rolled back and the error says how many steps stay committed. A study that already has
participants is refused unless ``append`` is set; appended runs use fresh addresses.
"""

from __future__ import annotations

import functools
import json
import secrets
import time as clock
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func
from sqlalchemy.pool import NullPool
from sqlmodel import Session, select

from analysis import spec
from app.core.errors import AppError
from app.db import make_engine, utcnow
from app.simulate import draw
from app.surveys.instruments import Instrument

ACTOR = "simulate"
# Steps per committed transaction: about twice as fast as a commit per step on both databases,
# while long write transactions slow PostgreSQL down again (bench/simulate.py).
DEFAULT_BATCH = 25


class SimulationError(AppError):
    """A refused simulation: nothing was written."""

    status_code = 422
    code = "simulation_refused"


@dataclass
class SimulateOptions:
    participants: int
    waves: int
    seed: int = 0
    study: str | None = None  # study key; the settings' default study when None
    append: bool = False  # add to a study that already has participants
    effects: Mapping[str, Any] | None = None  # overrides of analysis.simulate's effects
    extras: bool = True  # also people who screen out, never consent or decline
    batch_size: int = DEFAULT_BATCH  # steps per commit


@dataclass
class SimulationResult:
    study: str
    run: str
    participants: int  # consenting participants (the panel)
    people: int  # everyone who joined or screened, extras included
    responses: int
    steps: int
    seconds: float
    fates: dict[str, int]
    safety_events: int
    unanswerable: int  # drawn answers with no open survey to take them (0 unless broken)
    start: datetime
    end: datetime
    truth: dict[str, Any] = field(repr=False)

    @property
    def responses_per_second(self) -> float:
        return self.responses / self.seconds if self.seconds > 0 else float("inf")

    def as_dict(self) -> dict[str, Any]:
        return {
            "study": self.study,
            "run": self.run,
            "participants": self.participants,
            "people": self.people,
            "responses": self.responses,
            "steps": self.steps,
            "seconds": round(self.seconds, 3),
            "responses_per_second": round(self.responses_per_second, 1),
            "fates": self.fates,
            "safety_events": self.safety_events,
            "unanswerable": self.unanswerable,
            "first_step": self.start.isoformat(),
            "last_step": self.end.isoformat(),
            "truth": self.truth,
        }


# ---- an engine that parses each protocol document once ---------------------------------------

_BIG_JSON = 8192


@functools.lru_cache(maxsize=16)
def _cached_document(text: str | bytes) -> Any:
    return json.loads(text)


def _json_loads(text: str | bytes) -> Any:
    # Protocol versions (~100 KB of JSON) are read again for every submission; parsing them
    # once is most of the speed of a large simulation. Nothing mutates them once loaded.
    if len(text) >= _BIG_JSON:
        return _cached_document(bytes(text) if isinstance(text, memoryview) else text)
    return json.loads(text)


def _own_engine(engine: Engine) -> Engine:
    return make_engine(engine.url.render_as_string(hide_password=False), poolclass=NullPool,
                       json_deserializer=_json_loads)


# ---- setup and checks ------------------------------------------------------------------------


def ensure_study(session: Session, key: str, surveys_dir: Path) -> Any:
    """The study ``key``, loaded from ``surveys_dir/studies/<key>.yaml`` if it is not yet."""
    from app.studies import service as studies
    from app.studies.models import Study

    study = session.exec(select(Study).where(Study.key == key)).first()
    if study is not None:
        return study
    path = Path(surveys_dir) / "studies" / f"{key}.yaml"
    if not path.is_file():
        raise SimulationError(f"study {key!r} is not loaded and there is no study file {path}",
                              code="study_not_found", details={"field": "study"})
    studies.load_study(session, path, Path(surveys_dir), actor=ACTOR)
    return studies.get_study(session, key)


def _participant_count(session: Session, study_id: int) -> int:
    from app.participants.models import Participant

    return int(session.exec(select(func.count()).select_from(Participant)
                            .where(Participant.study_id == study_id)).one())


def _instruments(content: Mapping[str, Any]) -> dict[str, Instrument]:
    return {k: Instrument.model_validate(v["definition"])
            for k, v in content["instruments"].items()}


def _occasion(content: Mapping[str, Any]) -> draw.Occasion:
    """The biweekly entry the simulator's waves follow; refused if the schedule has none."""
    for entry in content["study"].get("schedule", {}).get("entries", []):
        cadence = entry.get("cadence", {})
        if cadence.get("every_days") == draw.sim.WAVE_DAYS and \
                cadence.get("start_day", draw.sim.WAVE_DAYS) == draw.sim.WAVE_DAYS and \
                entry.get("local_time"):
            hh, mm = (int(x) for x in str(entry["local_time"]).split(":")[:2])
            return draw.Occasion(time(hh, mm), float(entry.get("open_for_hours", 96)))
    raise SimulationError(
        "the study's schedule has no entry every 14 days at a fixed local time; the simulator's "
        "waves are two weeks apart (as in keep4o-panel)", code="schedule_unsupported")


def _max_waves(content: Mapping[str, Any]) -> int:
    length = int(content["study"].get("schedule", {}).get("study_length_days") or 0)
    return length // draw.sim.WAVE_DAYS + 1


def _event_date(content: Mapping[str, Any]) -> date:
    for event in content["study"].get("events", []) or []:
        if event.get("key") == spec.GPT4O_RETIREMENT.key:
            return date.fromisoformat(str(event["date"]))
    return date.fromisoformat(spec.GPT4O_RETIREMENT.date)


# ---- the run ---------------------------------------------------------------------------------


def simulate(
    engine: Engine,
    options: SimulateOptions,
    *,
    surveys_dir: Path,
    default_study: str = "keep4o-panel",
    now: datetime | None = None,
    progress: bool = False,
) -> SimulationResult:
    """Draw and store a synthetic study; see the module docstring. ``now`` bounds the fake
    clock: every simulated step happens before it (default: the current time)."""
    from app.studies import service as studies

    key = options.study or default_study
    if options.batch_size < 1:
        raise SimulationError("the batch size must be at least 1", details={"field": "batch"})
    end = now or utcnow()
    own = _own_engine(engine)
    try:
        with Session(own, expire_on_commit=False) as session:
            study = ensure_study(session, key, surveys_dir)
            if not options.append and _participant_count(session, study.id) > 0:
                raise SimulationError(
                    f"study {key!r} already has participants; simulate fills an empty study. "
                    "Use --append to add synthetic participants to it anyway",
                    code="study_not_empty", details={"field": "study"})
            protocol = studies.latest_protocol(session, study.id)
            assert protocol is not None
            content = protocol.content
            study_id = study.id
        limit = _max_waves(content)
        if options.waves > limit:
            raise SimulationError(
                f"--waves {options.waves}: the study's schedule has {limit} two-weekly waves "
                "(baseline included)", details={"field": "waves"})
        unknown = sorted(set(options.effects or {}) - set(draw.sim.DEFAULT_EFFECTS))
        if unknown:
            raise SimulationError(
                f"effects: unknown outcome(s) {', '.join(unknown)}; known: "
                f"{', '.join(draw.sim.DEFAULT_EFFECTS)}", details={"field": "effects"})
        run = f"sim{options.seed}-{secrets.token_hex(3)}"
        try:
            drawn = draw.draw_study(
                options.participants, options.waves, seed=options.seed,
                instruments=_instruments(content), occasion=_occasion(content),
                event=_event_date(content), end=end, effects=options.effects, run=run,
                extras=options.extras)
        except draw.DrawError as exc:
            raise SimulationError(str(exc)) from exc
        except (ValueError, TypeError) as exc:  # e.g. an unknown outcome or effect name
            raise SimulationError(f"cannot simulate: {exc}", details={"field": "effects"}) from exc
        steps = drawn.steps()
        started = clock.perf_counter()
        player = _Player(study_id, drawn)
        with _batches(own, options.batch_size) as batch:
            for step in _progress(steps, progress):
                try:
                    player.play(batch.session, step)
                except AppError as exc:  # a service refused a step: say which, and what stays
                    committed = batch.count - batch.count % batch.size
                    raise SimulationError(
                        f"a simulated {step.kind!r} step at {step.at:%Y-%m-%d %H:%M} UTC was "
                        f"refused ({exc.message}); the {committed} steps before the current "
                        "batch stay committed", code="simulation_failed") from exc
                batch.step()
            batch.session.commit()
            player.expire(batch.session, end)
        seconds = clock.perf_counter() - started
    finally:
        own.dispose()
    fates: dict[str, int] = {}
    for person in drawn.people:
        fates[person.fate] = fates.get(person.fate, 0) + 1
    return SimulationResult(
        study=key, run=run, participants=options.participants, people=len(drawn.people),
        responses=player.responses, steps=len(steps), seconds=seconds, fates=fates,
        safety_events=player.safety_events, unanswerable=player.unanswerable,
        start=steps[0].at, end=steps[-1].at, truth=drawn.truth)


def _progress(steps: list[draw.Step], enabled: bool) -> Any:
    import sys

    from tqdm import tqdm

    return tqdm(steps, unit=" steps", disable=not enabled, file=sys.stderr, desc="simulate",
                mininterval=0.5)


class _Batch:
    def __init__(self, conn: Any, size: int) -> None:
        self.conn = conn
        self.size = size
        self.count = 0
        self.outer = conn.begin()
        # The services commit after their work; joined to our transaction ("rollback_only"),
        # their commits only flush, and we commit every `size` steps. (Savepoints would do as
        # well on SQLite, but thousands of subtransactions slow PostgreSQL down.)
        self.session = Session(bind=conn, join_transaction_mode="rollback_only",
                               expire_on_commit=False)

    def step(self) -> None:
        self.session.commit()
        self.count += 1
        if self.count % self.size == 0:
            self.outer.commit()
            self.outer = self.conn.begin()


@contextmanager
def _batches(engine: Engine, size: int) -> Iterator[_Batch]:
    with engine.connect() as conn:
        batch = _Batch(conn, size)
        try:
            yield batch
            batch.session.commit()
            batch.outer.commit()
        except BaseException:
            batch.session.close()
            batch.outer.rollback()
            raise
        finally:
            batch.session.close()


class _Player:
    """Plays each step through the services, the fake clock at the step's time."""

    def __init__(self, study_id: int, drawn: draw.DrawnStudy) -> None:
        self.study_id = study_id
        self.people = {p.index: p for p in drawn.people}
        self.ids: dict[int, str] = {}  # person index -> participant id
        self.participants: dict[int, Any] = {}
        self.verified: dict[int, datetime] = {}
        self.responses = 0
        self.safety_events = 0
        self.unanswerable = 0
        self._study: Any = None
        self._protocol: dict[str, Any] | None = None

    def play(self, session: Session, step: draw.Step) -> None:
        getattr(self, f"_{step.kind}")(session, step, self.people[step.person])

    # -- the steps --

    def _join(self, session: Session, step: draw.Step, person: draw.Person) -> None:
        from app.notify import service as notify
        from app.participants import service as participants
        from app.participants.models import EnrollmentCreate
        from app.studies import service as studies
        from app.studies.models import Study

        if self._study is None:
            self._study = session.get(Study, self.study_id)
            self._protocol = studies.current_protocol(session, self.study_id)
        assert self._protocol is not None
        # model_construct: the reserved .invalid domain is refused by address validation, and
        # that is the point: nothing can ever be delivered to these addresses.
        data = EnrollmentCreate.model_construct(
            email=person.email, language=person.language, timezone=person.timezone,
            screening=dict(person.screening))
        eligible, participant, _ = participants.enroll(
            session, self._study, data, self._protocol["eligibility"], now=step.at)
        if eligible and participant is not None:
            notify.cancel_pending(session, participant.id, now=step.at)
            self.ids[person.index] = participant.id
            self.participants[person.index] = participant

    def _verify(self, session: Session, step: draw.Step, person: draw.Person) -> None:
        from app.participants import service as participants

        pid = self.ids[person.index]
        verified = participants.mark_contact_verified(session, pid, step.at)
        if verified is not None:
            self.verified[person.index] = verified

    def _decide(self, session: Session, step: draw.Step, person: draw.Person,
                decision: str) -> None:
        from app.consent import service as consent
        from app.consent.models import ConsentSubmit

        participant = self.participants[person.index]
        version = consent.current_version(session, participant.study_id)
        languages = consent.documents_of(session, version.id)  # type: ignore[arg-type]
        language = person.language if person.language in languages else next(iter(languages))
        statements = [s["id"] for s in version.statements]
        submit = ConsentSubmit(version=version.version, language=language, decision=decision,
                               signature_name=f"Synthetic Participant {person.index}"
                               if decision == "consent" else None,
                               statements=statements if decision == "consent" else [])
        consent.record_decision(session, participant, submit,
                                identity_verified_at=self.verified[person.index], now=step.at)

    def _consent(self, session: Session, step: draw.Step, person: draw.Person) -> None:
        self._decide(session, step, person, "consent")

    def _decline(self, session: Session, step: draw.Step, person: draw.Person) -> None:
        self._decide(session, step, person, "decline")

    def _answer(self, session: Session, step: draw.Step, person: draw.Person) -> None:
        from app.safety import service as safety
        from app.scheduling import service as scheduling
        from app.surveys import service as surveys

        participant = self.participants[person.index]
        scheduling.plan_at_enrollment(session, participant, now=step.at)
        session.commit()
        due: dict[str, Any] = {}
        for instance in surveys.open_instances(session, participant, step.at):
            if instance.scheduled_at <= step.at:
                due[instance.instrument_key] = instance  # the latest occasion wins
        at = step.at
        for key, answers in step.answers.items():
            instance = due.get(key)
            if instance is None:
                self.unanswerable += 1
                continue
            result = surveys.submit(session, participant, instance.id, answers,
                                    f"{ACTOR}:{instance.id}", now=at)
            self.responses += 1
            self.safety_events += bool(result.show_crisis_resources)
            # nobody is contacted, staff neither: no on-call alert, no escalation
            safety.close_simulated(session, participant.id, actor=ACTOR, now=at)
            at += timedelta(seconds=40 + (self.responses * 37) % 80)  # filling in the next one

    def _finish(self, session: Session, participant: Any, at: datetime) -> None:
        from app.notify import service as notify
        from app.surveys import service as surveys

        _expire_overdue(session, at)
        surveys.cancel_open_instances(session, participant.id)
        notify.cancel_pending(session, participant.id, now=at)

    def _complete(self, session: Session, step: draw.Step, person: draw.Person) -> None:
        from app.audit import service as audit

        participant = self.participants[person.index]
        self._finish(session, participant, step.at)
        old = participant.status
        # No service marks completion yet: the last wave is behind them, nothing more is planned.
        participant.status = "completed"
        session.add(participant)
        audit.append(session, actor=ACTOR, action="participant.complete",
                     target=f"participant:{participant.id}", old_value={"status": old},
                     new_value={"status": "completed"}, now=step.at)

    def _pause(self, session: Session, step: draw.Step, person: draw.Person) -> None:
        from app.participants import service as participants

        participant = self.participants[person.index]
        participants.set_paused(session, participant, True, now=step.at)
        self._finish(session, participant, step.at)

    def _withdraw(self, session: Session, step: draw.Step, person: draw.Person) -> None:
        from app.consent import service as consent

        participant = self.participants[person.index]
        assert step.scope in ("stop_contact", "delete_data")
        _expire_overdue(session, step.at)
        withdrawal, token = consent.start_withdrawal(session, participant, step.scope,
                                                     now=step.at)
        session.commit()
        consent.confirm_withdrawal_by_policy(session, participant, withdrawal.id, token,  # type: ignore[arg-type]
                                             now=step.at + timedelta(minutes=2))

    # -- the end --

    def expire(self, session: Session, end: datetime) -> None:
        """Expire the surveys nobody answered, as the dispatcher would have."""
        last = min(end, max((s.at for p in self.people.values() for s in p.steps),
                            default=end) + timedelta(days=1))
        _expire_overdue(session, last)


def _expire_overdue(session: Session, at: datetime) -> None:
    """Missed surveys become expired (not cancelled) before a participant leaves."""
    from app.scheduling import dispatcher

    while dispatcher.expire_overdue(session, at) >= dispatcher.BATCH:
        pass

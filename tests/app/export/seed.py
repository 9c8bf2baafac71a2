"""Fill a database with a synthetic study quickly, by inserting rows directly.

``Seeder(engine).populate(n, waves, seed=...)`` creates participants with contacts (emails),
consent records, survey instances, responses (answers generated from the pinned instrument
definitions, display conditions respected, checked by the app's own validator) and scores (the
app's own scoring). Used by the export tests and bench/export.py until ``wellpanel simulate``
exists.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, insert, select

from app.consent.models import ConsentRecord, ConsentVersion, Withdrawal
from app.participants.models import Contact, Participant
from app.studies.models import ProtocolVersion, Study
from app.surveys.answers import validate_answers
from app.surveys.instruments import Instrument
from app.surveys.models import ResponseScore, SurveyInstance, SurveyResponse
from app.surveys.scoring import score

START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
TIMEZONES = ["Europe/Berlin", "America/New_York", "America/Sao_Paulo", "Asia/Shanghai",
             "Europe/London", "Australia/Sydney", "UTC"]
LANGUAGES = ["en", "en", "en", "de", "pt-BR", "zh-CN"]
FOLLOW_UP = ["who5", "phq9", "gad7", "ucla3", "swls", "social_contact", "ai_usage",
             "ai_dependence"]


@dataclass
class Person:
    id: str
    email: str
    status: str
    enrolled_at: datetime | None
    consented: bool = True
    withdrawal: tuple[str, datetime] | None = None  # (scope, confirmed_at)
    demographics: dict[str, Any] = field(default_factory=dict)
    free_text: list[str] = field(default_factory=list)


def _weighted(rng: random.Random, values: list[Any], weights: list[float]) -> Any:
    return rng.choices(values, weights=weights, k=1)[0]


class Seeder:
    def __init__(self, engine: Engine, study_key: str = "keep4o-panel",
                 answer_pool: int = 0) -> None:
        """``answer_pool`` > 0 reuses that many generated answer sets (and scores) per
        instrument instead of generating each one: much faster for large benchmarks."""
        self.engine = engine
        # Participant ids from their own seeded stream: exports key date shifts and pseudonyms
        # on them, so random ids made some exports of one seed pass and others not.
        self._ids = random.Random(20261203)
        self.answer_pool = answer_pool
        self._pool: dict[str, list[tuple[dict[str, Any], Any]]] = {}
        with engine.connect() as conn:
            self.study_id = conn.execute(
                select(Study.__table__.c.id).where(Study.__table__.c.key == study_key)
            ).scalar_one()
            pv = ProtocolVersion.__table__
            row = conn.execute(
                select(pv.c.version, pv.c.content).where(pv.c.study_id == self.study_id)
                .order_by(pv.c.version.desc()).limit(1)
            ).one()
            cv = ConsentVersion.__table__
            self.consent_version_id = conn.execute(
                select(cv.c.id).where(cv.c.study_id == self.study_id)
                .order_by(cv.c.ordinal.desc()).limit(1)
            ).scalar_one()
            sr = SurveyResponse.__table__
            self._rid_base = (conn.execute(select(func.max(sr.c.id))).scalar() or 0) + 1
        self.protocol_version = row.version
        self.content = row.content
        self.instruments = {
            k: Instrument.model_validate(v["definition"])
            for k, v in self.content["instruments"].items()
        }
        self.accepted = {k: v["languages"] for k, v in self.content["instruments"].items()}
        self.rows: dict[str, list[dict[str, Any]]] = {}
        self.people: list[Person] = []

    # ---- answers -----------------------------------------------------------------------------

    def answers(self, key: str, rng: random.Random, *, demographics: Mapping[str, Any] = (),
                free_text: str | None = None, partial: bool = False) -> dict[str, Any]:
        inst = self.instruments[key]
        out: dict[str, Any] = {}
        for item in inst.items:
            if item.show_if is not None and not item.show_if.holds(out.get(item.show_if.item)):
                continue
            if item.id in demographics:
                out[item.id] = demographics[item.id]
                continue
            if not item.required and item.type != "text" and rng.random() < 0.3:
                continue
            if partial and item.type == "single_choice" and rng.random() < 0.2:
                continue
            if item.type == "single_choice":
                out[item.id] = rng.choice(item.option_values)
            elif item.type == "multiple_choice":
                exclusive = [o.value for o in item.options if o.exclusive]
                regular = [o.value for o in item.options if not o.exclusive]
                if exclusive and rng.random() < 0.1:
                    out[item.id] = [exclusive[0]]
                else:
                    out[item.id] = rng.sample(regular, rng.randint(1, min(3, len(regular))))
            elif item.type in ("integer", "number"):
                lo, hi = item.min or 0, min(item.max or 40, 40)
                v = rng.uniform(lo, hi)
                out[item.id] = int(v) if item.type == "integer" else round(v, 1)
            elif item.type == "text" and free_text is not None:
                out[item.id] = free_text[: item.max_length or 100]
        try:
            return validate_answers(inst, out)
        except Exception:
            if partial:  # a partial answer set may be invalid: fall back to a complete one
                return self.answers(key, rng, demographics=demographics, free_text=free_text)
            raise

    # ---- rows --------------------------------------------------------------------------------

    def _add(self, table: str, row: dict[str, Any]) -> None:
        self.rows.setdefault(table, []).append(row)

    def participant(
        self,
        rng: random.Random,
        *,
        enrolled_at: datetime,
        waves: int,
        demographics: Mapping[str, Any] | None = None,
        consented: bool = True,
        status: str = "active",
        withdraw: tuple[str, int] | None = None,  # (scope, after this many waves)
        answer_after_withdrawal: bool = False,
        miss: float = 0.1,
        free_text: str | None = None,
        language: str | None = None,
        timezone: str | None = None,
    ) -> Person:
        pid = str(uuid.UUID(int=self._ids.getrandbits(128), version=4))
        email = f"p-{pid[:8]}-{rng.randrange(10**6)}@example.org"
        language = language or rng.choice(LANGUAGES)
        tz = timezone or rng.choice(TIMEZONES)
        demo = dict(demographics or self.demographics(rng))
        person = Person(pid, email, status, enrolled_at if consented else None, consented,
                        demographics=demo)
        self._add("participants", dict(
            id=pid, study_id=self.study_id, status=status if consented else "enrolled",
            language=language, timezone=tz, created_at=enrolled_at - timedelta(minutes=5),
            enrolled_at=enrolled_at if consented else None, withdrawn_at=None))
        self._add("contacts", dict(participant_id=pid, study_id=self.study_id, email=email,
                                   verified_at=enrolled_at, updated_at=enrolled_at))
        if consented:
            self._add("consent_records", dict(
                participant_id=pid, consent_version_id=self.consent_version_id,
                decision="consent", language="en", document_sha256="0" * 64,
                signature_name=f"Signer {email}", signature_meaning="typed name",
                statements=["read_information", "voluntary", "data_use", "adult_confirmed"],
                decided_at=enrolled_at, identity_method="email_magic_link",
                identity_verified_at=enrolled_at))
        withdrawn_at = None
        if withdraw is not None:
            scope, after = withdraw
            withdrawn_at = enrolled_at + timedelta(days=14 * after + 3)
            person.withdrawal = (scope, withdrawn_at)
            person.status = "withdrawn"
            self.rows["participants"][-1].update(status="withdrawn", withdrawn_at=withdrawn_at)
            self._add("withdrawals", dict(
                participant_id=pid, scope=scope, requested_at=withdrawn_at - timedelta(hours=1),
                confirm_token_hash=uuid.uuid4().hex + uuid.uuid4().hex,
                confirmed_at=withdrawn_at, data_deleted=False, outcome_note=None))
        for wave in range(waves):
            keys = list(self.instruments) if wave == 0 else FOLLOW_UP
            when = enrolled_at + timedelta(days=14 * wave, hours=rng.randint(1, 30))
            if withdrawn_at is not None and when > withdrawn_at and not answer_after_withdrawal:
                break
            if wave > 0 and rng.random() < miss:
                continue
            for pos, key in enumerate(keys):
                if key not in self.instruments:
                    continue
                submitted = when + timedelta(minutes=2 * pos)
                self._response(rng, person, key, wave, pos, submitted, language, tz, demo,
                               free_text)
        self.people.append(person)
        return person

    def _response(self, rng: random.Random, person: Person, key: str, wave: int, pos: int,
                  submitted: datetime, language: str, tz: str, demo: Mapping[str, Any],
                  free_text: str | None) -> None:
        inst = self.instruments[key]
        iid = str(uuid.uuid4())
        lang = language if language in self.accepted[key] else "en"
        self._add("survey_instances", dict(
            id=iid, participant_id=person.id, protocol_version=self.protocol_version,
            schedule_entry="baseline" if wave == 0 else "biweekly", instrument_key=key,
            instrument_version=inst.version, wave=wave, position=pos, status="completed",
            scheduled_at=submitted - timedelta(hours=1), local_time="2026-01-01T09:00",
            timezone=tz, closes_at=submitted + timedelta(days=14),
            opened_at=submitted - timedelta(hours=1), first_viewed_at=submitted,
            completed_at=submitted, created_at=submitted - timedelta(hours=1)))
        overrides: Mapping[str, Any] = {}
        if key == "baseline":
            overrides = demo
        elif key == "ai_usage" and free_text:
            overrides = {"used_models": ["claude", "other"]}
        pool = self._pool.setdefault(key, [])
        if self.answer_pool and not overrides and len(pool) >= self.answer_pool:
            answers, scored = rng.choice(pool)
        else:
            answers = self.answers(key, rng, demographics=overrides, free_text=free_text,
                                   partial=rng.random() < 0.05)
            scored = score(inst, answers)
            if self.answer_pool and not overrides:
                pool.append((answers, scored))
        if free_text and key == "ai_usage" and "other_model_name" in answers:
            person.free_text.append(answers["other_model_name"])
        rid = len(self.rows.get("survey_responses", [])) + self._rid_base
        self._add("survey_responses", dict(
            id=rid, instance_id=iid, participant_id=person.id, instrument_key=key,
            instrument_version=inst.version, language=lang,
            translation_status=inst.languages[lang].translation_status, answers=answers,
            submitted_at=submitted, idempotency_key=uuid.uuid4().hex, request_sha256="0" * 64))
        if scored is not None:
            def f(v: Any) -> float | None:
                return None if v is None else float(v)

            self._add("response_scores", dict(
                response_id=rid, primary_name=scored.primary_name, primary=f(scored.primary),
                raw=f(scored.raw), raw_sum=float(scored.raw_sum), band=scored.band,
                valid=scored.valid, n_answered=scored.n_answered, n_items=scored.n_items,
                prorated=scored.prorated,
                subscales={k: f(v) for k, v in scored.subscales.items()}, scored_at=submitted))

    def demographics(self, rng: random.Random) -> dict[str, Any]:
        return {
            "age_band": _weighted(rng, ["age_18_24", "age_25_34", "age_35_44", "age_45_54",
                                        "age_55_64", "age_65_plus", "prefer_not_to_say"],
                                  [20, 35, 22, 12, 6, 3, 2]),
            "gender": _weighted(rng, ["woman", "man", "non_binary", "another_gender",
                                      "prefer_not_to_say"], [45, 45, 5, 2, 3]),
            "country": _weighted(rng, ["us", "de", "gb", "br", "cn", "jp", "au", "in", "za",
                                       "other"], [30, 20, 12, 10, 8, 6, 5, 4, 2, 3]),
            "living_situation": _weighted(rng, ["alone", "with_partner", "with_family",
                                                "with_others", "other", "prefer_not_to_say"],
                                          [35, 35, 15, 10, 3, 2]),
        }

    def populate(self, n: int, waves: int, *, seed: int = 0, **kw: Any) -> list[Person]:
        rng = random.Random(seed)
        out = []
        for i in range(n):
            enrolled = START + timedelta(days=rng.randint(0, 90), minutes=i)
            out.append(self.participant(rng, enrolled_at=enrolled, waves=waves, **kw))
        return out

    # ---- writing -----------------------------------------------------------------------------

    TABLES = {
        "participants": Participant, "contacts": Contact, "consent_records": ConsentRecord,
        "withdrawals": Withdrawal, "survey_instances": SurveyInstance,
        "survey_responses": SurveyResponse, "response_scores": ResponseScore,
    }

    def flush(self, batch: int = 5000) -> None:
        """Insert everything collected so far (in foreign-key order) and start afresh."""
        with self.engine.begin() as conn:
            for name, model in self.TABLES.items():
                rows = self.rows.get(name, [])
                for chunk in _chunks(rows, batch):
                    conn.execute(insert(model.__table__), chunk)  # type: ignore[attr-defined]
        self._rid_base += len(self.rows.get("survey_responses", []))
        self.rows = {}
        if self.engine.dialect.name == "postgresql":
            with self.engine.begin() as conn:
                conn.exec_driver_sql(
                    "SELECT setval(pg_get_serial_sequence('survey_responses', 'id'), "
                    "(SELECT COALESCE(MAX(id), 1) FROM survey_responses))")


def _chunks(rows: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for i in range(0, len(rows), size):
        yield rows[i: i + size]

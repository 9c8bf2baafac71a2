"""Drawing a synthetic study: who joins when, what they answer, how they leave. Pure: no database.

The outcome scores and AI usage come from :func:`analysis.simulate.simulate_panel`, so the true
within- and between-person effects of GPT-4o hours and of an access loss are known. This module
turns that panel into participants' scripts: a time-ordered list of steps (join, confirm the
address, consent, answer a wave, withdraw...) with the exact answers of each questionnaire.
Scores become item answers by inverting each instrument's scoring (item answers whose sum gives
the drawn score), so the stored and scored responses reproduce the simulated panel. The
simulator scores on the instruments' own scales and steps (``analysis.spec.INSTRUMENTS``
follows the instrument files), so no conversion is needed.

Wave ``w`` of the simulator is the study's baseline occasion (``w = 0``) or the biweekly
occasion ``w`` (study day ``14 w``); the four-weekly instruments come with the even waves, as in
the simulator.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from analysis import simulate as sim
from analysis import spec
from app.surveys.instruments import Instrument

USAGE_INSTRUMENT = "ai_usage"
BASELINE_INSTRUMENT = "baseline"
EMAIL_DOMAIN = "example.invalid"  # reserved (RFC 2606): nothing can ever be delivered there

# Where people live: country -> (weight, language, time zone). Skewed like a real online panel,
# so that the export's k-anonymity is reachable without suppressing many people.
COUNTRIES: dict[str, tuple[float, str, str]] = {
    "us": (0.26, "en", "America/New_York"),
    "gb": (0.10, "en", "Europe/London"),
    "ca": (0.05, "en", "America/Toronto"),
    "au": (0.04, "en", "Australia/Sydney"),
    "de": (0.14, "de", "Europe/Berlin"),
    "at": (0.02, "de", "Europe/Vienna"),
    "br": (0.09, "pt-BR", "America/Sao_Paulo"),
    "cn": (0.06, "zh-CN", "Asia/Shanghai"),
    "tw": (0.02, "zh-CN", "Asia/Taipei"),
    "jp": (0.06, "en", "Asia/Tokyo"),
    "fr": (0.04, "en", "Europe/Paris"),
    "nl": (0.03, "en", "Europe/Amsterdam"),
    "in": (0.03, "en", "Asia/Kolkata"),
    "mx": (0.02, "en", "America/Mexico_City"),
    "prefer_not_to_say": (0.04, "en", "UTC"),
}
_AGE = {"18-24": "age_18_24", "25-34": "age_25_34", "35-44": "age_35_44",
        "45-54": "age_45_54", "55-64": "age_55_64", "65+": "age_65_plus"}
_GENDER = {"woman": "woman", "man": "man", "non-binary": "non_binary",
           "prefer not to say": "prefer_not_to_say"}
_LIVING = {"alone": "alone", "with partner": "with_partner", "with family": "with_family",
           "shared": "with_others"}
_PURPOSE_OPTION = {"companionship": "companionship_romance",
                   "emotional_support": "emotional_support", "advice": "advice", "work": "work",
                   "creative": "creative"}


class DrawError(ValueError):
    """The study cannot be simulated as asked (e.g. more waves than its schedule has)."""


@dataclass
class Step:
    """One thing a participant does at ``at`` (UTC)."""

    at: datetime
    kind: str  # join | verify | consent | decline | answer | withdraw | pause | complete
    person: int
    order: int = 0  # tie-break: a person's steps keep their order at equal times
    wave: int | None = None
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)  # instrument -> answers
    scope: str | None = None  # withdrawal scope


@dataclass
class Person:
    index: int
    email: str
    language: str
    timezone: str
    country: str
    screening: dict[str, bool]
    fate: str  # completed | paused | stop_contact | delete_data | never_consented | declined
    #  | ineligible
    steps: list[Step] = field(default_factory=list)


@dataclass
class DrawnStudy:
    people: list[Person]
    truth: dict[str, Any]

    def steps(self) -> list[Step]:
        """Every step of every person, in time order (a person's own order kept on ties)."""
        out = [s for p in self.people for s in p.steps]
        out.sort(key=lambda s: (s.at, s.person, s.order))
        return out


@dataclass(frozen=True)
class Occasion:
    """The recurring schedule entry the waves follow (from the study's protocol)."""

    local_time: time
    open_for_hours: float
    every_days: int = sim.WAVE_DAYS


# ---- scores -> item answers ------------------------------------------------------------------


def answers_for_score(instrument: Instrument, primary: float, rng: np.random.Generator
                      ) -> dict[str, Any]:
    """Item answers whose score (by the instrument's own scoring block) is ``primary``.

    The scored total is spread at random over the items; items that raise a safety flag (e.g.
    PHQ-9 item 9) stay at their lowest value except in a minority of high scores, as in real
    data, so safety events are rare but present.
    """
    scoring = instrument.scoring
    assert scoring is not None
    items = [instrument.item(i) for i in scoring.items]
    ranges = [item.value_range() or (0, 0) for item in items]
    raw = primary / scoring.multiplier
    total = raw * len(items) if scoring.method == "mean" else raw
    lows = [int(lo) for lo, _ in ranges]
    rooms = [int(hi) - int(lo) for lo, hi in ranges]
    extra = int(round(total)) - sum(lows)
    extra = max(0, min(extra, sum(rooms)))
    safety_items = {rule.when.item for rule in instrument.safety}
    fraction = extra / max(sum(rooms), 1)
    spread = [j for j, item in enumerate(items) if item.id not in safety_items]
    values = list(lows)
    last = [j for j, item in enumerate(items) if item.id in safety_items]
    if last and extra > 0:
        share = 0.35 if fraction >= 0.55 else 0.06 if fraction >= 0.35 else 0.0
        if rng.random() < share:
            j = last[int(rng.integers(len(last)))]
            values[j] += 1
            extra -= 1
    extra = _spread(values, [j for j in spread], rooms, lows, extra, rng)
    _spread(values, last, rooms, lows, extra, rng)  # only when the others are full
    answers: dict[str, Any] = {}
    for item, value, (lo, hi) in zip(items, values, ranges, strict=True):
        stored = int(lo) + int(hi) - value if item.reverse_scored else value
        answers[item.id] = stored
    for item in instrument.items:  # optional unscored single choices, e.g. PHQ-9 "difficulty"
        if item.id in answers or item.required or item.show_if is not None:
            continue
        if item.type == "single_choice" and item.has_integer_options:
            options = sorted(int(v) for v in item.option_values)
            pick = min(len(options) - 1, int(fraction * len(options)))
            answers[item.id] = options[pick]
    return answers


def _spread(values: list[int], slots: Sequence[int], rooms: Sequence[int], lows: Sequence[int],
            extra: int, rng: np.random.Generator) -> int:
    open_slots = [j for j in slots if values[j] - lows[j] < rooms[j]]
    while extra > 0 and open_slots:
        k = int(rng.integers(len(open_slots)))
        j = open_slots[k]
        values[j] += 1
        extra -= 1
        if values[j] - lows[j] >= rooms[j]:
            open_slots.pop(k)
    return extra


def usage_answers(rows: Sequence[Mapping[str, Any]], lost_model: str,
                  rng: np.random.Generator) -> dict[str, Any]:
    """The ai_usage answers of one wave from the simulator's usage rows (one per model)."""
    used = [r for r in rows if r["hours_per_week"] > 0]
    answers: dict[str, Any] = {}
    first = rows[0]
    if not used:
        answers["used_models"] = ["none"]
    else:
        answers["used_models"] = [str(r["model"]) for r in used]
        for r in used:
            h = float(r["hours_per_week"])
            answers[f"hours_{r['model']}"] = h if h != int(h) else int(h)
        purposes = [opt for p, opt in _PURPOSE_OPTION.items() if bool(first[f"purpose_{p}"])]
        answers["purposes"] = purposes or ["other"]
        framing = first["framing"]
        answers["ai_framing"] = int(framing) if not pd.isna(framing) else 2
    lost = bool(first["access_loss"])
    answers["lost_access"] = "yes" if lost else "no"
    if lost:
        answers["lost_access_models"] = [lost_model]
        distress = first["access_loss_distress"]
        answers["lost_access_feeling"] = int(distress) if not pd.isna(distress) else \
            int(rng.integers(0, 5))
    return answers


# ---- the whole study -------------------------------------------------------------------------


def effective_calendar(n_waves: int, event: date, end: date) -> sim.CalendarParams:
    """Enrollment around the event, early enough that every simulated wave (and what follows
    it) lies before ``end``: simulated people never have anything left to be sent."""
    room = (end - event).days - sim.WAVE_DAYS * (n_waves - 1) - 40
    after = min(30, room)
    before = max(150, -after + 45)
    return sim.CalendarParams(event_date=event.isoformat(), enroll_from_days_before=before,
                              enroll_to_days_after=after)


def draw_study(
    n_participants: int,
    n_waves: int,
    *,
    seed: int,
    instruments: Mapping[str, Instrument],
    occasion: Occasion,
    event: date,
    end: datetime,
    effects: Mapping[str, Any] | None = None,
    run: str = "sim",
    extras: bool = True,
) -> DrawnStudy:
    """Draw ``n_participants`` consenting participants over ``n_waves`` waves (baseline
    included), plus (``extras``) people who screen out, never consent or decline."""
    if n_participants < 1:
        raise DrawError("--participants must be at least 1")
    if n_waves < 2:
        raise DrawError("--waves must be at least 2 (the baseline and one follow-up)")
    outcomes = [k for k in spec.OUTCOMES if k in instruments and instruments[k].scoring]
    calendar = effective_calendar(n_waves, event, end.date())
    panel = sim.simulate_panel(n_participants, n_waves, effects=effects, seed=seed,
                               outcomes=outcomes, calendar=calendar, include_calendar=True,
                               rounding=True)
    rng = np.random.default_rng([seed, 7])
    people: list[Person] = []
    responses = panel["responses"]
    usage = panel["usage"]
    wide = panel["panel"]
    by_pid_resp = _by_pid_and_wave(responses)
    by_pid_usage = _by_pid_and_wave(usage)
    by_pid_wide = {pid: g.set_index("wave") for pid, g in wide.groupby("pid", sort=False)}
    event_col = spec.event_column(spec.GPT4O_RETIREMENT.key)
    codes = list(COUNTRIES)
    weights = np.array([COUNTRIES[c][0] for c in codes])
    weights = weights / weights.sum()
    for i, row in enumerate(panel["participants"].itertuples(index=False)):
        country = codes[int(rng.choice(len(codes), p=weights))]
        _, language, tz = COUNTRIES[country]
        person = Person(i, f"{run}-{i:06d}@{EMAIL_DOMAIN}", language, tz, country,
                        {"adult": True, "uses_ai_chat": True}, _fate(row.status, rng))
        w = by_pid_wide[row.pid]
        # days from enrollment to the event, as the simulator drew it (to the week)
        ws0 = int(w.loc[0, event_col])
        offset = -7 * ws0 - int(rng.integers(0, 7))
        _script(person, row, offset, event, occasion, instruments, rng,
                by_pid_resp.get(row.pid, {}), by_pid_usage.get(row.pid, {}), n_waves)
        people.append(person)
    if extras:
        people += _extras(len(people), n_participants, run, calendar, event, rng)
    truth = dict(panel.truth)  # the simulator's scales are the instruments' (analysis.spec)
    truth["units"] = {
        "predictor": "hours_4o: hours per week with GPT-4o (ChatGPT + API), as exported",
        "time": "weeks since enrollment",
        "outcomes": "the study instruments' primary scores, as exported",
    }
    return DrawnStudy(people, truth)


def _by_pid_and_wave(frame: pd.DataFrame) -> dict[Any, dict[int, list[dict[str, Any]]]]:
    """pid -> wave -> rows as plain dicts (pandas row access is slow one row at a time)."""
    out: dict[Any, dict[int, list[dict[str, Any]]]] = {}
    for rec in frame.to_dict("records"):
        out.setdefault(rec["pid"], {}).setdefault(int(rec["wave"]), []).append(rec)
    return out


def _fate(status: str, rng: np.random.Generator) -> str:
    if status == "completed":
        return "completed"
    if status == "paused":
        return "paused"
    return "delete_data" if rng.random() < 0.25 else "stop_contact"


def _local(day: date, at: time, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, at, tzinfo=zone).astimezone(UTC)


def _minutes(rng: np.random.Generator, lo: int, hi: int) -> timedelta:
    return timedelta(minutes=int(rng.integers(lo, hi + 1)), seconds=int(rng.integers(0, 60)))


def _script(
    person: Person, row: Any, offset: int, event: date, occasion: Occasion,
    instruments: Mapping[str, Instrument], rng: np.random.Generator,
    resp_by_wave: Mapping[int, list[dict[str, Any]]],
    usage_by_wave: Mapping[int, list[dict[str, Any]]], n_waves: int,
) -> None:
    zone = ZoneInfo(person.timezone)
    join_day = event - timedelta(days=offset)
    join = _local(join_day, time(int(rng.integers(8, 21)), int(rng.integers(0, 60))), zone)
    verify = join + _minutes(rng, 1, 40)
    consent = verify + _minutes(rng, 1, 15)
    add = _adder(person)
    add(Step(join, "join", person.index))
    add(Step(verify, "verify", person.index))
    add(Step(consent, "consent", person.index))
    enrolled_day = consent.astimezone(zone).date()
    lost_model = "gpt4o_api"
    chat = any(r["model"] == "gpt4o_chatgpt" and r["hours_per_week"] > 0
               for rows in usage_by_wave.values() for r in rows)
    if chat or row.used_4o_before_retirement:
        lost_model = "gpt4o_chatgpt"
    waves = sorted(set(resp_by_wave) | set(usage_by_wave))
    max_late = max(0, min(3, int((occasion.open_for_hours - 6) // 24)))
    last_at = consent
    for w in waves:
        answers: dict[str, dict[str, Any]] = {}
        if w == 0:
            at = consent + _minutes(rng, 2, 12)
            if BASELINE_INSTRUMENT in instruments:
                answers[BASELINE_INSTRUMENT] = baseline_answers(row, person, rng)
        else:
            late = int(rng.integers(0, max_late + 1))
            day = enrolled_day + timedelta(days=occasion.every_days * w + late)
            if late == 0:
                start = datetime.combine(day, occasion.local_time) + _minutes(rng, 5, 240)
                at = _local(day, min(start.time(), time(23, 30)), zone)
            else:
                at = _local(day, time(int(rng.integers(7, 23)), int(rng.integers(0, 60))), zone)
        for r in resp_by_wave.get(w, []):
            key = r["instrument"]
            if key not in instruments or pd.isna(r["score"]):
                continue  # an instrument skipped at this wave: its survey expires
            answers[key] = answers_for_score(instruments[key], float(r["score"]), rng)
        if w in usage_by_wave and USAGE_INSTRUMENT in instruments:
            answers[USAGE_INSTRUMENT] = usage_answers(usage_by_wave[w], lost_model, rng)
        if answers:
            add(Step(at, "answer", person.index, wave=w, answers=answers))
            last_at = at
    final_day = enrolled_day + timedelta(days=occasion.every_days * (n_waves - 1) + 6)
    if person.fate == "completed":
        add(Step(max(_local(final_day, time(12, 0), zone), last_at + timedelta(hours=1)),
                 "complete", person.index))
    else:
        leave = last_at + timedelta(days=int(rng.integers(3, 20)),
                                    minutes=int(rng.integers(0, 600)))
        if person.fate == "paused":
            add(Step(leave, "pause", person.index))
        else:
            add(Step(leave, "withdraw", person.index, scope=person.fate))


def _adder(person: Person) -> Any:
    def add(step: Step) -> None:
        step.order = len(person.steps)
        person.steps.append(step)
    return add


def baseline_answers(row: Any, person: Person, rng: np.random.Generator) -> dict[str, Any]:
    country = person.country
    uses_4o = bool(row.used_4o_before_retirement)
    freq = ["less_than_weekly", "weekly", "several_times_weekly", "daily"]
    before = freq[int(rng.choice(4, p=[0.1, 0.2, 0.35, 0.35]))] if uses_4o else "never"
    after = "never"
    if uses_4o and rng.random() < 0.4:
        after = freq[int(rng.integers(0, 4))]
    answers: dict[str, Any] = {
        "age_band": _AGE.get(row.age_band, "prefer_not_to_say") if isinstance(row.age_band, str)
        else "prefer_not_to_say",
        "gender": _GENDER.get(row.gender, "prefer_not_to_say"),
        "country": country,
        "living_situation": _LIVING.get(row.living_situation, "other"),
        "ai_use_since": str(rng.choice(["before_2023", "year_2023", "year_2024", "year_2025"],
                                       p=[0.2, 0.35, 0.3, 0.15])),
        "ai_personal_use_since": str(rng.choice(["never", "year_2023", "year_2024", "year_2025"],
                                                p=[0.1, 0.25, 0.4, 0.25])),
        "gpt4o_before_retirement": before,
        "gpt4o_after_retirement": after,
    }
    if after != "never":
        answers["gpt4o_after_how"] = [str(rng.choice(["api_direct", "third_party_app"]))]
    return answers


def _extras(start: int, n: int, run: str, calendar: sim.CalendarParams, event: date,
            rng: np.random.Generator) -> list[Person]:
    """People who never make it into the panel: screened out, never consented, declined."""
    out: list[Person] = []
    counts = {"ineligible": math.ceil(0.10 * n), "never_consented": math.ceil(0.06 * n),
              "declined": math.ceil(0.03 * n)}
    for fate, k in counts.items():
        for _ in range(k):
            i = start + len(out)
            code = list(COUNTRIES)[int(rng.integers(len(COUNTRIES)))]
            _, language, tz = COUNTRIES[code]
            screening = {"adult": True, "uses_ai_chat": fate != "ineligible"}
            person = Person(i, f"{run}-{i:06d}@{EMAIL_DOMAIN}", language, tz, code, screening,
                            fate)
            offset = int(rng.integers(-calendar.enroll_to_days_after,
                                      calendar.enroll_from_days_before + 1))
            at = _local(event - timedelta(days=offset),
                        time(int(rng.integers(8, 22)), int(rng.integers(0, 60))), ZoneInfo(tz))
            add = _adder(person)
            add(Step(at, "join", i))
            if fate == "declined":
                add(Step(at + _minutes(rng, 1, 30), "verify", i))
                add(Step(at + _minutes(rng, 31, 60), "decline", i))
            elif fate == "never_consented" and rng.random() < 0.5:
                add(Step(at + _minutes(rng, 1, 600), "verify", i))
            out.append(person)
    return out

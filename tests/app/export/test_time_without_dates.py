"""Time without dates (issue 16 part 3), tested as an attacker would: from the released columns
(plus, to be safe, every answer's exact day, which the export does not release), how finely can
a participant's enrollment date be pinned? Never below the study's date_precision_days; and
answer days per wave say no more than which waves were answered. SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
from sqlmodel import Session, select

from analysis import spec
from app.export import timeshift
from app.export.service import ExportOptions, export_panel, pseudonym_of, read_key
from app.participants.models import Participant
from app.surveys.models import SurveyInstance, SurveyResponse

EVENT = "gpt4o_retirement"
COL = spec.event_column(EVENT)


def descriptor(out: Path) -> dict[str, Any]:
    return json.loads((out / "datapackage.json").read_text("utf-8"))


def truth(engine) -> tuple[dict[str, int], dict[tuple[str, str, int], int]]:  # type: ignore[no-untyped-def]
    """What the database knows: each participant's local enrollment day and each answer's
    local day (days since 1970-01-01 in the participant's zone)."""
    with Session(engine) as s:
        people = {p.id: p for p in s.exec(select(Participant)).all()}
        rows = s.exec(select(SurveyResponse.participant_id, SurveyResponse.instrument_key,
                             SurveyInstance.scheduled_at, SurveyResponse.submitted_at)
                      .join(SurveyInstance, SurveyInstance.id == SurveyResponse.instance_id)
                      ).all()
    epoch = date(1970, 1, 1)
    enrolled: dict[str, int] = {}
    for pid, p in people.items():
        if p.enrolled_at is not None:
            enrolled[pid] = (p.enrolled_at.astimezone(ZoneInfo(p.timezone)).date() - epoch).days
    answers = {}
    for internal, inst, scheduled, at in rows:
        p = people[internal]
        if p.enrolled_at is None:
            continue
        wave = round((scheduled - p.enrolled_at).total_seconds() / 86400 / 14)
        answers[(internal, inst, wave)] = (at.astimezone(ZoneInfo(p.timezone)).date()
                                           - epoch).days
    return enrolled, answers


def candidates(rows: list[tuple[int, int]], release: Callable[[int, int], int],
               max_shift: int, around: int) -> set[int]:
    """The attack: every enrollment day consistent with a participant's rows, each row being
    (day, released week) and ``release(enrollment day, day)`` the published rule that made the
    week. The (shifted) enrollment day E' must give every row its week; the true one is E'
    moved back by some offset in [-S, S]."""
    shifted = [e for e in range(around - 400, around + 400)
               if all(release(e, d) == w for d, w in rows)]
    return {e + s for e in shifted for s in range(-max_shift, max_shift + 1)}


def test_no_enrollment_date_is_pinned_finer_than_the_study_allows(engine, population,
                                                                  tmp_path):
    out = tmp_path / "research"
    export_panel(engine, ExportOptions(out=out, profile="research", dua="DUA-3",
                                       key_file=population.key_file))
    time = descriptor(out)["wellpanel"]["deidentification"]["time"]
    precision = time["date_precision_days"]
    assert precision == 28 and time["max_shift_days"] == 14 and time["event_band_weeks"] == 4
    event = descriptor(out)["wellpanel"]["events"][0]
    event_day = (date.fromisoformat(event["date"]) - date(1970, 1, 1)).days
    band = time["event_band_weeks"]

    def published(e: int, day: int) -> int:  # the rule the codebook states
        return ((e - event_day) // 7) // band * band + band // 2 + day // 7

    def exact_weeks(e: int, day: int) -> int:  # what research exports used to release
        return (e + day - event_day) // 7

    responses = pd.read_csv(out / "responses.csv")
    key, _ = read_key(population.key_file)
    by_pid = {pseudonym_of(key, p.id): p.id for p in population.people}
    enrolled, answers = truth(engine)
    rows: dict[str, list[tuple[int, int]]] = defaultdict(list)
    old: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for r in responses.itertuples(index=False):
        internal = by_pid[r.pid]
        rows[internal].append((int(r.day), int(getattr(r, COL))))
        exact = answers[(internal, r.instrument, r.wave)] - enrolled[internal]
        old[internal].append((exact, exact_weeks(enrolled[internal], exact)))
    released = set(pd.read_csv(out / "participants.csv")["pid"])  # de-identification may
    assert {by_pid[p] for p in released} == set(rows)  # leave a few out: all others are here
    widths, old_widths = [], []
    for internal, known in rows.items():
        cands = candidates(known, published, time["max_shift_days"], enrolled[internal])
        assert enrolled[internal] in cands  # the attack is sound: the truth is among them
        widths.append(len(cands))
        old_widths.append(len(candidates(old[internal], exact_weeks, 0, enrolled[internal])))
    assert min(widths) >= precision, sorted(widths)[:5]
    assert min(widths) >= time["uncertainty_days"] == 7 * band + 2 * time["max_shift_days"]
    # every row of a person says the same about their enrollment: one row is as good as all
    for internal, known in rows.items():
        assert candidates(known[:1], published, 0, enrolled[internal]) == candidates(
            known, published, 0, enrolled[internal])
    # the same attack on exact days and weeks (the old research columns) pins every date to
    # its week and some to the day: it is the shift that protects, not a weak attack
    assert max(old_widths) <= 7 and min(old_widths) == 1, sorted(old_widths)


def test_answer_days_say_no_more_than_which_waves_were_answered(engine, population,
                                                               tmp_path):
    out = tmp_path / "strict"
    export_panel(engine, ExportOptions(out=out))
    for name in ("responses", "usage", "panel"):
        days = pd.read_csv(out / f"{name}.csv")["day"]
        assert (days % 7 == 0).all(), name
    days_in_study = pd.read_csv(out / "participants.csv")["days_in_study"].dropna()
    assert len(days_in_study) and (days_in_study % 7 == 0).all()  # empty: suppressed
    panel = pd.read_csv(out / "panel.csv")
    with_days = panel.groupby("pid").apply(
        lambda g: tuple(zip(g["wave"], g["day"], strict=True)), include_groups=False)
    waves_only = panel.groupby("pid")["wave"].apply(tuple)
    # each wave pattern has one day pattern: days add no uniqueness to the waves answered
    assert with_days.nunique() == waves_only.nunique()
    # exact days (what the database holds) would have split them much further
    enrolled, answers = truth(engine)
    key_less: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for (internal, _inst, wave), local in answers.items():
        key_less[internal].append((wave, local - enrolled[internal]))
    exact = {tuple(sorted(set(v))) for v in key_less.values()}
    assert len(exact) > 2 * waves_only.nunique()


def test_offsets_are_keyed_uniform_and_stable():
    ids = [f"participant-{i}" for i in range(3000)]
    a = [timeshift.date_shift(b"k" * 32, i, 14) for i in ids]
    assert min(a) == -14 and max(a) == 14 and len(set(a)) == 29
    assert abs(sum(a) / len(a)) < 1.0
    assert a == [timeshift.date_shift(b"k" * 32, i, 14) for i in ids]  # stable per key
    b = [timeshift.date_shift(b"j" * 32, i, 14) for i in ids]
    assert sum(x == y for x, y in zip(a, b, strict=True)) < len(ids) / 10  # fresh key: unrelated
    assert timeshift.date_shift(b"k" * 32, "x", 0) == 0


def test_stable_key_gives_the_same_calendar_columns(engine, population, tmp_path):
    outs = []
    for name in ("one", "two"):
        outs.append(tmp_path / name)
        export_panel(engine, ExportOptions(out=outs[-1], profile="research", dua="D",
                                           key_file=population.key_file))
    assert (outs[0] / "responses.csv").read_bytes() == (outs[1] / "responses.csv").read_bytes()


@pytest.mark.parametrize(("setting", "value"), [
    ("date_precision_days", 0), ("day_resolution_days", 29), ("event_band_weeks", "4"),
    ("date_precision_days", True)])
def test_a_bad_time_setting_is_refused_by_name(setting, value):
    with pytest.raises(timeshift.TimePolicyError, match=f"export.time.{setting}"):
        timeshift.parse_policy({"export": {"time": {setting: value}}})
    with pytest.raises(timeshift.TimePolicyError, match="unknown setting"):
        timeshift.parse_policy({"export": {"time": {"max_shift": 3}}})

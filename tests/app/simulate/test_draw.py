"""Drawing a synthetic study: scores become item answers that score back exactly; scripts are
realistic and time-ordered. Pure: no database."""

from __future__ import annotations

from datetime import UTC, date, datetime, time

import numpy as np
import pytest

from analysis import simulate as sim
from app.simulate import draw
from app.studies.service import resolve_instruments
from app.surveys.scoring import safety_flags, score
from tests.conftest import STUDY_FILE, SURVEYS_DIR


@pytest.fixture(scope="module")
def instruments():
    import yaml

    from app.surveys.instruments import Instrument

    study = yaml.safe_load(STUDY_FILE.read_text("utf-8"))
    pinned = resolve_instruments(STUDY_FILE, study, SURVEYS_DIR)
    return {k: Instrument.model_validate(v["definition"]) for k, v in pinned.items()}


SCORES = {
    "who5": range(0, 101, 4),
    "phq9": range(0, 28),
    "gad7": range(0, 22),
    "ucla3": range(3, 10),
    "swls": range(5, 36),
    "social_contact": range(0, 10),
    "ai_dependence": [1 + k / 6 for k in range(25)],
}


@pytest.mark.parametrize("key", list(SCORES))
def test_every_possible_score_becomes_answers_that_score_back_to_it(instruments, key):
    rng = np.random.default_rng(0)
    inst = instruments[key]
    for target in SCORES[key]:
        answers = draw.answers_for_score(inst, target, rng)
        result = score(inst, answers)
        assert result is not None and result.valid
        assert result.primary == pytest.approx(target), (key, target, answers)


def test_reverse_scored_items_are_stored_as_the_participant_would_tick_them(instruments):
    inst = instruments["ai_dependence"]
    answers = draw.answers_for_score(inst, 5.0, np.random.default_rng(1))
    assert answers["aidep_6"] == 1  # the healthy-direction statement, strongly disagreed
    assert all(answers[f"aidep_{j}"] == 5 for j in range(1, 6))


def test_the_suicidal_ideation_item_is_rarely_raised_and_never_for_low_scores(instruments):
    rng = np.random.default_rng(2)
    inst = instruments["phq9"]
    low = [safety_flags(inst, draw.answers_for_score(inst, s, rng)) for s in range(0, 9)
           for _ in range(20)]
    high = [safety_flags(inst, draw.answers_for_score(inst, 18, rng)) for _ in range(400)]
    assert not any(low)
    share = sum(bool(f) for f in high) / len(high)
    assert 0.1 < share < 0.6
    assert safety_flags(inst, draw.answers_for_score(inst, 27, rng)) == ["suicidal_ideation"]


def test_every_simulated_score_is_a_possible_score_of_the_study_instrument():
    """The simulator scores on the instruments' own scales and steps, so every drawn score is
    one of SCORES (each of which inverts, above) and no conversion sits between them."""
    panel = sim.simulate_panel(300, 6, seed=4, outcomes=list(SCORES), rounding=True)
    responses = panel["responses"].dropna(subset=["score"])
    assert set(responses["instrument"]) == set(SCORES)
    for key, group in responses.groupby("instrument"):
        possible = {round(float(v), 9) for v in SCORES[key]}
        drawn = {round(float(v), 9) for v in group["score"]}
        assert drawn <= possible, (key, sorted(drawn - possible)[:5])
    contact = responses.loc[responses["instrument"] == "social_contact", "score"]
    assert contact.max() > 7  # the whole 0-9 sum, not an old 0-7 scale
    dependence = responses.loc[responses["instrument"] == "ai_dependence", "score"]
    assert dependence.min() >= 1 and (dependence != dependence.round()).any()  # 1-5 means


def test_a_drawn_study_is_time_ordered_and_ends_before_now(instruments):
    end = datetime(2026, 11, 30, 12, tzinfo=UTC)
    study = draw.draw_study(30, 5, seed=3, instruments=instruments,
                            occasion=draw.Occasion(time(18, 0), 96),
                            event=date(2026, 2, 13), end=end, run="t")
    steps = study.steps()
    assert [s.at for s in steps] == sorted(s.at for s in steps)
    assert steps[-1].at < end
    for person in study.people:
        own = [s.kind for s in person.steps]
        assert own[0] == "join" and person.email.endswith("@example.invalid")
        if person.fate in ("completed", "paused", "stop_contact", "delete_data"):
            assert own[1:3] == ["verify", "consent"] and own[3] == "answer"
            assert own[-1] in ("complete", "pause", "withdraw")
            answered = [s for s in person.steps if s.kind == "answer"]
            assert answered[0].wave == 0 and "baseline" in answered[0].answers
            assert [s.wave for s in answered] == sorted({s.wave for s in answered})
        else:
            assert "consent" not in own
    fates = {p.fate for p in study.people}
    assert {"completed", "ineligible", "never_consented", "declined"} <= fates
    assert study.truth["effects"]["who5"]["within"] == 0.4  # analysis.simulate's default
    # the truth is on the instruments' scales already (AI dependence: a 1-5 mean)
    assert study.truth["effects"]["ai_dependence"]["intercept"] == \
        sim.DEFAULT_EFFECTS["ai_dependence"].intercept == 2.2


def test_too_few_waves_or_participants_are_refused(instruments):
    kw = dict(seed=0, instruments=instruments, occasion=draw.Occasion(time(18, 0), 96),
              event=date(2026, 2, 13), end=datetime(2026, 11, 30, tzinfo=UTC))
    with pytest.raises(draw.DrawError, match="waves"):
        draw.draw_study(10, 1, **kw)
    with pytest.raises(draw.DrawError, match="participants"):
        draw.draw_study(0, 4, **kw)

"""Scoring as the manuals say: band boundaries, transformations, prorating, reverse scoring,
and the PHQ-9 item 9 safety flag. Each test names the source of its expected numbers."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.surveys.instruments import INSTRUMENTS_DIR, Instrument, load_instruments
from app.surveys.scoring import round_half_up, safety_flags, score


def with_total(prefix: str, n_items: int, total: int, low: int, high: int) -> dict[str, int]:
    """Answers to items <prefix>_1..n whose values (each low..high) add up to ``total``."""
    values, remaining = [], total - low * n_items
    for _ in range(n_items):
        step = min(high - low, remaining)
        values.append(low + step)
        remaining -= step
    assert remaining == 0, f"{total} is out of reach"
    return {f"{prefix}_{i}": v for i, v in enumerate(values, start=1)}


# --- PHQ-9 ---------------------------------------------------------------------------------------
# Kroenke, Spitzer & Williams 2001 (J Gen Intern Med 16:606-613), abstract: scores of 5, 10, 15
# and 20 mark mild, moderate, moderately severe and severe depression; the PHQ/GAD-7 instruction
# manual's PHQ-9 table gives 0-4 minimal, 5-9, 10-14, 15-19, 20-27.


@pytest.mark.parametrize(
    ("total", "band"),
    [
        (0, "minimal"),
        (4, "minimal"),
        (5, "mild"),
        (9, "mild"),
        (10, "moderate"),
        (14, "moderate"),
        (15, "moderately_severe"),
        (19, "moderately_severe"),
        (20, "severe"),
        (27, "severe"),
    ],
)
def test_phq9_band_boundaries(shipped, total, band):
    result = score(shipped["phq9"], with_total("phq9", 9, total, 0, 3))
    assert (result.primary, result.raw, result.band, result.valid) == (total, total, band, True)
    assert result.primary_name == "total"


def test_phq9_difficulty_item_is_not_scored(shipped):
    answers = dict(with_total("phq9", 9, 6, 0, 3), phq9_difficulty=3)
    assert score(shipped["phq9"], answers).primary == 6


# --- GAD-7 ---------------------------------------------------------------------------------------
# Spitzer, Kroenke, Williams & Löwe 2006 (Arch Intern Med 166:1092-1097): cut-points 5, 10, 15
# for mild, moderate and severe anxiety; range 0-21.


@pytest.mark.parametrize(
    ("total", "band"),
    [
        (0, "minimal"),
        (4, "minimal"),
        (5, "mild"),
        (9, "mild"),
        (10, "moderate"),
        (14, "moderate"),
        (15, "severe"),
        (21, "severe"),
    ],
)
def test_gad7_band_boundaries(shipped, total, band):
    result = score(shipped["gad7"], with_total("gad7", 7, total, 0, 3))
    assert (result.primary, result.band) == (total, band)


# --- WHO-5 ---------------------------------------------------------------------------------------
# WHO-5 scoring instructions and Topp et al. 2015 (Psychother Psychosom 84:167-176): raw 0-25,
# percentage = raw x 4. Interpretation: <= 50 poor wellbeing (the guide: raw < 13, indication
# for depression testing), <= 28 likely depression.


@pytest.mark.parametrize(
    ("raw", "percentage", "band"),
    [
        (0, 0, "likely_depression"),
        (7, 28, "likely_depression"),
        (8, 32, "poor_wellbeing"),
        (12, 48, "poor_wellbeing"),  # raw < 13: the guide's indication for depression testing
        (13, 52, "not_indicated"),
        (25, 100, "not_indicated"),
    ],
)
def test_who5_percentage_is_raw_times_four_with_documented_cutoffs(shipped, raw, percentage, band):
    result = score(shipped["who5"], with_total("who5", 5, raw, 0, 5))
    assert (result.raw, result.primary, result.primary_name) == (raw, percentage, "percentage")
    assert result.band == band


def test_who5_needs_all_five_items(shipped):
    answers = with_total("who5", 5, 20, 0, 5)
    del answers["who5_5"]
    result = score(shipped["who5"], answers)
    assert (result.valid, result.primary, result.raw, result.band) == (False, None, None, None)
    assert (result.n_answered, result.raw_sum) == (4, 20)


# --- UCLA-3 --------------------------------------------------------------------------------------
# Hughes et al. 2004 (Res Aging 26:655-672): three items scored 1-3, total 3-9.


@pytest.mark.parametrize(("value", "total"), [(1, 3), (2, 6), (3, 9)])
def test_ucla3_range(shipped, value, total):
    result = score(shipped["ucla3"], {f"ucla3_{i}": value for i in (1, 2, 3)})
    assert (result.primary, result.band, result.valid) == (total, None, True)


# --- SWLS ----------------------------------------------------------------------------------------
# Diener, "Understanding scores on the SWLS" (after Pavot & Diener 1993, Psychol Assess 5:164-172):
# 5-9 extremely dissatisfied, 10-14 dissatisfied, 15-19 slightly dissatisfied, 20 neutral,
# 21-25 slightly satisfied, 26-30 satisfied, 31-35 extremely satisfied.


@pytest.mark.parametrize(
    ("total", "band"),
    [
        (5, "extremely_dissatisfied"),
        (9, "extremely_dissatisfied"),
        (10, "dissatisfied"),
        (14, "dissatisfied"),
        (15, "slightly_dissatisfied"),
        (19, "slightly_dissatisfied"),
        (20, "neutral"),
        (21, "slightly_satisfied"),
        (25, "slightly_satisfied"),
        (26, "satisfied"),
        (30, "satisfied"),
        (31, "extremely_satisfied"),
        (35, "extremely_satisfied"),
    ],
)
def test_swls_band_edges(shipped, total, band):
    result = score(shipped["swls"], with_total("swls", 5, total, 1, 7))
    assert (result.primary, result.band) == (total, band)


# --- prorating -----------------------------------------------------------------------------------
# PHQ-9: NHS Data Dictionary ("Patient Health Questionnaire-9"): one or two missing items are
# replaced by the mean of the answered items; more than two missing -> no score. GAD-7: the
# study's stated rule, one missing item. Both round half up.


def phq9_missing(missing: list[int], values: dict[int, int]) -> dict[str, int]:
    return {f"phq9_{i}": values.get(i, 0) for i in range(1, 10) if i not in missing}


def test_phq9_one_missing_item_is_prorated(shipped):
    answers = phq9_missing([9], {1: 3, 2: 3, 3: 3, 4: 3})  # 12 over 8 items
    result = score(shipped["phq9"], answers)
    # 12 / 8 x 9 = 13.5 -> 14 (half up; Python's round() would give 14 here too)
    assert (result.primary, result.raw_sum, result.prorated, result.valid) == (14, 12, True, True)
    assert (result.n_answered, result.n_items, result.band) == (8, 9, "moderate")


def test_phq9_tie_rounds_half_up_not_to_even(shipped):
    answers = phq9_missing([9], {1: 3, 2: 1})  # 4 over 8 items: 4 / 8 x 9 = 4.5
    result = score(shipped["phq9"], answers)
    assert (result.primary, result.band) == (5, "mild")  # round(4.5) would be 4: minimal


def test_phq9_two_missing_items_are_prorated(shipped):
    answers = phq9_missing([3, 7], {1: 2, 2: 2, 4: 2, 5: 2, 6: 2})  # 10 over 7 items
    result = score(shipped["phq9"], answers)
    assert (result.primary, result.prorated) == (13, True)  # 90 / 7 = 12.857 -> 13


def test_phq9_three_missing_items_give_no_score(shipped):
    answers = phq9_missing([1, 2, 3], {4: 3, 5: 3})
    result = score(shipped["phq9"], answers)
    assert (result.valid, result.primary, result.band, result.prorated) == (
        False,
        None,
        None,
        False,
    )
    assert (result.raw_sum, result.n_answered) == (6, 6)


def test_phq9_complete_is_not_prorated(shipped):
    assert score(shipped["phq9"], with_total("phq9", 9, 11, 0, 3)).prorated is False


def test_gad7_one_missing_item_is_prorated(shipped):
    answers = {f"gad7_{i}": 1 for i in range(1, 7)}  # 6 over 6 items -> 6 / 6 x 7 = 7
    answers["gad7_1"] = 0  # 5 over 6 items -> 5.833 -> 6
    result = score(shipped["gad7"], answers)
    assert (result.primary, result.prorated, result.band) == (6, True, "mild")


def test_gad7_tie_rounds_half_up(shipped):
    answers = {"gad7_1": 3, **{f"gad7_{i}": 0 for i in range(2, 7)}}  # 3 / 6 x 7 = 3.5
    assert score(shipped["gad7"], answers).primary == 4


def test_gad7_two_missing_items_give_no_score(shipped):
    answers = {f"gad7_{i}": 2 for i in range(1, 6)}
    assert score(shipped["gad7"], answers).valid is False


@pytest.mark.parametrize(("numerator", "expected"), [(9, 5), (10, 5), (11, 6), (25, 13), (-1, 0)])
def test_round_half_up(numerator, expected):
    from fractions import Fraction

    assert round_half_up(Fraction(numerator, 2)) == expected


# --- reverse scoring, means and subscales (ai_dependence) ----------
# Reversal rule min_plus_max_minus_value on a 1-5 scale: 6 - value.


def test_reverse_scored_item_is_mirrored(shipped):
    answers = {f"aidep_{i}": 1 for i in range(1, 6)} | {"aidep_6": 5}
    result = score(shipped["ai_dependence"], answers)
    assert (result.primary, result.raw_sum) == (1, 6)  # aidep_6 = 5 counts as 1
    assert result.subscales == {"emotional_dependence": 1, "problematic_use": 1}


def test_mean_and_subscales(shipped):
    answers = {"aidep_1": 5, "aidep_2": 4, "aidep_3": 3, "aidep_4": 2, "aidep_5": 1, "aidep_6": 1}
    result = score(shipped["ai_dependence"], answers)
    # aidep_6 = 1 -> 5; mean of 5, 4, 3, 2, 1, 5 = 20 / 6
    assert result.primary == pytest.approx(20 / 6)
    assert result.subscales == {"emotional_dependence": 4, "problematic_use": pytest.approx(8 / 3)}


def test_mean_with_allowed_missing_item_and_missing_subscale(shipped):
    answers = {"aidep_1": 4, "aidep_2": 4, "aidep_3": 4, "aidep_4": 2, "aidep_6": 5}
    result = score(shipped["ai_dependence"], answers)
    # five of six answered (min_answered 5): mean of 4, 4, 4, 2, 1 = 3; not prorated
    assert (result.valid, result.primary, result.prorated) == (True, 3, False)
    assert result.subscales["problematic_use"] == pytest.approx(1.5)  # 2 of 3 suffice
    thinner = {"aidep_1": 4, "aidep_2": 4, "aidep_3": 4, "aidep_4": 2}
    result = score(shipped["ai_dependence"], thinner)
    assert (result.valid, result.primary) == (False, None)
    assert result.subscales == {"emotional_dependence": 4, "problematic_use": None}


def test_reversal_on_the_fixture_instrument(mini):
    # q2 is reversed on 0-2: 2 - value.
    assert score(mini, {"q1": 0, "q2": 0}).primary == 2
    assert score(mini, {"q1": 0, "q2": 2}).primary == 0


# --- unscored instruments and bad input -----------------------------------------------------------


@pytest.mark.parametrize("key", ["ai_usage", "baseline"])
def test_unscored_instruments_give_none(shipped, key):
    assert score(shipped[key], {}) is None


def test_scoring_rejects_values_that_are_not_options(shipped):
    with pytest.raises(ValueError, match="phq9.phq9_2: cannot score 7"):
        score(shipped["phq9"], dict(with_total("phq9", 9, 0, 0, 3), phq9_2=7))


def test_scoring_accepts_form_strings(shipped):
    answers = {k: str(v) for k, v in with_total("phq9", 9, 10, 0, 3).items()}
    assert score(shipped["phq9"], answers).primary == 10


def test_score_result_identifies_the_instrument_version(shipped):
    result = score(shipped["gad7"], with_total("gad7", 7, 3, 0, 3))
    assert (result.instrument, result.version) == ("gad7", shipped["gad7"].version)
    assert result.band_label == "Minimal (0-4)"


# --- safety: PHQ-9 item 9 ------------------------------------------------------------------------
# Study safety protocol (issue 3): any answer above 0 on PHQ-9 item 9 raises the flag.


@pytest.mark.parametrize("value", [1, 2, 3, "1", "3"])
def test_phq9_item9_above_zero_raises_the_flag(shipped, value):
    answers = dict(with_total("phq9", 9, 0, 0, 3), phq9_9=value)
    assert safety_flags(shipped["phq9"], answers) == ["suicidal_ideation"]


@pytest.mark.parametrize("value", [0, "0", None, "", True, "garbage", 7])
def test_phq9_item9_zero_missing_or_unreadable_raises_nothing(shipped, value):
    answers = dict(with_total("phq9", 9, 27, 0, 3), phq9_9=value)
    assert safety_flags(shipped["phq9"], answers) == []


def test_safety_flag_does_not_depend_on_the_rest_of_the_response(shipped):
    assert safety_flags(shipped["phq9"], {"phq9_9": 1}) == ["suicidal_ideation"]


def test_safety_flags_never_raise(shipped):
    assert safety_flags(shipped["phq9"], "not a mapping") == []  # type: ignore[arg-type]


@pytest.mark.parametrize("key", ["who5", "gad7", "ucla3", "swls", "ai_usage", "ai_dependence"])
def test_other_instruments_raise_no_flags(shipped, key):
    instrument = shipped[key]
    answers = {item.id: item.option_values[-1] for item in instrument.items if item.options}
    assert safety_flags(instrument, answers) == []


# --- properties ----------------------------------------------------------------------------------

SCORED = {k: v for k, v in load_instruments(INSTRUMENTS_DIR).items() if v.scoring is not None}


@st.composite
def scored_answers(draw: st.DrawFn, instrument: Instrument) -> dict[str, Any]:
    """Each scored item either unanswered or given one of its option values."""
    assert instrument.scoring is not None
    answers = {}
    for item_id in instrument.scoring.items:
        value = draw(st.none() | st.sampled_from(instrument.item(item_id).option_values))
        if value is not None:
            answers[item_id] = value
    return answers


@pytest.mark.parametrize("key", sorted(SCORED))
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_scores_stay_in_declared_range(key, data):
    instrument = SCORED[key]
    scoring = instrument.scoring
    answers = data.draw(scored_answers(instrument))
    result = score(instrument, answers)
    assert result.n_answered == len(answers)
    assert result.valid == (len(answers) >= scoring.min_answered)
    if not result.valid:
        assert result.primary is None and result.band is None
        return
    primary = scoring.primary_range
    assert primary.min <= result.primary <= primary.max
    assert scoring.range.min <= result.raw <= scoring.range.max
    assert (result.band is not None) == bool(scoring.bands)
    for sub in scoring.subscales:
        value = result.subscales[sub.key]
        assert value is None or sub.range.min <= value <= sub.range.max


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.integers(0, 3), min_size=9, max_size=9))
def test_complete_phq9_total_is_the_plain_sum(values):
    phq9 = SCORED["phq9"]
    result = score(phq9, {f"phq9_{i}": v for i, v in enumerate(values, start=1)})
    assert result.primary == result.raw_sum == sum(values)
    assert not result.prorated
    assert safety_flags(phq9, {"phq9_9": values[8]}) == (["suicidal_ideation"] if values[8] else [])

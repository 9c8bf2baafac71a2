"""Answer validation: every kind of bad input names the exact item and code; good input is
cleaned; display conditions decide what is shown and what may be answered."""

from __future__ import annotations

from typing import Any

import pytest

from app.surveys.answers import (
    MESSAGE_KEYS,
    AnswerValidationError,
    validate_answers,
    visible_items,
)
from app.surveys.instruments import Instrument

PHQ9_ALL_ZERO = {f"phq9_{n}": 0 for n in range(1, 10)}
USAGE_CLAUDE = {
    "used_models": ["claude"],
    "hours_claude": 3,
    "purposes": ["work"],
    "ai_framing": 1,
    "lost_access": "no",
}
MINI_OK = {"q1": 1, "q2": 0, "pets": ["dog"]}


def errors(instrument: Instrument, answers: Any) -> list[tuple[str | None, str]]:
    with pytest.raises(AnswerValidationError) as caught:
        validate_answers(instrument, answers)
    for error in caught.value.errors:
        assert error.message_key == MESSAGE_KEYS[error.code] == f"answer.{error.code}"
    return [(e.item, e.code) for e in caught.value.errors]


def only_error(instrument: Instrument, answers: Any) -> dict[str, Any]:
    with pytest.raises(AnswerValidationError) as caught:
        validate_answers(instrument, answers)
    assert len(caught.value.errors) == 1, caught.value.errors
    return caught.value.as_dicts()[0]


# --- valid answers are cleaned ---------------------------------------------------------------


def test_valid_phq9_passes_unchanged(shipped):
    assert validate_answers(shipped["phq9"], PHQ9_ALL_ZERO) == PHQ9_ALL_ZERO


def test_valid_ai_usage_passes(shipped):
    assert validate_answers(shipped["ai_usage"], USAGE_CLAUDE) == USAGE_CLAUDE


def test_form_strings_are_coerced_to_numbers(shipped, mini):
    answers = dict(PHQ9_ALL_ZERO, phq9_1="2", phq9_2=" 3 ", phq9_3=1.0)
    cleaned = validate_answers(shipped["phq9"], answers)
    assert (cleaned["phq9_1"], cleaned["phq9_2"], cleaned["phq9_3"]) == (2, 3, 1)
    assert type(cleaned["phq9_3"]) is int
    cleaned = validate_answers(mini, dict(MINI_OK, pets=["cat"], cats="4", hours="1,5"))
    assert (cleaned["cats"], cleaned["hours"]) == (4, 1.5)


def test_decimal_hours_are_kept(shipped):
    cleaned = validate_answers(shipped["ai_usage"], dict(USAGE_CLAUDE, hours_claude="2.5"))
    assert cleaned["hours_claude"] == 2.5


def test_multiple_choice_is_stored_in_instrument_order(shipped):
    answers = dict(USAGE_CLAUDE, used_models=["claude", "gpt4o_chatgpt"], hours_gpt4o_chatgpt=1)
    cleaned = validate_answers(shipped["ai_usage"], answers)
    assert cleaned["used_models"] == ["gpt4o_chatgpt", "claude"]


def test_text_is_stripped_and_blank_answers_are_dropped(mini):
    cleaned = validate_answers(mini, dict(MINI_OK, note="  hi  ", hours=""))
    assert cleaned == dict(MINI_OK, note="hi")


def test_blank_answers_to_hidden_items_are_fine(shipped):
    answers = dict(USAGE_CLAUDE, hours_gemini="", lost_access_models=[], lost_access_feeling=None)
    assert validate_answers(shipped["ai_usage"], answers) == USAGE_CLAUDE


def test_optional_item_may_be_left_out(shipped):
    # phq9_difficulty is optional on the PHQ-9 form.
    assert "phq9_difficulty" not in validate_answers(shipped["phq9"], PHQ9_ALL_ZERO)


# --- every bad input names the item and the code ------------------------------------------------


def test_unknown_item(shipped):
    error = only_error(shipped["phq9"], dict(PHQ9_ALL_ZERO, phq9_10=1))
    assert error == {
        "item": "phq9_10",
        "code": "unknown_item",
        "message_key": "answer.unknown_item",
        "params": {},
    }


def test_missing_required_item(shipped):
    answers = dict(PHQ9_ALL_ZERO)
    del answers["phq9_3"]
    assert errors(shipped["phq9"], answers) == [("phq9_3", "required")]


@pytest.mark.parametrize("blank", [None, "", "   ", []])
def test_blank_counts_as_missing(shipped, blank):
    assert errors(shipped["phq9"], dict(PHQ9_ALL_ZERO, phq9_9=blank)) == [("phq9_9", "required")]


def test_required_multiple_choice_needs_a_tick(shipped):
    assert errors(shipped["ai_usage"], dict(USAGE_CLAUDE, used_models=[]))[0] == (
        "used_models",
        "required",
    )


@pytest.mark.parametrize("value", [200, -1, 168.5, "169"])
def test_out_of_range_number(shipped, value):
    error = only_error(shipped["ai_usage"], dict(USAGE_CLAUDE, hours_claude=value))
    assert (error["item"], error["code"]) == ("hours_claude", "out_of_range")
    assert error["params"] == {"min": 0, "max": 168}


def test_out_of_range_integer(mini):
    error = only_error(mini, dict(MINI_OK, pets=["cat"], cats=21))
    assert (error["item"], error["code"], error["params"]) == (
        "cats",
        "out_of_range",
        {"min": 1, "max": 20},
    )


@pytest.mark.parametrize("value", [4, -1, "4"])
def test_likert_value_not_in_options(shipped, value):
    error = only_error(shipped["phq9"], dict(PHQ9_ALL_ZERO, phq9_1=value))
    assert (error["item"], error["code"], error["params"]) == (
        "phq9_1",
        "invalid_option",
        {"value": int(value)},
    )


def test_code_not_in_options(shipped):
    error = only_error(shipped["ai_usage"], dict(USAGE_CLAUDE, lost_access="maybe"))
    assert (error["item"], error["code"], error["params"]) == (
        "lost_access",
        "invalid_option",
        {"value": "maybe"},
    )


def test_multiple_choice_option_not_in_list(shipped):
    assert errors(shipped["ai_usage"], dict(USAGE_CLAUDE, purposes=["work", "gaming"])) == [
        ("purposes", "invalid_option")
    ]


@pytest.mark.parametrize("value", [True, False, "yes", "1.5", 1.5, [1], {"v": 1}])
def test_wrong_type_for_likert(shipped, value):
    # bool is a subclass of int in Python, but True is not an answer of 1.
    error = only_error(shipped["phq9"], dict(PHQ9_ALL_ZERO, phq9_2=value))
    assert (error["item"], error["code"], error["params"]) == (
        "phq9_2",
        "wrong_type",
        {"expected": "option"},
    )


@pytest.mark.parametrize("value", [True, "lots", [3], float("nan"), float("inf")])
def test_wrong_type_for_number(shipped, value):
    error = only_error(shipped["ai_usage"], dict(USAGE_CLAUDE, hours_claude=value))
    assert (error["item"], error["code"], error["params"]) == (
        "hours_claude",
        "wrong_type",
        {"expected": "number"},
    )


@pytest.mark.parametrize("value", [2.5, "2.5", True])
def test_wrong_type_for_integer(mini, value):
    error = only_error(mini, dict(MINI_OK, pets=["cat"], cats=value))
    assert (error["item"], error["code"]) == ("cats", "wrong_type")


@pytest.mark.parametrize("value", ["claude", [1], ("claude", 2)])
def test_wrong_type_for_multiple_choice(shipped, value):
    assert errors(shipped["ai_usage"], dict(USAGE_CLAUDE, used_models=value))[0] == (
        "used_models",
        "wrong_type",
    )


def test_wrong_type_for_text(shipped):
    answers = dict(USAGE_CLAUDE, used_models=["other"], hours_other=1, other_model_name=42)
    del answers["hours_claude"]
    assert errors(shipped["ai_usage"], answers) == [("other_model_name", "wrong_type")]


def test_code_item_rejects_a_number(shipped):
    assert errors(shipped["ai_usage"], dict(USAGE_CLAUDE, lost_access=1)) == [
        ("lost_access", "wrong_type")
    ]


def test_text_over_max_length(shipped):
    answers = dict(USAGE_CLAUDE, used_models=["other"], hours_other=1, other_model_name="x" * 101)
    del answers["hours_claude"]
    error = only_error(shipped["ai_usage"], answers)
    assert (error["item"], error["code"], error["params"]) == (
        "other_model_name",
        "too_long",
        {"max_length": 100, "length": 101},
    )


def test_text_at_max_length_is_fine(shipped):
    answers = dict(USAGE_CLAUDE, used_models=["other"], hours_other=1, other_model_name="x" * 100)
    del answers["hours_claude"]
    assert validate_answers(shipped["ai_usage"], answers)["other_model_name"] == "x" * 100


def test_text_with_control_characters(mini):
    assert errors(mini, dict(MINI_OK, note="a\x00b")) == [("note", "invalid_characters")]
    assert validate_answers(mini, dict(MINI_OK, note="a\nb"))["note"] == "a\nb"


def test_answer_to_item_hidden_by_condition(shipped):
    # Gemini was not ticked, so its hours question was never shown.
    assert errors(shipped["ai_usage"], dict(USAGE_CLAUDE, hours_gemini=2)) == [
        ("hours_gemini", "hidden_item")
    ]


def test_answer_to_follow_up_when_access_was_not_lost(shipped):
    assert errors(shipped["ai_usage"], dict(USAGE_CLAUDE, lost_access_feeling=3)) == [
        ("lost_access_feeling", "hidden_item")
    ]


def test_duplicate_option(shipped):
    error = only_error(shipped["ai_usage"], dict(USAGE_CLAUDE, purposes=["work", "work"]))
    assert (error["item"], error["code"], error["params"]) == (
        "purposes",
        "duplicate_option",
        {"value": "work"},
    )


def test_exclusive_option_combined_with_others(shipped):
    answers = {"used_models": ["none", "claude"], "hours_claude": 1, "lost_access": "no"}
    assert errors(shipped["ai_usage"], answers) == [("used_models", "exclusive_option")]


def test_answers_must_be_a_mapping(shipped):
    assert errors(shipped["phq9"], [1, 2, 3]) == [(None, "not_an_object")]


def test_all_errors_are_reported_together_in_item_order(shipped):
    answers = dict(PHQ9_ALL_ZERO, phq9_1=9, phq9_4=True, extra="x")
    del answers["phq9_7"]
    assert errors(shipped["phq9"], answers) == [
        ("phq9_1", "invalid_option"),
        ("phq9_4", "wrong_type"),
        ("phq9_7", "required"),
        ("extra", "unknown_item"),
    ]


def test_invalid_parent_does_not_also_report_its_follow_ups(shipped):
    # A bad used_models makes the hours questions undecidable: report the cause only.
    answers = dict(USAGE_CLAUDE, used_models=["claude", "gpt6"])
    assert errors(shipped["ai_usage"], answers) == [("used_models", "invalid_option")]


def test_error_message_names_items_but_not_values(shipped):
    answers = dict(PHQ9_ALL_ZERO, phq9_1=9)
    del answers["phq9_2"]
    with pytest.raises(AnswerValidationError) as caught:
        validate_answers(shipped["phq9"], answers)
    # Answers must never reach logs, so the message carries item ids and codes only.
    assert str(caught.value) == "2 invalid answer(s): phq9_1: invalid_option; phq9_2: required"


def test_every_message_key_is_namespaced():
    assert all(key == f"answer.{code}" for code, key in MESSAGE_KEYS.items())
    assert {"unknown_item", "required", "out_of_range", "invalid_option", "wrong_type"} <= set(
        MESSAGE_KEYS
    )
    assert {"too_long", "hidden_item"} <= set(MESSAGE_KEYS)


# --- display conditions ------------------------------------------------------------------------


def ids(items) -> list[str]:
    return [item.id for item in items]


def test_nothing_ticked_shows_no_follow_ups(shipped):
    assert ids(visible_items(shipped["ai_usage"], {})) == ["used_models", "lost_access"]


def test_ticked_models_show_their_hours_only(shipped):
    shown = ids(visible_items(shipped["ai_usage"], {"used_models": ["gpt4o_api", "other"]}))
    assert shown == [
        "used_models",
        "other_model_name",
        "hours_gpt4o_api",
        "hours_other",
        "purposes",
        "ai_framing",
        "lost_access",
    ]


def test_none_of_these_hides_purposes_and_framing(shipped):
    assert ids(visible_items(shipped["ai_usage"], {"used_models": ["none"]})) == [
        "used_models",
        "lost_access",
    ]


def test_lost_access_yes_shows_its_follow_ups(shipped):
    shown = ids(visible_items(shipped["ai_usage"], {"used_models": ["none"], "lost_access": "yes"}))
    assert shown[-3:] == ["lost_access", "lost_access_models", "lost_access_feeling"]


def test_any_of_condition_on_single_choice(shipped):
    baseline = shipped["baseline"]
    assert "gpt4o_after_how" not in ids(
        visible_items(baseline, {"gpt4o_after_retirement": "never"})
    )
    assert "gpt4o_after_how" in ids(visible_items(baseline, {"gpt4o_after_retirement": "weekly"}))


def test_condition_uses_the_coerced_value(mini):
    assert "cats" in ids(visible_items(mini, {"pets": ["cat"]}))
    assert "cats" not in ids(visible_items(mini, {"pets": ["dog"]}))


def test_invalid_answers_hide_their_follow_ups(shipped):
    assert ids(visible_items(shipped["ai_usage"], {"used_models": "claude"})) == [
        "used_models",
        "lost_access",
    ]


def test_visible_items_tolerates_non_mapping(shipped):
    assert ids(visible_items(shipped["phq9"], None))[0] == "phq9_1"  # type: ignore[arg-type]


def test_hidden_required_item_is_not_required(shipped):
    # hours_claude is required when shown; with only Gemini ticked it is hidden.
    answers = {
        "used_models": ["gemini"],
        "hours_gemini": 0,
        "purposes": ["advice"],
        "ai_framing": 3,
    }
    assert (
        validate_answers(shipped["ai_usage"], dict(answers, lost_access="no"))["hours_gemini"] == 0
    )


def test_shown_follow_up_is_required(shipped):
    answers = {"used_models": ["none"], "lost_access": "yes"}
    assert errors(shipped["ai_usage"], answers) == [
        ("lost_access_models", "required"),
        ("lost_access_feeling", "required"),
    ]

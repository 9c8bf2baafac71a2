"""Instrument files: the schema, the loader's error messages, semantic checks and the model API."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from app.surveys.instruments import (
    INSTRUMENTS_DIR,
    SCHEMA_PATH,
    InstrumentError,
    LanguageNotAvailable,
    acceptable_languages,
    instrument_schema,
    load_instrument,
    load_instruments,
)

SHIPPED_FILES = sorted(INSTRUMENTS_DIR.glob("*.yaml"))
SHIPPED_KEYS = {
    "who5",
    "phq9",
    "gad7",
    "ucla3",
    "swls",
    "social_contact",
    "ai_usage",
    "ai_dependence",
    "baseline",
}


def problems_of(path: Path) -> list[tuple[str, str]]:
    with pytest.raises(InstrumentError) as caught:
        load_instrument(path)
    assert caught.value.file == str(path)
    return [(p.path, p.reason) for p in caught.value.problems]


def assert_problem(path: Path, where: str, reason_pattern: str) -> None:
    """The load fails with a problem at exactly ``where`` whose reason matches the pattern,
    and the message names the file, the path and the reason on one line."""
    with pytest.raises(InstrumentError) as caught:
        load_instrument(path)
    matching = [
        p for p in caught.value.problems if p.path == where and re.search(reason_pattern, p.reason)
    ]
    assert matching, f"no problem at {where!r} ~ {reason_pattern!r} in:\n{caught.value}"
    assert f"{path}: {where}: {matching[0].reason}" in str(caught.value).splitlines()


# --- the shipped files ----------


def test_schema_is_valid_draft_2020_12():
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_every_expected_instrument_is_shipped():
    assert {p.stem for p in SHIPPED_FILES} == SHIPPED_KEYS


@pytest.mark.parametrize("path", SHIPPED_FILES, ids=lambda p: p.stem)
def test_shipped_file_validates_against_schema(path: Path):
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    errors = list(jsonschema.Draft202012Validator(instrument_schema()).iter_errors(document))
    assert errors == []


@pytest.mark.parametrize("path", SHIPPED_FILES, ids=lambda p: p.stem)
def test_shipped_file_passes_semantic_checks(path: Path):
    instrument = load_instrument(path)
    assert instrument.key == path.stem
    assert "en" in instrument.languages
    assert instrument.licence.note.strip()


def test_load_instruments_keys_by_instrument_key(shipped):
    assert set(shipped) == SHIPPED_KEYS


@pytest.mark.parametrize("key", sorted(SHIPPED_KEYS))
def test_non_english_languages_are_never_claimed_validated(shipped, key):
    # We ship no officially published non-English wording; claiming it would be false.
    instrument = shipped[key]
    assert set(instrument.languages) == {"en", "de", "pt-BR", "zh-CN", "ja"}
    assert instrument.languages_with_status("validated") in ([], ["en"])


@pytest.mark.parametrize("key", ["social_contact", "ai_usage", "ai_dependence", "baseline"])
def test_study_modules_are_study_status_in_every_language(shipped, key):
    assert shipped[key].languages_with_status("validated") == []


@pytest.mark.parametrize("key", ["who5", "phq9", "gad7", "ucla3", "swls"])
def test_published_scales_cite_their_english_source(shipped, key):
    english = shipped[key].languages["en"]
    assert english.translation_status == "validated"
    assert english.source


def test_free_text_items_are_flagged_possibly_identifying(shipped):
    text_items = [i for inst in shipped.values() for i in inst.items if i.type == "text"]
    assert text_items, "ai_usage.other_model_name should exist"
    assert all(i.possibly_identifying and i.max_length for i in text_items)


def test_recall_periods(shipped):
    assert {k: shipped[k].recall_period_days for k in ("who5", "phq9", "gad7", "ai_usage")} == {
        "who5": 14,
        "phq9": 14,
        "gad7": 14,
        "ai_usage": 14,
    }


# --- the analysis contract ----------

MODELS = ["gpt4o_chatgpt", "gpt4o_api", "gpt_newer", "claude", "gemini", "companion_app", "other"]


def test_ai_usage_ids_and_values_are_the_analysis_contract(shipped):
    usage = shipped["ai_usage"]
    assert usage.item("used_models").option_values == [*MODELS, "none"]
    assert usage.item("lost_access_models").option_values == MODELS
    assert [f"hours_{m}" for m in MODELS] == [
        i.id for i in usage.items if i.id.startswith("hours_")
    ]
    for model in MODELS:
        hours = usage.item(f"hours_{model}")
        assert (hours.type, hours.min, hours.max) == ("number", 0, 168)
        assert hours.show_if is not None and hours.show_if.operator == ("includes", model)
    assert usage.item("purposes").option_values[:5] == [
        "companionship_romance",
        "emotional_support",
        "advice",
        "work",
        "creative",
    ]
    assert usage.item("ai_framing").option_values == [1, 2, 3, 4, 5]
    assert usage.item("lost_access_feeling").option_values == [0, 1, 2, 3, 4]
    assert usage.item("lost_access_feeling").show_if.operator == ("equals", "yes")


def test_baseline_ids_are_coarse_demographics_and_ai_history(shipped):
    baseline = shipped["baseline"]
    assert baseline.item_ids == [
        "age_band",
        "gender",
        "country",
        "living_situation",
        "ai_use_since",
        "ai_personal_use_since",
        "gpt4o_before_retirement",
        "gpt4o_after_retirement",
        "gpt4o_after_how",
    ]
    countries = baseline.item("country").option_values
    assert all(re.fullmatch(r"[a-z]{2}", c) for c in countries[:-2])
    assert countries[-2:] == ["other", "prefer_not_to_say"]
    assert not any(i.type in ("text", "integer", "number") for i in baseline.items)


def test_every_option_value_and_item_id_is_snake_case(shipped):
    for instrument in shipped.values():
        for item in instrument.items:
            assert re.fullmatch(r"[a-z][a-z0-9_]*", item.id)
            for value in item.option_values:
                assert isinstance(value, int) or re.fullmatch(r"[a-z][a-z0-9_]*", value)


# --- schema errors name file, path and reason ----------


def test_wrong_option_value_type_names_its_path(minimal_doc, write_instrument):
    minimal_doc["items"][1]["options"][2]["value"] = [2]
    assert_problem(write_instrument(minimal_doc), "items[1].options[2].value", "not valid")


def test_boolean_option_value_is_rejected(minimal_doc, write_instrument):
    minimal_doc["items"][0]["options"][1]["value"] = True
    assert_problem(write_instrument(minimal_doc), "items[0].options[1].value", "not valid")


def test_misspelled_item_field_is_rejected(minimal_doc, write_instrument):
    minimal_doc["items"][3]["requried"] = False
    assert_problem(write_instrument(minimal_doc), "items[3]", "'requried' was unexpected")


def test_missing_top_level_field(minimal_doc, write_instrument):
    del minimal_doc["citation"]
    assert_problem(
        write_instrument(minimal_doc), "(top level)", "'citation' is a required property"
    )


def test_text_item_needs_max_length(minimal_doc, write_instrument):
    del minimal_doc["items"][5]["max_length"]
    assert_problem(write_instrument(minimal_doc), "items[5]", "'max_length' is a required property")


def test_text_item_must_be_flagged_possibly_identifying(minimal_doc, write_instrument):
    minimal_doc["items"][5]["possibly_identifying"] = False
    assert_problem(
        write_instrument(minimal_doc), "items[5].possibly_identifying", "True was expected"
    )


def test_range_fields_not_allowed_on_choice_items(minimal_doc, write_instrument):
    minimal_doc["items"][0]["max"] = 3
    assert_problem(write_instrument(minimal_doc), "items[0].max", "not allowed")


def test_integer_item_needs_integer_bounds(minimal_doc, write_instrument):
    minimal_doc["items"][3]["max"] = 2.5
    assert_problem(write_instrument(minimal_doc), "items[3].max", "not of type 'integer'")


def test_unknown_item_type(minimal_doc, write_instrument):
    minimal_doc["items"][4]["type"] = "slider"
    assert_problem(write_instrument(minimal_doc), "items[4].type", "'slider' is not one of")


def test_validated_translation_needs_a_source(minimal_doc, write_instrument):
    minimal_doc["languages"]["de"]["translation_status"] = "validated"
    assert_problem(write_instrument(minimal_doc), "languages.de", "'source' is a required property")


def test_unknown_translation_status(minimal_doc, write_instrument):
    minimal_doc["languages"]["de"]["translation_status"] = "official"
    assert_problem(
        write_instrument(minimal_doc), "languages.de.translation_status", "is not one of"
    )


def test_bad_language_tag(minimal_doc, write_instrument):
    minimal_doc["languages"]["pt_br"] = minimal_doc["languages"].pop("de")
    assert_problem(write_instrument(minimal_doc), "languages", "'pt_br' does not match")


def test_condition_needs_exactly_one_operator(minimal_doc, write_instrument):
    minimal_doc["items"][3]["show_if"] = {"item": "pets", "includes": "cat", "equals": "dog"}
    assert_problem(write_instrument(minimal_doc), "items[3].show_if", "too many properties")


def test_all_schema_problems_are_reported_at_once(minimal_doc, write_instrument):
    minimal_doc["items"][0]["options"][0]["value"] = 1.5
    minimal_doc["recall_period_days"] = -1
    paths = [p for p, _ in problems_of(write_instrument(minimal_doc))]
    assert paths == ["items[0].options[0].value", "recall_period_days"]


# --- YAML-level problems ----------


def test_duplicate_yaml_key_is_an_error_with_line(write_instrument):
    text = "key: mini\nversion: '1'\ntitle: A\ntitle: B\n"
    assert problems_of(write_instrument(text)) == [
        ("line 4, column 1", "invalid YAML: duplicate key 'title'")
    ]


def test_yaml_syntax_error_names_line(write_instrument):
    problems = problems_of(write_instrument("key: mini\nitems: [\n"))
    assert len(problems) == 1 and problems[0][0].startswith("line ")
    assert problems[0][1].startswith("invalid YAML")


def test_yaml_11_words_stay_strings(minimal_doc, write_instrument):
    # In YAML 1.1 `no` is false and 2026-02-13 a date; both must stay codes/text.
    text = re.sub(r"\bcat\b", "no", yaml.safe_dump(minimal_doc, sort_keys=False))
    text = text.replace("title: Mini\n", "title: 2026-02-13\n", 1)
    instrument = load_instrument(write_instrument(text))
    assert instrument.item("pets").option_values == ["no", "dog", "none"]
    assert instrument.title == "2026-02-13"


def test_unreadable_file(tmp_path):
    assert problems_of(tmp_path / "missing.yaml")[0][0] == "(file)"


def test_top_level_must_be_a_mapping(write_instrument):
    assert problems_of(write_instrument("- just\n- a list\n")) == [
        ("(top level)", "['just', 'a list'] is not of type 'object'")
    ]


# --- semantic checks ----------


def test_key_must_match_file_name(minimal_doc, write_instrument):
    assert_problem(
        write_instrument(minimal_doc, name="other"), "key", "does not match the file name"
    )


def test_duplicate_item_id(minimal_doc, write_instrument):
    minimal_doc["items"][4]["id"] = "q1"
    assert_problem(
        write_instrument(minimal_doc),
        "items[4].id",
        r"duplicate item id 'q1' \(first at items\[0\]\)",
    )


def test_duplicate_option_value(minimal_doc, write_instrument):
    minimal_doc["items"][0]["options"][2]["value"] = 0
    assert_problem(
        write_instrument(minimal_doc), "items[0].options[2].value", "duplicate option value 0"
    )


def test_mixed_option_value_kinds(minimal_doc, write_instrument):
    minimal_doc["items"][0]["options"][2]["value"] = "two"
    assert_problem(write_instrument(minimal_doc), "items[0].options", "all integers or all codes")


def test_exclusive_only_on_multiple_choice(minimal_doc, write_instrument):
    minimal_doc["items"][0]["options"][0]["exclusive"] = True
    assert_problem(
        write_instrument(minimal_doc), "items[0].options[0].exclusive", "only multiple_choice"
    )


def test_min_must_be_below_max(minimal_doc, write_instrument):
    minimal_doc["items"][4]["min"] = 24
    assert_problem(write_instrument(minimal_doc), "items[4].max", "must be greater than min")


def test_condition_must_refer_to_an_earlier_item(minimal_doc, write_instrument):
    minimal_doc["items"][0]["show_if"] = {"item": "pets", "includes": "cat"}
    assert_problem(
        write_instrument(minimal_doc), "items[0].show_if.item", "'pets' is not an earlier item"
    )


def test_condition_must_refer_to_an_existing_item(minimal_doc, write_instrument):
    minimal_doc["items"][3]["show_if"] = {"item": "ghost", "gt": 0}
    assert_problem(
        write_instrument(minimal_doc), "items[3].show_if.item", "'ghost' is not an earlier item"
    )


def test_condition_value_must_be_an_option(minimal_doc, write_instrument):
    minimal_doc["items"][3]["show_if"] = {"item": "pets", "includes": "horse"}
    assert_problem(
        write_instrument(minimal_doc),
        "items[3].show_if.includes",
        "'horse' is not an option value of 'pets'",
    )


def test_any_of_values_must_be_options(minimal_doc, write_instrument):
    minimal_doc["items"][3]["show_if"] = {"item": "q1", "any_of": [1, 7]}
    assert_problem(
        write_instrument(minimal_doc), "items[3].show_if.any_of", "7 is not an option value of 'q1'"
    )


def test_includes_needs_multiple_choice(minimal_doc, write_instrument):
    minimal_doc["items"][3]["show_if"] = {"item": "q1", "includes": "x"}
    assert_problem(
        write_instrument(minimal_doc), "items[3].show_if.includes", "needs a multiple_choice item"
    )


def test_comparison_needs_numeric_item(minimal_doc, write_instrument):
    minimal_doc["items"][3]["show_if"] = {"item": "pets", "gt": 0}
    assert_problem(write_instrument(minimal_doc), "items[3].show_if.gt", "needs a numeric item")


def test_safety_rule_must_refer_to_an_item(minimal_doc, write_instrument):
    minimal_doc["safety"][0]["when"] = {"item": "q9", "gt": 0}
    assert_problem(write_instrument(minimal_doc), "safety[0].when.item", "'q9' is not an item")


def test_missing_item_text_in_a_language(minimal_doc, write_instrument):
    del minimal_doc["languages"]["de"]["items"]["cats"]
    assert_problem(
        write_instrument(minimal_doc), "languages.de.items", "missing text for item 'cats'"
    )


def test_text_for_unknown_item_in_a_language(minimal_doc, write_instrument):
    minimal_doc["languages"]["de"]["items"]["q99"] = "?"
    assert_problem(write_instrument(minimal_doc), "languages.de.items.q99", "no item with this id")


def test_missing_option_label_in_a_language(minimal_doc, write_instrument):
    del minimal_doc["languages"]["de"]["options"]["dog"]
    assert_problem(
        write_instrument(minimal_doc), "languages.de.options", "missing option label 'dog'"
    )


def test_unused_option_label_in_a_language(minimal_doc, write_instrument):
    minimal_doc["languages"]["en"]["options"]["fish"] = "Fish"
    assert_problem(
        write_instrument(minimal_doc), "languages.en.options.fish", "no option uses this label"
    )


def test_scoring_refers_to_unknown_item(minimal_doc, write_instrument):
    minimal_doc["scoring"]["items"] = ["q1", "q3"]
    assert_problem(write_instrument(minimal_doc), "scoring.items[1]", "no item 'q3'")


def test_scoring_item_must_have_integer_values(minimal_doc, write_instrument):
    minimal_doc["scoring"]["items"] = ["q1", "pets"]
    assert_problem(write_instrument(minimal_doc), "scoring.items[1]", "cannot be scored")


def test_declared_range_must_match_items(minimal_doc, write_instrument):
    minimal_doc["scoring"]["range"] = {"min": 0, "max": 6}
    assert_problem(
        write_instrument(minimal_doc), "scoring.range", r"declared 0\.\.6 but the items give 0\.\.4"
    )


def test_reversed_item_needs_a_reverse_rule(minimal_doc, write_instrument):
    del minimal_doc["scoring"]["reverse_rule"]
    assert_problem(
        write_instrument(minimal_doc),
        "scoring.reverse_rule",
        "required because an item is reverse_scored",
    )


def test_only_integer_choice_items_can_be_reversed(minimal_doc, write_instrument):
    minimal_doc["items"][4]["reverse_scored"] = True
    assert_problem(write_instrument(minimal_doc), "items[4].reverse_scored", "only single_choice")


def test_sum_with_missing_items_needs_prorating(minimal_doc, write_instrument):
    del minimal_doc["scoring"]["prorate"]
    assert_problem(write_instrument(minimal_doc), "scoring.prorate", "needs a prorating rule")


def test_min_answered_cannot_exceed_items(minimal_doc, write_instrument):
    minimal_doc["scoring"]["min_answered"] = 3
    assert_problem(
        write_instrument(minimal_doc), "scoring.min_answered", "more than the 2 scored items"
    )


def test_bands_must_increase(minimal_doc, write_instrument):
    minimal_doc["scoring"]["bands"] = [
        {"up_to": 2, "key": "a", "label": "A"},
        {"up_to": 2, "key": "b", "label": "B"},
        {"up_to": 4, "key": "c", "label": "C"},
    ]
    assert_problem(
        write_instrument(minimal_doc), "scoring.bands[1].up_to", "not above the previous band's 2"
    )


def test_last_band_must_end_at_the_maximum(minimal_doc, write_instrument):
    minimal_doc["scoring"]["bands"][-1]["up_to"] = 3
    assert_problem(
        write_instrument(minimal_doc), "scoring.bands[1].up_to", "must end at the score maximum 4"
    )


def test_bands_follow_the_transformed_range(minimal_doc, write_instrument):
    minimal_doc["scoring"]["transform"] = {"multiply": 25}
    assert_problem(write_instrument(minimal_doc), "scoring.bands[1].up_to", "score maximum 100")


def test_subscale_items_must_be_scored_items(minimal_doc, write_instrument):
    minimal_doc["scoring"]["subscales"] = [
        {"key": "part", "method": "mean", "items": ["q1", "hours"], "range": {"min": 0, "max": 2}}
    ]
    assert_problem(
        write_instrument(minimal_doc), "scoring.subscales[0].items[1]", "not among scoring.items"
    )


def test_subscale_name_must_differ_from_primary(minimal_doc, write_instrument):
    minimal_doc["scoring"]["subscales"] = [
        {"key": "total", "method": "sum", "items": ["q1"], "range": {"min": 0, "max": 2}}
    ]
    assert_problem(write_instrument(minimal_doc), "scoring.subscales[0].key", "used twice")


def test_load_instruments_names_the_bad_file(tmp_path, minimal_doc):
    (tmp_path / "mini.yaml").write_text(yaml.safe_dump(minimal_doc), encoding="utf-8")
    broken = dict(minimal_doc, key="broken", version=2)
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(broken), encoding="utf-8")
    with pytest.raises(InstrumentError) as caught:
        load_instruments(tmp_path)
    assert str(caught.value) == f"{tmp_path / 'broken.yaml'}: version: 2 is not of type 'string'"


def test_load_instruments_rejects_a_missing_directory(tmp_path):
    with pytest.raises(InstrumentError, match="not a directory"):
        load_instruments(tmp_path / "nowhere")


# --- the model API ----------


def test_localized_merges_texts_of_one_language(mini):
    page = mini.localized("de")
    assert (page.language, page.translation_status, page.source) == ("de", "study", None)
    assert page.title == "Mini" and page.instructions == "Antworten."
    pets = page.items[2]
    assert (pets.id, pets.text) == ("pets", "Haustiere?")
    assert [(o.value, o.label, o.exclusive) for o in pets.options] == [
        ("cat", "Katze", False),
        ("dog", "Hund", False),
        ("none", "Keine", True),
    ]
    assert page.items[3].show_if.operator == ("includes", "cat")
    assert (page.items[5].max_length, page.items[5].possibly_identifying) == (10, True)


def test_localized_english_carries_the_validated_source(shipped):
    page = shipped["phq9"].localized("en")
    assert page.translation_status == "validated" and "Kroenke" in page.source
    assert page.items[8].text.startswith("Thoughts that you would be better off dead")
    assert [o.label for o in page.items[0].options][0] == "Not at all"


def test_localized_unknown_language(mini):
    with pytest.raises(LanguageNotAvailable, match="'fr'"):
        mini.localized("fr")


def test_languages_with_status(mini):
    assert mini.languages_with_status("validated") == ["en"]
    assert mini.languages_with_status("study") == ["de"]
    assert mini.languages_with_status("validated", "study") == ["en", "de"]
    assert mini.languages_with_status() == ["en", "de"]


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ({"en": ["validated"], "de": ["validated"]}, ["en"]),
        ({"de": ["validated", "study"], "en": ["validated"]}, ["de", "en"]),
        ({"en": ["study"]}, []),
        ({"fr": ["validated", "study"], "de": ["study"]}, ["de"]),
        ({}, []),
    ],
)
def test_acceptable_languages(mini, accept: dict[str, Any], expected: list[str]):
    assert acceptable_languages(mini, accept) == expected


def test_acceptable_languages_rejects_unknown_status(mini):
    with pytest.raises(ValueError, match="unknown status validatd"):
        acceptable_languages(mini, {"en": ["validatd"]})


def test_content_hash_is_sha256_hex_and_stable_across_loads(mini, minimal_doc, write_instrument):
    again = load_instrument(write_instrument(minimal_doc))
    assert re.fullmatch(r"[0-9a-f]{64}", mini.content_hash())
    assert again.content_hash() == mini.content_hash()


def test_content_hash_ignores_formatting_comments_and_key_order(
    mini, minimal_doc, write_instrument
):
    reordered = dict(reversed(list(minimal_doc.items())))
    text = "# a comment\n" + yaml.safe_dump(
        reordered, sort_keys=False, default_flow_style=True, width=60
    )
    assert load_instrument(write_instrument(text)).content_hash() == mini.content_hash()


def test_content_hash_changes_with_wording(mini, minimal_doc, write_instrument):
    minimal_doc["languages"]["de"]["items"]["q1"] = "F1?"
    assert load_instrument(write_instrument(minimal_doc)).content_hash() != mini.content_hash()


def test_content_hash_differs_between_instruments(shipped):
    hashes = {instrument.content_hash() for instrument in shipped.values()}
    assert len(hashes) == len(shipped)

"""Instruments (questionnaires) as data: the typed model, loading and checking.

An instrument is a YAML file in surveys/instruments/. Loading it takes three steps, each of which
reports every problem it finds as ``file: path.inside[2].the: reason``:

1. YAML parsing, strict: duplicate keys are errors, and only ``true``/``false`` are booleans
   (YAML 1.1 would read ``no`` as false and ``2026-02-13`` as a date).
2. The JSON Schema surveys/schema/instrument.schema.json (draft 2020-12): shape and types.
3. Semantic checks the schema cannot express: unique item ids, conditions and scoring that refer
   to existing items and option values, complete translations, ordered bands, sane score ranges.

Typical use::

    instruments = load_instruments()               # key -> Instrument
    phq9 = instruments["phq9"]
    page = phq9.localized("de")                    # texts in German + translation status
    pin = phq9.content_hash()                      # for a study protocol to pin
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import jsonschema
import yaml
from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr, ValidationError, model_validator

from app.core import safe_yaml, urls

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO_ROOT / "surveys" / "schema" / "instrument.schema.json"
INSTRUMENTS_DIR = REPO_ROOT / "surveys" / "instruments"

TranslationStatus = Literal["validated", "study"]
TRANSLATION_STATUSES: tuple[str, ...] = ("validated", "study")
ItemType = Literal["single_choice", "multiple_choice", "integer", "number", "text"]
OptionValue = StrictInt | StrictStr
Number = int | float


# --- errors ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an instrument file: where inside it, and why."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class InstrumentError(Exception):
    """An instrument file that cannot be used. ``str()`` gives one line per problem:
    ``surveys/instruments/phq9.yaml: items[3].options[1].value: 'x' is not valid ...``."""

    def __init__(self, file: str | Path, problems: Sequence[Problem]) -> None:
        self.file = str(file)
        self.problems = list(problems)
        super().__init__("\n".join(f"{self.file}: {p}" for p in self.problems))


class LanguageNotAvailable(LookupError):
    """The instrument has no texts in the requested language."""


# --- the model -------------------------------------------------------------------------------


class _Model(BaseModel):
    # Instruments are shared by every request: frozen, and strict about unknown fields.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Licence(_Model):
    name: str
    note: str


class Option(_Model):
    value: OptionValue
    label: str  # key into LanguageTexts.options
    exclusive: bool = False


class Condition(_Model):
    """A display condition or safety trigger: one operator applied to one item's answer."""

    item: str
    equals: int | float | str | None = None
    any_of: list[int | float | str] | None = None
    includes: str | None = None
    gt: Number | None = None
    gte: Number | None = None
    lt: Number | None = None
    lte: Number | None = None

    @model_validator(mode="after")
    def _exactly_one_operator(self) -> Condition:
        set_ops = [op for op in _OPERATORS if getattr(self, op) is not None]
        if len(set_ops) != 1:
            raise ValueError(f"a condition needs exactly one of {', '.join(_OPERATORS)}")
        return self

    @property
    def operator(self) -> tuple[str, Any]:
        """The (operator name, operand) pair, e.g. ``("gt", 0)``."""
        for op in _OPERATORS:
            value = getattr(self, op)
            if value is not None:
                return op, value
        raise AssertionError("unreachable: validated to have one operator")

    def holds(self, answer: Any) -> bool:
        """Whether a cleaned answer satisfies the condition. An unanswered item never does."""
        if answer is None:
            return False
        op, operand = self.operator
        if op == "equals":
            return not isinstance(answer, list) and answer == operand
        if op == "any_of":
            chosen = answer if isinstance(answer, list) else [answer]
            return any(value in operand for value in chosen)
        if op == "includes":
            return isinstance(answer, list) and operand in answer
        if not is_number(answer):
            return False
        return _COMPARE[op](answer, operand)


_OPERATORS = ("equals", "any_of", "includes", "gt", "gte", "lt", "lte")
_COMPARE = {
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
}


def is_number(value: Any) -> bool:
    """True for int and finite float, false for bool (``True`` is not an answer of 1)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value)


class Item(_Model):
    id: str
    type: ItemType
    required: bool = True
    show_if: Condition | None = None
    reverse_scored: bool = False
    options: list[Option] = []
    min: Number | None = None
    max: Number | None = None
    max_length: int | None = None
    possibly_identifying: bool = False

    @property
    def option_values(self) -> list[OptionValue]:
        return [option.value for option in self.options]

    @property
    def has_integer_options(self) -> bool:
        return bool(self.options) and all(isinstance(v, int) for v in self.option_values)

    def value_range(self) -> tuple[Number, Number] | None:
        """Lowest and highest numeric answer, for items that can be scored or compared."""
        if self.type == "single_choice" and self.has_integer_options:
            values = [int(v) for v in self.option_values]
            return min(values), max(values)
        if self.type in ("integer", "number") and self.min is not None and self.max is not None:
            return self.min, self.max
        return None


class LanguageTexts(_Model):
    translation_status: TranslationStatus
    source: str | None = None
    note: str | None = None
    title: str
    instructions: str
    items: dict[str, str]
    options: dict[str, str] = {}


class ScoreRange(_Model):
    min: Number
    max: Number


class Transform(_Model):
    multiply: Number


class Prorate(_Model):
    rounding: Literal["half_up", "none"]
    source: str


class Subscale(_Model):
    key: str
    label: str | None = None
    method: Literal["sum", "mean"]
    items: list[str]
    range: ScoreRange
    min_answered: int | None = None

    @property
    def required_answers(self) -> int:
        return self.min_answered if self.min_answered is not None else len(self.items)


class Band(_Model):
    up_to: Number
    key: str
    label: str


class Scoring(_Model):
    method: Literal["sum", "mean"]
    items: list[str]
    range: ScoreRange
    reverse_rule: Literal["min_plus_max_minus_value"] | None = None
    transform: Transform | None = None
    primary: str
    min_answered: int
    prorate: Prorate | None = None
    subscales: list[Subscale] = []
    bands: list[Band] = []
    interpretation: str | None = None

    @property
    def multiplier(self) -> Number:
        return self.transform.multiply if self.transform else 1

    @property
    def primary_range(self) -> ScoreRange:
        """Range of the primary score: the raw range after the transformation."""
        return ScoreRange(
            min=self.range.min * self.multiplier, max=self.range.max * self.multiplier
        )


class SafetyRule(_Model):
    flag: str
    when: Condition
    source: str | None = None


class LocalizedOption(_Model):
    value: OptionValue
    label: str
    exclusive: bool = False


class LocalizedItem(_Model):
    id: str
    type: ItemType
    required: bool
    text: str
    options: list[LocalizedOption] = []
    min: Number | None = None
    max: Number | None = None
    max_length: int | None = None
    possibly_identifying: bool = False
    show_if: Condition | None = None


class LocalizedInstrument(_Model):
    """What a participant sees: one language's texts merged into the item structure."""

    key: str
    version: str
    language: str
    translation_status: TranslationStatus
    source: str | None
    title: str
    instructions: str
    recall_period_days: int
    items: list[LocalizedItem]


class Instrument(_Model):
    key: str
    version: str
    title: str
    description: str | None = None
    recall_period_days: int
    citation: str
    licence: Licence
    redistributable: bool
    languages: dict[str, LanguageTexts]
    items: list[Item]
    scoring: Scoring | None = None
    safety: list[SafetyRule] = []

    @property
    def item_ids(self) -> list[str]:
        return [item.id for item in self.items]

    def item(self, item_id: str) -> Item:
        """The item with this id; KeyError if there is none."""
        for item in self.items:
            if item.id == item_id:
                return item
        raise KeyError(item_id)

    def localized(self, language: str) -> LocalizedInstrument:
        """The instrument with its texts in ``language`` (an exact tag such as ``pt-BR``)."""
        texts = self.languages.get(language)
        if texts is None:
            raise LanguageNotAvailable(
                f"instrument {self.key!r} has no {language!r} texts "
                f"(available: {', '.join(self.languages)})"
            )
        return LocalizedInstrument(
            key=self.key,
            version=self.version,
            language=language,
            translation_status=texts.translation_status,
            source=texts.source,
            title=texts.title,
            instructions=texts.instructions,
            recall_period_days=self.recall_period_days,
            items=[_localize_item(item, texts) for item in self.items],
        )

    def languages_with_status(self, *statuses: TranslationStatus) -> list[str]:
        """Language tags whose translation status is one of ``statuses`` (all when none given)."""
        return [
            lang
            for lang, texts in self.languages.items()
            if not statuses or texts.translation_status in statuses
        ]

    def content_hash(self) -> str:
        """SHA-256 (hex) of the instrument's canonical JSON, so a protocol can pin a version.

        Only what the file states is hashed (defaults left implicit stay out), so the hash
        survives comments, key order, YAML anchors and new optional fields in this code, and
        changes with any change to wording, options, conditions or scoring.
        """
        document = self.model_dump(mode="json", exclude_unset=True)
        canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _localize_item(item: Item, texts: LanguageTexts) -> LocalizedItem:
    return LocalizedItem(
        id=item.id,
        type=item.type,
        required=item.required,
        text=texts.items[item.id],
        options=[
            LocalizedOption(value=o.value, label=texts.options[o.label], exclusive=o.exclusive)
            for o in item.options
        ],
        min=item.min,
        max=item.max,
        max_length=item.max_length,
        possibly_identifying=item.possibly_identifying,
        show_if=item.show_if,
    )


def acceptable_languages(instrument: Instrument, accept: Mapping[str, Sequence[str]]) -> list[str]:
    """Languages a study may show this instrument in, in the study's order.

    ``accept`` is the study file's ``accept_translations``, e.g.
    ``{"en": ["validated"], "de": ["validated", "study"]}``. An unknown status is a ValueError
    rather than silently matching nothing.
    """
    for lang, statuses in accept.items():
        unknown = sorted(set(statuses) - set(TRANSLATION_STATUSES))
        if unknown:
            raise ValueError(f"accept_translations.{lang}: unknown status {', '.join(unknown)}")
    return [
        lang
        for lang, statuses in accept.items()
        if lang in instrument.languages
        and instrument.languages[lang].translation_status in statuses
    ]


# --- loading ---------------------------------------------------------------------------------


def load_instrument(path: str | Path) -> Instrument:
    """Load, validate and check one instrument file; InstrumentError names every problem."""
    path = Path(path)
    document = _read_yaml(path)
    problems = _schema_problems(document)
    if problems:
        raise InstrumentError(path, problems)
    try:
        instrument = Instrument.model_validate(document)
    except ValidationError as exc:  # the schema should have caught it; still report it well
        raise InstrumentError(path, _pydantic_problems(exc)) from None
    problems = _semantic_problems(instrument)
    if instrument.key != path.stem:
        problems.insert(
            0, Problem("key", f"{instrument.key!r} does not match the file name {path.name!r}")
        )
    if problems:
        raise InstrumentError(path, problems)
    return instrument


def load_instruments(directory: str | Path = INSTRUMENTS_DIR) -> dict[str, Instrument]:
    """Every ``*.yaml`` instrument in ``directory`` by key; the first bad file raises."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InstrumentError(directory, [Problem("(directory)", "not a directory")])
    return {
        instrument.key: instrument
        for instrument in (load_instrument(p) for p in sorted(directory.glob("*.yaml")))
    }


@lru_cache(maxsize=1)
def instrument_schema() -> dict[str, Any]:
    """The instrument JSON Schema (draft 2020-12)."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


# libyaml's parser when PyYAML has it (about ten times faster; the same safe constructor and
# resolvers, so the same results): every study load reads every instrument. It refuses a
# document over the size, depth and alias limits (app/core/safe_yaml.py) before building it.
class _StrictLoader(safe_yaml.LimitedSafeLoader):
    """SafeLoader without YAML 1.1 surprises: only true/false are booleans, dates stay text,
    and a key given twice is an error instead of silently keeping the last value."""


_BOOL_TAG = "tag:yaml.org,2002:bool"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL_TAG, _TIMESTAMP_TAG)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver(_BOOL_TAG, re.compile(r"^(?:true|false)$"), list("tf"))


def _construct_mapping_without_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode) -> Any:
    loader.flatten_mapping(node)
    seen: set[Hashable] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, Hashable):
            continue  # construct_mapping reports unhashable keys itself
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping_without_duplicates
)


def _read_yaml(path: Path) -> Any:
    try:
        return safe_yaml.load(safe_yaml.read_text(path, "instrument file"), _StrictLoader)
    except safe_yaml.YamlLimitError as exc:
        raise InstrumentError(path, [Problem("(file)", str(exc))]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InstrumentError(path, [Problem("(file)", f"cannot read: {exc}")]) from None
    except yaml.YAMLError as exc:
        raise InstrumentError(path, [_yaml_problem(exc)]) from None


def _yaml_problem(exc: yaml.YAMLError) -> Problem:
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
    reason = getattr(exc, "problem", None) or str(exc)
    return Problem(where, f"invalid YAML: {reason}")


def format_path(parts: Iterable[str | int]) -> str:
    """``["items", 3, "options", 1, "value"]`` -> ``items[3].options[1].value``."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _schema_problems(document: Any) -> list[Problem]:
    validator = jsonschema.Draft202012Validator(instrument_schema(),
                                                format_checker=urls.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(document), key=lambda e: _path_sort_key(e.absolute_path))
    return [Problem(format_path(e.absolute_path), _schema_reason(e)) for e in errors]


def _path_sort_key(parts: Iterable[str | int]) -> tuple[tuple[int, int, str], ...]:
    return tuple((0, p, "") if isinstance(p, int) else (1, 0, str(p)) for p in parts)


def _schema_reason(error: jsonschema.ValidationError) -> str:
    if error.validator == "not" and error.validator_value == {}:  # $defs/forbidden
        return "not allowed for this item type"
    if error.validator == "format" and error.validator_value in urls.FORMATS:
        return urls.format_problem(error.validator_value, error.instance)
    return error.message


def _pydantic_problems(exc: ValidationError) -> list[Problem]:
    return [Problem(format_path(e["loc"]), e["msg"]) for e in exc.errors()]


# --- semantic checks -------------------------------------------------------------------------


def _semantic_problems(instrument: Instrument) -> list[Problem]:
    problems = _item_problems(instrument)
    problems += _condition_problems(instrument)
    problems += _language_problems(instrument)
    if instrument.scoring is not None:
        problems += _scoring_problems(instrument, instrument.scoring)
    return problems


def _item_problems(instrument: Instrument) -> list[Problem]:
    problems: list[Problem] = []
    first_index: dict[str, int] = {}
    for i, item in enumerate(instrument.items):
        at = f"items[{i}]"
        if item.id in first_index:
            problems.append(
                Problem(
                    f"{at}.id",
                    f"duplicate item id {item.id!r} (first at items[{first_index[item.id]}])",
                )
            )
        first_index.setdefault(item.id, i)
        problems += _option_problems(item, at)
        if item.min is not None and item.max is not None and item.min >= item.max:
            problems.append(
                Problem(f"{at}.max", f"max ({item.max}) must be greater than min ({item.min})")
            )
        if item.reverse_scored and not (item.type == "single_choice" and item.has_integer_options):
            problems.append(
                Problem(
                    f"{at}.reverse_scored",
                    "only single_choice items with integer values can be reversed",
                )
            )
    return problems


def _option_problems(item: Item, at: str) -> list[Problem]:
    problems: list[Problem] = []
    seen_values: set[OptionValue] = set()
    seen_labels: set[str] = set()
    for j, option in enumerate(item.options):
        where = f"{at}.options[{j}]"
        if option.value in seen_values:
            problems.append(Problem(f"{where}.value", f"duplicate option value {option.value!r}"))
        if option.label in seen_labels:
            problems.append(Problem(f"{where}.label", f"label key {option.label!r} used twice"))
        seen_values.add(option.value)
        seen_labels.add(option.label)
        if option.exclusive and item.type != "multiple_choice":
            problems.append(
                Problem(f"{where}.exclusive", "only multiple_choice options can be exclusive")
            )
    kinds = {type(v) for v in item.option_values}
    if item.type == "single_choice" and len(kinds) > 1:
        problems.append(Problem(f"{at}.options", "option values must be all integers or all codes"))
    if item.type == "multiple_choice" and int in kinds:
        problems.append(Problem(f"{at}.options", "multiple_choice option values must be codes"))
    return problems


def _condition_problems(instrument: Instrument) -> list[Problem]:
    problems: list[Problem] = []
    earlier: dict[str, Item] = {}
    for i, item in enumerate(instrument.items):
        if item.show_if is not None:
            # Only earlier items, so one pass in order decides visibility and cycles are impossible.
            problems += _check_condition(
                item.show_if, f"items[{i}].show_if", earlier, "an earlier item"
            )
        earlier.setdefault(item.id, item)
    every_item = {item.id: item for item in instrument.items}
    for i, rule in enumerate(instrument.safety):
        problems += _check_condition(rule.when, f"safety[{i}].when", every_item, "an item")
    return problems


def _check_condition(
    condition: Condition, at: str, allowed: Mapping[str, Item], what: str
) -> list[Problem]:
    target = allowed.get(condition.item)
    if target is None:
        return [Problem(f"{at}.item", f"{condition.item!r} is not {what} of this instrument")]
    op, operand = condition.operator
    where = f"{at}.{op}"
    if op == "includes":
        if target.type != "multiple_choice":
            return [
                Problem(
                    where,
                    f"'includes' needs a multiple_choice item; {target.id!r} is {target.type}",
                )
            ]
        return _operand_in_options([operand], target, where)
    if op in ("equals", "any_of"):
        if op == "equals" and target.type == "multiple_choice":
            return [
                Problem(where, f"use 'includes' or 'any_of' for multiple_choice item {target.id!r}")
            ]
        if target.type in ("single_choice", "multiple_choice"):
            return _operand_in_options(operand if op == "any_of" else [operand], target, where)
        return []
    if target.value_range() is None:
        return [Problem(where, f"{op!r} needs a numeric item; {target.id!r} is not")]
    return []


def _operand_in_options(operands: Sequence[Any], target: Item, where: str) -> list[Problem]:
    return [
        Problem(where, f"{value!r} is not an option value of {target.id!r}")
        for value in operands
        if value not in target.option_values or isinstance(value, bool)
    ]


def _language_problems(instrument: Instrument) -> list[Problem]:
    item_ids = instrument.item_ids
    label_keys = list(dict.fromkeys(o.label for item in instrument.items for o in item.options))
    problems: list[Problem] = []
    for lang, texts in instrument.languages.items():
        at = f"languages.{lang}"
        problems += [
            Problem(f"{at}.items", f"missing text for item {item_id!r}")
            for item_id in item_ids
            if item_id not in texts.items
        ]
        problems += [
            Problem(f"{at}.items.{key}", "no item with this id")
            for key in texts.items
            if key not in item_ids
        ]
        problems += [
            Problem(f"{at}.options", f"missing option label {key!r}")
            for key in label_keys
            if key not in texts.options
        ]
        problems += [
            Problem(f"{at}.options.{key}", "no option uses this label key")
            for key in texts.options
            if key not in label_keys
        ]
    return problems


def _scoring_problems(instrument: Instrument, scoring: Scoring) -> list[Problem]:
    items = {item.id: item for item in instrument.items}
    problems: list[Problem] = []
    for i, item_id in enumerate(scoring.items):
        item = items.get(item_id)
        if item is None:
            problems.append(Problem(f"scoring.items[{i}]", f"no item {item_id!r}"))
        elif item.value_range() is None or item.type == "number":
            problems.append(
                Problem(
                    f"scoring.items[{i}]", f"{item_id!r} cannot be scored (needs integer values)"
                )
            )
    if problems:
        return problems  # ranges below need every scored item
    scored = [items[item_id] for item_id in scoring.items]
    if any(item.reverse_scored for item in scored) and scoring.reverse_rule is None:
        problems.append(
            Problem("scoring.reverse_rule", "required because an item is reverse_scored")
        )
    problems += _range_problems("scoring.range", scoring.method, scored, scoring.range)
    problems += _answered_problems("scoring", scoring, len(scored))
    problems += _subscale_problems(scoring, items)
    problems += _band_problems(scoring)
    return problems


def _range_problems(
    at: str, method: str, scored: Sequence[Item], declared: ScoreRange
) -> list[Problem]:
    expected = expected_range(method, scored)
    if math.isclose(declared.min, expected[0]) and math.isclose(declared.max, expected[1]):
        return []
    return [
        Problem(
            at,
            f"declared {declared.min}..{declared.max} but the items give "
            f"{_tidy(expected[0])}..{_tidy(expected[1])}",
        )
    ]


def expected_range(method: str, scored: Sequence[Item]) -> tuple[Number, Number]:
    """The score range that follows from the items' values (reversal maps a range onto itself)."""
    ranges = [item.value_range() for item in scored]
    lows = sum(r[0] for r in ranges if r)
    highs = sum(r[1] for r in ranges if r)
    if method == "mean":
        return lows / len(ranges), highs / len(ranges)
    return lows, highs


def _tidy(number: Number) -> Number:
    return int(number) if float(number).is_integer() else number


def _answered_problems(at: str, scoring: Scoring, n_items: int) -> list[Problem]:
    problems: list[Problem] = []
    if scoring.min_answered > n_items:
        problems.append(
            Problem(
                f"{at}.min_answered",
                f"{scoring.min_answered} is more than the {n_items} scored items",
            )
        )
    if scoring.method == "sum" and scoring.min_answered < n_items and scoring.prorate is None:
        # A plain sum over fewer items would silently lower the score.
        problems.append(
            Problem(f"{at}.prorate", "a sum that allows missing items needs a prorating rule")
        )
    if scoring.method == "mean" and scoring.prorate is not None:
        problems.append(Problem(f"{at}.prorate", "a mean needs no prorating: remove it"))
    return problems


def _subscale_problems(scoring: Scoring, items: Mapping[str, Item]) -> list[Problem]:
    problems: list[Problem] = []
    keys = {scoring.primary}
    for i, sub in enumerate(scoring.subscales):
        at = f"scoring.subscales[{i}]"
        if sub.key in keys:
            problems.append(Problem(f"{at}.key", f"score name {sub.key!r} used twice"))
        keys.add(sub.key)
        missing = [
            (j, item_id) for j, item_id in enumerate(sub.items) if item_id not in scoring.items
        ]
        problems += [
            Problem(f"{at}.items[{j}]", f"{item_id!r} is not among scoring.items")
            for j, item_id in missing
        ]
        if missing:
            continue
        problems += _range_problems(
            f"{at}.range", sub.method, [items[x] for x in sub.items], sub.range
        )
        if sub.required_answers > len(sub.items):
            problems.append(Problem(f"{at}.min_answered", "more than the subscale's items"))
        if sub.method == "sum" and sub.required_answers < len(sub.items):
            problems.append(Problem(f"{at}.min_answered", "a sum subscale needs all its items"))
    return problems


def _band_problems(scoring: Scoring) -> list[Problem]:
    if not scoring.bands:
        return []
    problems: list[Problem] = []
    primary = scoring.primary_range
    previous: Number | None = None
    keys: set[str] = set()
    for i, band in enumerate(scoring.bands):
        at = f"scoring.bands[{i}]"
        if band.key in keys:
            problems.append(Problem(f"{at}.key", f"duplicate band key {band.key!r}"))
        keys.add(band.key)
        if previous is not None and band.up_to <= previous:
            problems.append(
                Problem(f"{at}.up_to", f"{band.up_to} is not above the previous band's {previous}")
            )
        if band.up_to < primary.min:
            problems.append(
                Problem(f"{at}.up_to", f"{band.up_to} is below the score minimum {primary.min}")
            )
        previous = band.up_to
    last = scoring.bands[-1].up_to
    if not math.isclose(last, primary.max):
        problems.append(
            Problem(
                f"scoring.bands[{len(scoring.bands) - 1}].up_to",
                f"the last band must end at the score maximum {_tidy(primary.max)}, not {last}",
            )
        )
    return problems

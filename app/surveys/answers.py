"""Checking a participant's answers to one instrument before anything is stored.

``validate_answers`` returns the cleaned answers (typed, canonical) or raises
``AnswerValidationError`` listing every problem as ``{item, code, message_key, params}``. The web
layer shows ``message_key`` (e.g. ``answer.required``) from its locale files next to ``item``;
``params`` fill the placeholders (``{min}``, ``{max}``, ``{max_length}``...).

Form posts arrive as strings, so numeric answers may be given as ``"3"``; a boolean is never a
number. Blank answers (missing, ``None``, ``""``, ``[]``) count as unanswered.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict

from app.surveys.instruments import Instrument, Item, OptionValue, is_number

# code -> message key; the web layer's locale files must define every key listed here.
MESSAGE_KEYS: dict[str, str] = {
    code: f"answer.{code}"
    for code in (
        "not_an_object",  # the answers are not a JSON object / mapping
        "unknown_item",  # no item with this id
        "required",  # a required item that is shown was not answered
        "hidden_item",  # answered, but its display condition hides it
        "wrong_type",  # params: expected (option, options, integer, number, text)
        "invalid_option",  # params: value
        "duplicate_option",  # params: value
        "exclusive_option",  # params: value (e.g. "none" ticked together with others)
        "out_of_range",  # params: min, max
        "too_long",  # params: max_length, length
        "invalid_characters",  # text with control characters (NUL would break storage)
    )
}


class AnswerError(BaseModel):
    """One problem with one answer."""

    model_config = ConfigDict(frozen=True)

    item: str | None
    code: str
    message_key: str
    params: dict[str, Any] = {}


class AnswerValidationError(ValueError):
    """The answers cannot be accepted; ``errors`` names each item at fault."""

    def __init__(self, errors: list[AnswerError]) -> None:
        self.errors = errors
        summary = "; ".join(f"{e.item}: {e.code}" for e in errors)
        super().__init__(f"{len(errors)} invalid answer(s): {summary}")

    def as_dicts(self) -> list[dict[str, Any]]:
        """The errors as plain dicts, for an API error's ``details``."""
        return [error.model_dump() for error in self.errors]


class InvalidAnswer(ValueError):
    """Raised by ``clean_value``: the code and params of the problem."""

    def __init__(self, code: str, **params: Any) -> None:
        self.code = code
        self.params = params
        super().__init__(code)


def _error(item: str | None, code: str, params: dict[str, Any] | None = None) -> AnswerError:
    return AnswerError(item=item, code=code, message_key=MESSAGE_KEYS[code], params=params or {})


def is_blank(value: Any) -> bool:
    """Unanswered: absent, None, an empty or whitespace-only string, or an empty list."""
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip() == ""
    return isinstance(value, list | tuple) and len(value) == 0


# --- one value -------------------------------------------------------------------------------


def clean_value(item: Item, value: Any) -> Any:
    """The typed, canonical answer to ``item``; raises InvalidAnswer. ``value`` is not blank."""
    cleaners = {
        "single_choice": _clean_single_choice,
        "multiple_choice": _clean_multiple_choice,
        "integer": _clean_integer,
        "number": _clean_number,
        "text": _clean_text,
    }
    return cleaners[item.type](item, value)


def _clean_single_choice(item: Item, value: Any) -> OptionValue:
    if item.has_integer_options:
        choice: OptionValue = _as_int(value, expected="option")
    elif isinstance(value, str):
        choice = value.strip()
    else:
        raise InvalidAnswer("wrong_type", expected="option")
    if choice not in item.option_values:
        raise InvalidAnswer("invalid_option", value=choice)
    return choice


def _clean_multiple_choice(item: Item, value: Any) -> list[str]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise InvalidAnswer("wrong_type", expected="options")
    chosen = [v.strip() for v in value]
    for v in chosen:
        if v not in item.option_values:
            raise InvalidAnswer("invalid_option", value=v)
    for v in chosen:
        if chosen.count(v) > 1:
            raise InvalidAnswer("duplicate_option", value=v)
    exclusive = [o.value for o in item.options if o.exclusive and o.value in chosen]
    if exclusive and len(chosen) > 1:
        raise InvalidAnswer("exclusive_option", value=exclusive[0])
    # Canonical order (the instrument's) so equal answers store and compare equal.
    return [v for v in item.option_values if v in chosen]  # type: ignore[misc]


def _clean_integer(item: Item, value: Any) -> int:
    number = _as_int(value, expected="integer")
    _check_range(item, number)
    return number


def _clean_number(item: Item, value: Any) -> int | float:
    number = _as_number(value)
    _check_range(item, number)
    return number


def _clean_text(item: Item, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidAnswer("wrong_type", expected="text")
    text = value.strip()
    if _CONTROL_CHARS.search(text):
        raise InvalidAnswer("invalid_characters")
    if item.max_length is not None and len(text) > item.max_length:
        raise InvalidAnswer("too_long", max_length=item.max_length, length=len(text))
    return text


# Control characters other than tab and newlines (\r\n as typed in a textarea).
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_INT_TEXT = re.compile(r"[+-]?[0-9]+")
_NUMBER_TEXT = re.compile(r"[+-]?([0-9]+([.,][0-9]*)?|[.,][0-9]+)")


def _as_int(value: Any, *, expected: str) -> int:
    if isinstance(value, bool):  # bool is a subclass of int, but True is not an answer of 1
        raise InvalidAnswer("wrong_type", expected=expected)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)  # JSON clients may send 3.0
    if isinstance(value, str) and _INT_TEXT.fullmatch(value.strip()):
        return int(value.strip())
    raise InvalidAnswer("wrong_type", expected=expected)


def _as_number(value: Any) -> int | float:
    if is_number(value):
        return value
    if isinstance(value, str) and _NUMBER_TEXT.fullmatch(value.strip()):
        text = value.strip().replace(",", ".")  # a decimal comma, as typed in de / pt-BR
        return float(text) if "." in text else int(text)
    raise InvalidAnswer("wrong_type", expected="number")


def _check_range(item: Item, number: int | float) -> None:
    if (item.min is not None and number < item.min) or (item.max is not None and number > item.max):
        raise InvalidAnswer("out_of_range", min=item.min, max=item.max)


# --- a whole set of answers ------------------------------------------------------------------


@dataclass
class _Walk:
    """The result of going through the items in order."""

    cleaned: dict[str, Any] = field(default_factory=dict)
    visible: list[Item] = field(default_factory=list)
    errors: list[AnswerError] = field(default_factory=list)
    # Items whose visibility cannot be judged because an item they depend on is invalid.
    undecided: set[str] = field(default_factory=set)
    invalid: set[str] = field(default_factory=set)


def _walk(instrument: Instrument, answers: Mapping[str, Any]) -> _Walk:
    # Conditions refer only to earlier items (checked at load), so one pass in order suffices.
    walk = _Walk()
    for item in instrument.items:
        raw = answers.get(item.id)
        condition = item.show_if
        if condition is not None and condition.item in walk.invalid | walk.undecided:
            walk.undecided.add(item.id)
            _clean_into(
                walk, item, raw
            )  # still report a bad value, but neither required nor hidden
            continue
        if condition is not None and not condition.holds(walk.cleaned.get(condition.item)):
            if not is_blank(raw):
                walk.errors.append(_error(item.id, "hidden_item"))
            continue
        walk.visible.append(item)
        if is_blank(raw):
            if item.required:
                walk.errors.append(_error(item.id, "required"))
            continue
        _clean_into(walk, item, raw)
    return walk


def _clean_into(walk: _Walk, item: Item, raw: Any) -> None:
    if is_blank(raw):
        return
    try:
        walk.cleaned[item.id] = clean_value(item, raw)
    except InvalidAnswer as problem:
        walk.invalid.add(item.id)
        walk.errors.append(_error(item.id, problem.code, problem.params))


def visible_items(instrument: Instrument, answers: Mapping[str, Any]) -> list[Item]:
    """The items shown given these (possibly partial, possibly invalid) answers, in order.

    An item whose condition depends on an unanswered, hidden or invalid answer is not shown.
    """
    if not isinstance(answers, Mapping):
        answers = {}
    return _walk(instrument, answers).visible


def validate_answers(instrument: Instrument, answers: Mapping[str, Any]) -> dict[str, Any]:
    """The cleaned answers (only answered, visible items), or AnswerValidationError.

    Checks: unknown item ids, missing required items, wrong types, options not in the list,
    duplicate or exclusive options, out-of-range numbers, text over its length, control
    characters in text, and answers to items hidden by their display condition.
    """
    if not isinstance(answers, Mapping):
        raise AnswerValidationError([_error(None, "not_an_object")])
    walk = _walk(instrument, answers)
    known = set(instrument.item_ids)
    errors = walk.errors + [_error(str(key), "unknown_item") for key in answers if key not in known]
    if errors:
        raise AnswerValidationError(errors)
    return walk.cleaned


def lenient_value(item: Item, value: Any) -> Any:
    """``clean_value`` that answers None instead of raising: for safety checks that must never
    fail on bad input."""
    if is_blank(value):
        return None
    try:
        return clean_value(item, value)
    except InvalidAnswer:
        return None

"""Scores and safety flags, computed exactly as each instrument's ``scoring`` block says.

Arithmetic is exact (fractions) so that prorating and rounding never suffer from float error:
a prorated PHQ-9 of 12.5 rounds half up to 13, never to 12 because of 12.4999999.

``score`` takes cleaned answers (``validate_answers``) or stored ones; it does not enforce
``required`` so that incomplete stored or imported data can be scored by the prorating rule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

from pydantic import BaseModel, ConfigDict

from app.surveys.answers import InvalidAnswer, clean_value, is_blank, lenient_value
from app.surveys.instruments import Band, Instrument, Number, Scoring, Subscale


class ScoreResult(BaseModel):
    """The scores of one response.

    ``raw`` is the score before transformation: the sum (prorated when items are missing) or the
    mean. ``primary`` is ``raw`` after the transformation (e.g. WHO-5 x 4), named
    ``primary_name``. Both are None when fewer than ``min_answered`` items were answered
    (``valid`` false). ``raw_sum`` is the plain sum of the answered items, after reversal.
    """

    model_config = ConfigDict(frozen=True)

    instrument: str
    version: str
    primary_name: str
    primary: Number | None
    raw: Number | None
    raw_sum: Number
    subscales: dict[str, Number | None]
    band: str | None
    band_label: str | None
    valid: bool
    n_answered: int
    n_items: int
    prorated: bool


def score(instrument: Instrument, answers: Mapping[str, Any]) -> ScoreResult | None:
    """Score the answers; None for an instrument without a scoring block (e.g. ``ai_usage``).

    Raises ValueError naming the item if a scored answer is not one of its values.
    """
    scoring = instrument.scoring
    if scoring is None:
        return None
    values = _scored_values(instrument, scoring, answers)
    n_items = len(scoring.items)
    valid = len(values) >= scoring.min_answered
    raw, prorated = _raw_score(scoring, list(values.values()), n_items) if valid else (None, False)
    primary = raw * Fraction(scoring.multiplier) if raw is not None else None
    band = band_for(scoring, primary) if primary is not None else None
    return ScoreResult(
        instrument=instrument.key,
        version=instrument.version,
        primary_name=scoring.primary,
        primary=_plain(primary),
        raw=_plain(raw),
        raw_sum=_plain(sum(values.values(), Fraction(0))),
        subscales={sub.key: _plain(_subscale_score(sub, values)) for sub in scoring.subscales},
        band=band.key if band else None,
        band_label=band.label if band else None,
        valid=valid,
        n_answered=len(values),
        n_items=n_items,
        prorated=prorated,
    )


def band_for(scoring: Scoring, primary: Number | Fraction) -> Band | None:
    """The severity band of a primary score: the first whose inclusive ``up_to`` reaches it."""
    for band in scoring.bands:
        if primary <= band.up_to:
            return band
    return None


def safety_flags(instrument: Instrument, answers: Mapping[str, Any]) -> list[str]:
    """Flags (e.g. ``suicidal_ideation``) raised by the instrument's safety rules.

    Never raises: a safety check must not be the reason a submission fails. Numeric strings
    from forms count ("2"); unreadable values raise no flag.
    """
    if not isinstance(answers, Mapping):
        return []
    flags: list[str] = []
    for rule in instrument.safety:
        item = instrument.item(rule.when.item)
        if rule.when.holds(lenient_value(item, answers.get(item.id))) and rule.flag not in flags:
            flags.append(rule.flag)
    return flags


def _scored_values(
    instrument: Instrument, scoring: Scoring, answers: Mapping[str, Any]
) -> dict[str, Fraction]:
    """Answered scored items -> value after reversal; unanswered items are left out."""
    values: dict[str, Fraction] = {}
    for item_id in scoring.items:
        item = instrument.item(item_id)
        raw = answers.get(item_id)
        if is_blank(raw):
            continue
        try:
            value = Fraction(clean_value(item, raw))
        except InvalidAnswer as problem:
            raise ValueError(
                f"{instrument.key}.{item_id}: cannot score {raw!r} ({problem.code})"
            ) from None
        if item.reverse_scored:
            low, high = item.value_range() or (0, 0)
            value = Fraction(low) + Fraction(high) - value  # min_plus_max_minus_value
        values[item_id] = value
    return values


def _raw_score(scoring: Scoring, values: list[Fraction], n_items: int) -> tuple[Fraction, bool]:
    """(raw score, prorated?) for at least ``min_answered`` values."""
    total = sum(values, Fraction(0))
    if scoring.method == "mean":
        return total / len(values), False
    if len(values) == n_items:
        return total, False
    assert scoring.prorate is not None  # guaranteed by the load-time checks
    prorated = total / len(values) * n_items
    if scoring.prorate.rounding == "half_up":
        prorated = Fraction(round_half_up(prorated))
    return prorated, True


def _subscale_score(sub: Subscale, values: Mapping[str, Fraction]) -> Fraction | None:
    answered = [values[item_id] for item_id in sub.items if item_id in values]
    if len(answered) < sub.required_answers:
        return None
    total = sum(answered, Fraction(0))
    return total / len(answered) if sub.method == "mean" else total


def round_half_up(value: Fraction) -> int:
    """Round to the nearest integer, ties upward (12.5 -> 13), unlike Python's round (-> 12)."""
    return math.floor(value + Fraction(1, 2))


def _plain(value: Fraction | None) -> Number | None:
    """An int when whole, else a float: what the API and exports store."""
    if value is None:
        return None
    return int(value) if value.denominator == 1 else float(value)

"""Fixtures for the questionnaire tests: the shipped instruments and small hand-made ones."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.surveys.instruments import INSTRUMENTS_DIR, Instrument, load_instrument, load_instruments

# A small but complete instrument touching every item type, a condition, scoring with
# prorating, a reversed item, bands and a safety rule. Tests copy it and break one thing.
MINIMAL: dict[str, Any] = {
    "key": "mini",
    "version": "1.0",
    "title": "Mini",
    "recall_period_days": 7,
    "citation": "Test fixture",
    "licence": {"name": "CC0", "note": "test"},
    "redistributable": True,
    "items": [
        {
            "id": "q1",
            "type": "single_choice",
            "options": [
                {"value": 0, "label": "low"},
                {"value": 1, "label": "mid"},
                {"value": 2, "label": "high"},
            ],
        },
        {
            "id": "q2",
            "type": "single_choice",
            "reverse_scored": True,
            "options": [
                {"value": 0, "label": "low"},
                {"value": 1, "label": "mid"},
                {"value": 2, "label": "high"},
            ],
        },
        {
            "id": "pets",
            "type": "multiple_choice",
            "options": [
                {"value": "cat", "label": "cat"},
                {"value": "dog", "label": "dog"},
                {"value": "none", "label": "none", "exclusive": True},
            ],
        },
        {
            "id": "cats",
            "type": "integer",
            "min": 1,
            "max": 20,
            "show_if": {"item": "pets", "includes": "cat"},
        },
        {"id": "hours", "type": "number", "min": 0, "max": 24, "required": False},
        {
            "id": "note",
            "type": "text",
            "max_length": 10,
            "possibly_identifying": True,
            "required": False,
        },
    ],
    "scoring": {
        "method": "sum",
        "items": ["q1", "q2"],
        "range": {"min": 0, "max": 4},
        "reverse_rule": "min_plus_max_minus_value",
        "primary": "total",
        "min_answered": 1,
        "prorate": {"rounding": "half_up", "source": "test"},
        "bands": [
            {"up_to": 1, "key": "low", "label": "Low"},
            {"up_to": 4, "key": "high", "label": "High"},
        ],
    },
    "safety": [{"flag": "alarm", "when": {"item": "q1", "equals": 2}}],
    "languages": {
        "en": {
            "translation_status": "validated",
            "source": "Test source",
            "title": "Mini",
            "instructions": "Answer.",
            "items": {
                "q1": "Q1",
                "q2": "Q2",
                "pets": "Pets?",
                "cats": "How many cats?",
                "hours": "Hours?",
                "note": "Note",
            },
            "options": {
                "low": "Low",
                "mid": "Mid",
                "high": "High",
                "cat": "Cat",
                "dog": "Dog",
                "none": "None",
            },
        },
        "de": {
            "translation_status": "study",
            "title": "Mini",
            "instructions": "Antworten.",
            "items": {
                "q1": "F1",
                "q2": "F2",
                "pets": "Haustiere?",
                "cats": "Wie viele Katzen?",
                "hours": "Stunden?",
                "note": "Notiz",
            },
            "options": {
                "low": "Niedrig",
                "mid": "Mittel",
                "high": "Hoch",
                "cat": "Katze",
                "dog": "Hund",
                "none": "Keine",
            },
        },
    },
}


@pytest.fixture
def minimal_doc() -> dict[str, Any]:
    """A fresh deep copy of MINIMAL to break in one place."""
    return copy.deepcopy(MINIMAL)


WriteInstrument = Callable[..., Path]


@pytest.fixture
def write_instrument(tmp_path: Path) -> WriteInstrument:
    """Write a document (dict, or raw YAML text) as <tmp>/<name>.yaml and return the path."""

    def write(document: dict[str, Any] | str, name: str = "mini") -> Path:
        path = tmp_path / f"{name}.yaml"
        text = (
            document
            if isinstance(document, str)
            else yaml.safe_dump(document, allow_unicode=True, sort_keys=False)
        )
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def mini(minimal_doc: dict[str, Any], write_instrument: WriteInstrument) -> Instrument:
    return load_instrument(write_instrument(minimal_doc))


@pytest.fixture(scope="session")
def shipped() -> dict[str, Instrument]:
    return load_instruments(INSTRUMENTS_DIR)

"""Participant-facing text from locale files (app/locales/<language>/<section>.yaml).

A flat lookup with English fallback is all the pages need; gettext's compile step would add a
build artefact for no gain here. Each file holds one top-level section (`join`, `consent`, ...)
so that a change to one part of the pages touches one file per language. A test checks that
every language has every English key.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from app.config import SUPPORTED_LANGUAGES

LOCALES_DIR = Path(__file__).parent / "locales"
LANGUAGE_NAMES = {"en": "English", "de": "Deutsch", "pt-BR": "Português (Brasil)",
                  "zh-CN": "简体中文", "ja": "日本語"}

Translator = Callable[..., str]


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = str(value)
    return flat


def load_tree(language: str) -> dict[str, Any]:
    """The language's sections merged from its files; a section defined twice is an error."""
    tree: dict[str, Any] = {}
    for path in sorted((LOCALES_DIR / language).glob("*.yaml")):
        part = yaml.safe_load(path.read_text("utf-8")) or {}
        if not isinstance(part, dict):
            raise ValueError(f"{path}: a locale file must be a mapping")
        twice = sorted(set(part) & set(tree))
        if twice:
            raise ValueError(f"{path}: section {twice[0]!r} is defined in another file too")
        tree.update(part)
    return tree


@lru_cache
def catalog(language: str) -> dict[str, str]:
    return _flatten(load_tree(language))


def negotiate(requested: str | None, accept_language: str | None = None) -> str:
    """Pick a supported UI language from an explicit choice or the Accept-Language header."""
    if requested in SUPPORTED_LANGUAGES:
        return requested  # type: ignore[return-value]
    for part in (accept_language or "").split(","):
        tag = part.split(";")[0].strip()
        for lang in SUPPORTED_LANGUAGES:
            if tag.lower() == lang.lower() or tag.lower().split("-")[0] == lang.lower():
                return lang
        if tag.lower().startswith("zh"):
            return "zh-CN"
        if tag.lower().startswith("pt"):
            return "pt-BR"
    return "en"


def translator(language: str) -> Translator:
    local, fallback = catalog(language), catalog("en")

    def t(key: str, **params: Any) -> str:
        text = local.get(key) or fallback.get(key)
        if text is None:
            return key
        return text.format(**params) if params else text

    return t

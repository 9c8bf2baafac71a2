"""Locale files: every language has exactly English's keys and placeholders, and the code only
asks for keys that exist.

The files are read straight from disk (not through ``i18n.catalog``'s cache), so a key another
change adds to en.yaml shows up here as "missing" in the other languages until it is translated.
"""

from __future__ import annotations

import re
import string
from functools import cache
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml

from app import i18n
from app.config import PROJECT_ROOT, SUPPORTED_LANGUAGES
from app.consent.models import WithdrawalScope
from app.consent.service import IDENTITY_METHOD
from app.notify.render import MESSAGE_KINDS
from app.participants.models import STATUSES
from app.surveys.answers import MESSAGE_KEYS
from app.web.staff_routes import NAV

APP_DIR = PROJECT_ROOT / "app"
TEMPLATES_DIR = APP_DIR / "web" / "templates"
OTHER_LANGUAGES = [lang for lang in SUPPORTED_LANGUAGES if lang != "en"]

# Prefixes of keys the code builds at run time (Jinja ``~``, Python ``+`` or f-strings). The scan
# below must find at least these, so a broken regex cannot make the key check pass vacuously.
KNOWN_DYNAMIC_PREFIXES = {
    "status.",  # home.html: t('status.' ~ participant.status)
    "copy.decision_",  # home.html, consent_copy.html, consent/copy.py
    "copy.identity_",  # consent_copy.html, consent/copy.py
    "consent.error_",  # consent.html: t('consent.error_' ~ code)
    "withdraw.confirm_",  # withdraw.html: t('withdraw.confirm_' ~ scope)
    "withdraw.explain_",  # consent/routes.py: t(f"withdraw.explain_{body.scope}")
    "withdrawn.note_",  # withdrawn.html: t('withdrawn.note_' ~ outcome)
    "answer.",  # survey.html: t('answer.' ~ e.code, **e.params)
    "email.",  # notify/render.py: t(f"email.{message.kind}.subject")
}

# t('key') / t("key") not preceded by a name character or a dot (so form.get('x') is no match);
# the character after the literal tells a whole key (`,` or `)`) from a prefix (`~` or `+`).
LITERAL_CALL = re.compile(r"""(?<![\w.])t\(\s*(['"])([^'"{}\s]+)\1\s*([,)~+])""")
FSTRING_CALL = re.compile(r"""(?<![\w.])t\(\s*f(['"])([^'"{]*)\{""")


def _locale_dir(language: str) -> Path:
    return i18n.LOCALES_DIR / language


@cache
def _raw(language: str) -> dict[str, Any]:
    folder = _locale_dir(language)
    files = sorted(folder.glob("*.yaml"))
    assert files, f"{folder} has no locale files"
    tree: dict[str, Any] = {}
    for path in files:
        part = yaml.safe_load(path.read_text("utf-8"))
        assert isinstance(part, dict), f"{path} is not a mapping"
        assert not set(part) & set(tree), f"{path} repeats a section of another file"
        tree.update(part)
    return tree


@pytest.mark.parametrize("language", OTHER_LANGUAGES)
def test_same_files_as_english(language: str) -> None:
    names = lambda lang: sorted(p.name for p in _locale_dir(lang).glob("*.yaml"))  # noqa: E731
    assert names(language) == names("en")


def _leaves(tree: dict[Any, Any], prefix: str = "") -> dict[str, Any]:
    """Flattened like i18n._flatten, but keeping the YAML types (a bare yes/no is a bool)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_leaves(value, name + "."))
        else:
            flat[name] = value
    return flat


def _catalog(language: str) -> dict[str, str]:
    return {key: str(value) for key, value in _leaves(_raw(language)).items()}


def _placeholders(text: str) -> set[str]:
    names = set()
    for _, field, _, _ in string.Formatter().parse(text):
        if field is not None:
            names.add(re.split(r"[.\[]", field, maxsplit=1)[0])
    return names


def _source_files() -> list[Path]:
    return sorted(TEMPLATES_DIR.rglob("*.html")) + sorted(APP_DIR.rglob("*.py"))


@cache
def _keys_in_code() -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(literal key -> files using it, dynamic prefix -> files using it)."""
    literal: dict[str, list[str]] = {}
    prefixes: dict[str, list[str]] = {}
    for path in _source_files():
        text = path.read_text("utf-8")
        where = str(path.relative_to(PROJECT_ROOT))
        for _, key, after in LITERAL_CALL.findall(text):
            target = prefixes if after in "~+" else literal
            target.setdefault(key, []).append(where)
        for _, prefix in FSTRING_CALL.findall(text):
            prefixes.setdefault(prefix, []).append(where)
    return literal, prefixes


# ---- the locale files themselves ------------------------------------------------------------


@pytest.mark.parametrize("language", SUPPORTED_LANGUAGES)
def test_every_value_is_a_nonempty_string_under_string_keys(language: str) -> None:
    """Catches an unquoted yes/no/on/off (YAML 1.1 booleans) as key or value, and empty texts
    (which i18n.translator would silently replace with English)."""

    def walk(tree: dict[Any, Any], prefix: str = "") -> list[str]:
        problems = []
        for key, value in tree.items():
            name = f"{prefix}{key}"
            if not isinstance(key, str):
                problems.append(f"{name!r}: key is {type(key).__name__}, quote it")
            if isinstance(value, dict):
                problems += walk(value, name + ".")
            elif not isinstance(value, str):
                problems.append(f"{name}: value is {type(value).__name__}, quote it")
            elif not value.strip():
                problems.append(f"{name}: empty")
        return problems

    assert walk(_raw(language)) == []


@pytest.mark.parametrize("language", OTHER_LANGUAGES)
def test_same_keys_as_english(language: str) -> None:
    english, local = set(_catalog("en")), set(_catalog(language))
    missing, extra = sorted(english - local), sorted(local - english)
    assert not missing and not extra, (
        f"{language}.yaml: missing {missing or 'none'}; extra {extra or 'none'}")


@pytest.mark.parametrize("language", OTHER_LANGUAGES)
def test_same_placeholders_as_english(language: str) -> None:
    english, local = _catalog("en"), _catalog(language)
    wrong = {
        key: {"en": sorted(_placeholders(text)), language: sorted(_placeholders(local[key]))}
        for key, text in english.items()
        if key in local and _placeholders(text) != _placeholders(local[key])
    }
    assert wrong == {}


@pytest.mark.parametrize("language", SUPPORTED_LANGUAGES)
def test_every_string_formats_with_its_placeholders(language: str) -> None:
    failures = {}
    for key, text in _catalog(language).items():
        params = {name: f"<{name}>" for name in _placeholders(text)}
        try:
            text.format(**params)
        except (KeyError, IndexError, ValueError, AttributeError) as exc:
            failures[key] = f"{type(exc).__name__}: {exc}"
    assert failures == {}


@pytest.mark.parametrize("language", OTHER_LANGUAGES)
def test_multiline_texts_stay_multiline_and_brand_stays(language: str) -> None:
    english, local = _catalog("en"), _catalog(language)
    problems = []
    for key, text in english.items():
        if key not in local:
            continue
        if ("\n" in text) != ("\n" in local[key]):
            problems.append(f"{key}: line breaks differ from English")
        if "wellpanel" in text and "wellpanel" not in local[key]:
            problems.append(f"{key}: brand name 'wellpanel' missing")
    assert problems == []


def test_i18n_flattening_agrees_with_this_test() -> None:
    for language in SUPPORTED_LANGUAGES:
        i18n.catalog.cache_clear()
        assert i18n.catalog(language) == _catalog(language)
    i18n.catalog.cache_clear()


# ---- language choice and lookup -------------------------------------------------------------


@pytest.mark.parametrize(("accept", "expected"), [
    ("pt-PT,pt;q=0.9", "pt-BR"),
    ("zh-TW", "zh-CN"),
    ("de-AT", "de"),
    ("fr", "en"),
])
def test_negotiate_from_accept_language(accept: str, expected: str) -> None:
    assert i18n.negotiate(None, accept) == expected


def test_negotiate_prefers_an_explicit_supported_choice() -> None:
    assert i18n.negotiate("zh-CN", "de-AT") == "zh-CN"
    assert i18n.negotiate("xx", "de-AT") == "de"


@pytest.mark.parametrize("language", SUPPORTED_LANGUAGES)
def test_unknown_key_returns_the_key(language: str) -> None:
    t = i18n.translator(language)
    assert t("no_such_section.no_such_key") == "no_such_section.no_such_key"
    assert t("no_such_section.no_such_key", n=1) == "no_such_section.no_such_key"


def test_missing_translation_falls_back_to_english(monkeypatch: pytest.MonkeyPatch) -> None:
    catalogs = {"en": {"only.english": "Hello {name}", "both": "Yes"},
                "de": {"both": "Ja"}}
    monkeypatch.setattr(i18n, "catalog", lambda language: catalogs.get(language, {}))
    t = i18n.translator("de")
    assert t("only.english", name="Ada") == "Hello Ada"
    assert t("both") == "Ja"


def test_translator_uses_the_locale_files() -> None:
    assert i18n.translator("de")("common.yes") == "Ja"
    assert i18n.translator("de")("home.status", status="x") == "Status: x"
    assert i18n.translator("en")("survey.progress", step=2, total=5) == "Questionnaire 2 of 5"


# ---- keys used by the code ------------------------------------------------------------------


def test_literal_keys_in_templates_and_code_exist_in_english() -> None:
    literal, _ = _keys_in_code()
    assert len(literal) > 50, f"key scan looks broken: only {sorted(literal)}"
    english = _catalog("en")
    unknown = {key: sorted(set(files)) for key, files in literal.items() if key not in english}
    assert unknown == {}


def test_dynamic_key_prefixes_have_english_keys() -> None:
    _, prefixes = _keys_in_code()
    not_found = sorted(KNOWN_DYNAMIC_PREFIXES - set(prefixes))
    assert not_found == [], f"the scan no longer finds these prefixes: {not_found}"
    english = _catalog("en")
    empty = {prefix: sorted(set(files)) for prefix, files in prefixes.items()
             if not any(key.startswith(prefix) for key in english)}
    assert empty == {}


def test_keys_for_known_dynamic_values_exist_in_english() -> None:
    """Where the values behind a dynamic key are enumerated in code, check each one."""
    english = _catalog("en")
    wanted = (
        [f"status.{status}" for status in STATUSES]
        + [f"copy.decision_{decision}" for decision in ("consent", "decline")]
        + [f"withdraw.{step}_{scope}" for scope in get_args(WithdrawalScope)
           for step in ("explain", "confirm")]
        + list(MESSAGE_KEYS.values())
        + [f"email.{kind}.{part}" for kind in MESSAGE_KINDS for part in ("subject", "body")]
        + [key for _, key, _ in NAV]
        + [f"withdrawn.note_{outcome}" for outcome in ("kept", "erased", "not_erased")]
        + ["staff.login_failed", "staff.pseudonym_unknown", "withdraw.error_scope",
           "join.error_screening", f"copy.identity_{IDENTITY_METHOD}"]
    )
    assert [key for key in wanted if key not in english] == []

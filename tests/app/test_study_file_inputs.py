"""Inputs from files (#13 part 6): the study file's and instruments' URLs are https:, http: or
tel: only (one check, app/core/urls.py, at `study load` and in the JSON Schema), consent
documents hold no other links, and YAML files are refused over the size, depth and alias limits
(app/core/safe_yaml.py), an alias bomb quickly and in little memory."""

from __future__ import annotations

import json
import re
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlmodel import select

from app.config import PROJECT_ROOT
from app.consent.document import render_markdown
from app.core import safe_yaml, urls
from app.studies import service as studies
from app.studies.models import Study
from app.surveys.instruments import InstrumentError, load_instrument
from tests.support.flows import STUDY
from tests.support.studyfiles import StudyCopy

SURVEYS = PROJECT_ROOT / "surveys"
SCHEMAS = [SURVEYS / "schema" / "study.schema.json", SURVEYS / "schema" / "instrument.schema.json"]

ALLOWED = ["https://988lifeline.org", "https://www.iasp.info/crisis-centres-helplines/",
           "http://example.org/page?x=1#top", "HTTPS://EXAMPLE.ORG", "tel:+498001110111",
           "tel:0800-111-0-111"]
REFUSED = ["javascript:alert(1)", "JaVaScRiPt:alert(1)", "java\tscript:alert(1)",
           " javascript:alert(1)", "javascript://example.org/%0aalert(1)",
           "data:text/html,<b>x</b>", "data:text/html;base64,PHNjcmlwdD4=", "vbscript:msgbox(1)",
           "file:///etc/passwd", "mailto:someone@example.org", "ftp://example.org/",
           "//evil.example/", "/relative/path", "https:evil.example", "https://",
           "https://trusted.example@evil.example/", "https://x.example/\"onmouseover=alert(1)",
           "https://x.example/<script>", "tel:alert(1)", "tel:", "", "https://[::1"]


# ---- one URL check ----------------------------------------------------------------------------

@pytest.mark.parametrize("url", ALLOWED)
def test_https_http_and_tel_addresses_may_be_links(url: str) -> None:
    assert urls.url_problem(url) is None
    assert urls.safe_href(url) == url


@pytest.mark.parametrize("url", REFUSED)
def test_every_other_address_is_refused_and_dropped_from_links(url: str) -> None:
    assert urls.url_problem(url) is not None
    assert urls.safe_href(url) == ""


def test_a_field_may_be_narrower_than_the_three_schemes() -> None:
    assert urls.url_problem("http://example.org", urls.HTTPS_ONLY) is not None
    assert urls.url_problem("tel:112", urls.WEB_SCHEMES) is not None
    assert urls.url_problem("https://example.org", urls.HTTPS_ONLY) is None


def _properties(schema: Any, path: str = "") -> list[tuple[str, str, Any]]:
    """(path, property name, property schema) of every named property in a schema."""
    found: list[tuple[str, str, Any]] = []
    if isinstance(schema, dict):
        for name, sub in (schema.get("properties") or {}).items():
            found.append((f"{path}/{name}", name, sub))
        for key, sub in schema.items():
            found += _properties(sub, f"{path}/{key}")
    elif isinstance(schema, list):
        for i, sub in enumerate(schema):
            found += _properties(sub, f"{path}/{i}")
    return found


def _url_defs(schema: dict[str, Any]) -> set[str]:
    return {f"#/$defs/{name}" for name, d in schema.get("$defs", {}).items()
            if d.get("format") in urls.FORMATS}


@pytest.mark.parametrize("schema_path", SCHEMAS, ids=lambda p: p.name)
def test_every_url_field_of_the_schemas_goes_through_the_one_check(schema_path: Path) -> None:
    """A property named like an address (url, *_url, href, link, website) must use a URL
    definition whose format is checked by app/core/urls.py; so must the crisis lines'
    sources. A new URL field that forgets it fails here."""
    schema = json.loads(schema_path.read_text("utf-8"))
    url_defs = _url_defs(schema)
    url_named = re.compile(r"(^|_)(url|urls|href|link|links|website|homepage)$")
    checked = 0
    for where, name, sub in _properties(schema):
        is_source = name == "source" and "crisis_resources" in where
        if url_named.search(name) or is_source:
            refs = {sub.get("$ref")}
            if isinstance(sub.get("items"), dict):
                refs.add(sub["items"].get("$ref"))
            assert refs & url_defs or sub.get("format") in urls.FORMATS, (
                f"{schema_path.name}: {where} is an address but not checked as one")
            checked += 1
    if schema_path.name == "study.schema.json":
        assert checked >= 4  # directory url and source, a country line's url and source
        for name in ("https_url", "source_url", "link_url"):
            assert schema["$defs"][name]["format"] in urls.FORMATS


@pytest.mark.parametrize("definition", ["https_url", "source_url", "link_url"])
def test_the_schema_patterns_refuse_the_bad_schemes_for_other_tools_too(definition: str) -> None:
    """Editors and other validators that ignore our formats still refuse script addresses."""
    schema = json.loads(SCHEMAS[0].read_text("utf-8"))["$defs"][definition]
    pattern = re.compile(schema["pattern"])
    for url in ["javascript:alert(1)", "data:text/html,x", "vbscript:x", "file:///etc/passwd",
                "//evil.example/", "https://x.example/\"onmouseover=x", " javascript:x"]:
        assert not pattern.search(url), (definition, url)
    assert pattern.search("https://example.org/x")


CRISIS = "crisis_resources"
URL_FIELDS = [
    ("crisis_resources/directory/0/url", lambda c: c["directory"][0]),
    ("crisis_resources/directory/1/source", lambda c: c["directory"][1]),
    ("crisis_resources/countries/jp/lines/0/url", lambda c: c["countries"]["jp"]["lines"][0]),
    ("crisis_resources/countries/br/lines/0/source",
     lambda c: c["countries"]["br"]["lines"][0]),
]


@pytest.mark.parametrize(("where", "entry"), URL_FIELDS, ids=[w for w, _ in URL_FIELDS])
@pytest.mark.parametrize("bad", ["javascript:alert(document.cookie)", "data:text/html,<b>x</b>",
                                 "https://988lifeline.org@evil.example/", "ftp://example.org/"])
def test_study_load_refuses_a_bad_address_in_any_url_field_naming_its_key_path(
        tmp_path, where, entry, bad) -> None:  # type: ignore[no-untyped-def]
    copy = StudyCopy(tmp_path)
    data = copy.read()
    entry(data[CRISIS])[where.rsplit("/", 1)[1]] = bad
    copy.write(data)
    with pytest.raises(studies.StudyLoadError) as refused:
        studies.read_study_file(copy.file, copy.surveys)
    message = str(refused.value)
    assert message.startswith(f"{copy.file}: {where}: {bad!r}: must "), message
    assert {d["path"] for d in refused.value.details} == {where}


def test_an_address_the_pattern_lets_through_is_still_refused_and_nothing_stored(
        tmp_path, session, loaded_study) -> None:  # type: ignore[no-untyped-def]
    """https://trusted@evil matches the schema's pattern; the format check refuses it."""
    copy = StudyCopy(tmp_path)
    data = copy.read()
    data[CRISIS]["countries"]["us"]["lines"][0]["url"] = "https://988lifeline.org@evil.example/"
    copy.write(data)
    study = session.exec(select(Study).where(Study.key == STUDY)).one()
    before = studies.protocol_count(session, study.id)  # type: ignore[arg-type]
    with pytest.raises(studies.StudyLoadError) as refused:
        studies.load_study(session, copy.file, copy.surveys, actor="test")
    assert str(refused.value) == (
        f"{copy.file}: crisis_resources/countries/us/lines/0/url: "
        "'https://988lifeline.org@evil.example/': must not contain a user name or password")
    session.rollback()
    assert studies.protocol_count(session, study.id) == before  # type: ignore[arg-type]


def test_the_shipped_study_passes_the_url_check() -> None:
    data = studies.read_study_file(SURVEYS / "studies" / f"{STUDY}.yaml", SURVEYS)
    lines = [*data[CRISIS]["directory"],
             *(line for c in data[CRISIS]["countries"].values() for line in c["lines"])]
    assert len(lines) > 28
    for line in lines:
        assert urls.url_problem(line.get("url", "https://x.example"), urls.HTTPS_ONLY) is None
        assert urls.url_problem(line["source"], urls.WEB_SCHEMES) is None


# ---- links in consent documents ---------------------------------------------------------------

def test_a_consent_document_link_with_another_scheme_is_refused_at_load(
        tmp_path, session, loaded_study) -> None:  # type: ignore[no-untyped-def]
    copy = StudyCopy(tmp_path)
    version = copy.read()["consent"]["current"]
    doc = copy.consent_doc(version, "de")
    doc.write_text(doc.read_text("utf-8") + "\n\n[Ethikkommission](javascript:alert(1)) und "
                   "<vbscript:msgbox(1)>\n", "utf-8")
    with pytest.raises(studies.StudyLoadError) as refused:
        studies.load_study(session, copy.file, copy.surveys, actor="test")
    message = str(refused.value)
    assert str(doc) in message and "'javascript:alert(1)'" in message
    assert [d["problem"] for d in refused.value.details if "vbscript" in d["problem"]]
    session.rollback()


def test_consent_markdown_renders_only_allowed_links() -> None:
    html = render_markdown("[a](javascript:alert(1)) [b](https://ethics.example/) "
                           "[c](tel:+4930123) [d](#rights) [e](/help) ![f](data:image/png;base64,x)"
                           " [g](mailto:x@example.org)")
    hrefs = re.findall(r'(?:href|src)="([^"]*)"', html)
    assert hrefs == ["https://ethics.example/", "tel:+4930123", "#rights", "/help"]
    assert "javascript" not in hrefs and "data:" not in html.replace("](data:", "")


# ---- YAML limits ------------------------------------------------------------------------------

def _bomb(levels: int = 9, width: int = 10) -> str:
    """A "billion laughs": `levels` lists of `width` aliases to the list before."""
    rows = ['  - &l0 [' + ", ".join(['"lol"'] * width) + "]"]
    rows += [f"  - &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]" for i in range(1, levels)]
    return "\n".join(rows) + "\n"


def _with_events(text: str, block: str) -> str:
    """The study file with its events replaced by `block` (a list, as events are)."""
    replaced, n = re.subn(r"(?m)^events:\n(?:[ \t].*\n|\n)*?(?=^\S)", f"events:\n{block}",
                          text, count=1)
    assert n == 1
    return replaced


def test_an_alias_bomb_in_a_study_file_is_refused_quickly_in_little_memory(
        tmp_path) -> None:  # type: ignore[no-untyped-def]
    """10^9 strings once expanded: without the limit the schema check quoting it needs about
    15 bytes a string (measured: 15 MB for 10^6, 10x per level), i.e. ~15 GB."""
    copy = StudyCopy(tmp_path)
    copy.file.write_text(_with_events(copy.file.read_text("utf-8"), _bomb()), "utf-8")
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(studies.StudyLoadError) as refused:
            studies.read_study_file(copy.file, copy.surveys)
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(refused.value)
    assert message.startswith(f"{copy.file}: ")
    assert f"more than {safe_yaml.MAX_NODES:,} values (the limit" in message
    assert peak < 64 * 1024 * 1024, f"peak {peak / 1e6:.0f} MB"
    assert elapsed < 20, f"{elapsed:.1f} s"


def test_an_alias_bomb_in_an_instrument_is_refused_naming_the_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    copy = StudyCopy(tmp_path)
    file = copy.surveys / "instruments" / "who5.yaml"
    file.write_text(file.read_text("utf-8") + "\nbomb:\n" + _bomb(), "utf-8")
    tracemalloc.start()
    try:
        with pytest.raises(InstrumentError) as refused:
            load_instrument(file)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(refused.value).startswith(f"{file}: (file): with its aliases expanded")
    assert peak < 64 * 1024 * 1024
    # and through study load, which names the instrument file
    with pytest.raises(studies.StudyLoadError, match=re.escape(str(file))):
        studies.resolve_instruments(copy.file, copy.read(), copy.surveys)


def test_too_many_aliases_are_refused_but_a_few_are_fine(tmp_path) -> None:  # type: ignore[no-untyped-def]
    many = "x: &a 1\nys:\n" + "".join("  - *a\n" for _ in range(safe_yaml.MAX_ALIASES + 1))
    with pytest.raises(safe_yaml.YamlLimitError, match=f"more than {safe_yaml.MAX_ALIASES} "):
        safe_yaml.load(many)
    few = "x: &a [1, 2]\nys:\n" + "".join("  - *a\n" for _ in range(safe_yaml.MAX_ALIASES))
    assert len(safe_yaml.load(few)["ys"]) == safe_yaml.MAX_ALIASES
    # the shipped instruments share answer options through aliases: they still load
    phq9 = load_instrument(SURVEYS / "instruments" / "phq9.yaml")
    assert phq9.items[8].options == phq9.items[0].options and len(phq9.items[0].options) == 4


def test_a_study_file_written_with_shared_parts_still_loads(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """yaml.safe_dump writes a part used twice as an anchor and an alias."""
    copy = StudyCopy(tmp_path)
    data = copy.read()
    data["description"] = data["title"]  # the same object twice
    copy.write(data)
    assert "*id001" in copy.file.read_text("utf-8")
    assert studies.read_study_file(copy.file, copy.surveys)["description"] == data["title"]


def test_nesting_deeper_than_the_limit_is_refused_with_its_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    copy = StudyCopy(tmp_path)
    depth = safe_yaml.MAX_DEPTH + 1
    deep = "  - " + "[" * depth + "1" + "]" * depth + "\n"
    copy.file.write_text(_with_events(copy.file.read_text("utf-8"), deep), "utf-8")
    with pytest.raises(studies.StudyLoadError) as refused:
        studies.read_study_file(copy.file, copy.surveys)
    assert re.match(rf"{re.escape(str(copy.file))}: line \d+: the document nests deeper than "
                    rf"{safe_yaml.MAX_DEPTH} levels \(the limit\)", str(refused.value))
    fine = "  - " + "[" * 10 + "1" + "]" * 10 + "\n"  # deep, but within the limit: the schema
    copy.file.write_text(_with_events(copy.file.read_text("utf-8"), fine), "utf-8")
    with pytest.raises(studies.StudyLoadError, match="events/0: .* is not of type 'object'"):
        studies.read_study_file(copy.file, copy.surveys)


@pytest.mark.parametrize("kind", ["study", "instrument"])
def test_a_file_larger_than_the_limit_is_refused_before_it_is_read(tmp_path, kind) -> None:  # type: ignore[no-untyped-def]
    copy = StudyCopy(tmp_path)
    file = copy.file if kind == "study" else copy.surveys / "instruments" / "gad7.yaml"
    text = file.read_text("utf-8")
    padding = "# " + "x" * 98 + "\n"
    file.write_text(text + padding * (safe_yaml.MAX_BYTES // len(padding) + 1), "utf-8")
    assert file.stat().st_size > safe_yaml.MAX_BYTES
    if kind == "study":
        with pytest.raises(studies.StudyLoadError) as refused:
            studies.read_study_file(file, copy.surveys)
        assert str(refused.value) == (f"{file}: the study file is larger than the limit of "
                                      "2 MB")
    else:
        with pytest.raises(InstrumentError) as refused:
            load_instrument(file)
        assert str(refused.value) == (f"{file}: (file): the instrument file is larger than the "
                                      "limit of 2 MB")
    file.write_text(text, "utf-8")  # the same content within the limit is fine
    if kind == "study":
        assert studies.read_study_file(file, copy.surveys)["key"] == STUDY
    else:
        assert load_instrument(file).key == "gad7"


def test_the_limited_loader_builds_the_same_data_as_the_safe_loader() -> None:
    for file in [SURVEYS / "studies" / f"{STUDY}.yaml",
                 *sorted((SURVEYS / "instruments").glob("*.yaml"))]:
        text = file.read_text("utf-8")
        assert safe_yaml.load(text) == yaml.safe_load(text), file.name

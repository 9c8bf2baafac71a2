"""What a study file's consent block must hold beyond its JSON Schema.

- Language versions: a version's `languages` is either a list (every listed document is covered
  by the version's approval) or a mapping language -> {status, approved}, with exactly one
  `original`, which the committee approved.
- Required elements: `consent.required_elements` lists the elements of informed consent the
  study follows (each with the rules it comes from). A version's `sections` maps every element to
  a section id ({#id} above a heading, the same in every language); the current version must
  have such a map. Every document of a version with a map must hold each mapped section, not
  empty.
- Links in the documents: https:, http: and tel: addresses, or paths on this site, only.

Each function returns problems as (place, message) pairs, so the loader can name all of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.consent.document import allowed_link, duplicate_ids, links, sections

Problem = tuple[str, str]


def language_problems(study: dict[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    for i, version in enumerate(study["consent"]["versions"]):
        languages = version["languages"]
        if not isinstance(languages, dict):
            continue
        originals = [lang for lang, spec in languages.items() if spec["status"] == "original"]
        place = f"consent/versions/{i}/languages"
        if len(originals) != 1:
            problems.append((place, "exactly one language must have status original "
                                    f"(found {len(originals)})"))
        elif not languages[originals[0]]["approved"]:
            problems.append((f"{place}/{originals[0]}/approved",
                             "the original must be the text the ethics committee approved"))
    return problems


def element_map_problems(study: dict[str, Any]) -> list[Problem]:
    consent = study["consent"]
    elements = [e["id"] for e in consent.get("required_elements", [])]
    problems: list[Problem] = []
    if len(set(elements)) != len(elements):
        problems.append(("consent/required_elements", "an element is listed twice"))
    for i, version in enumerate(consent["versions"]):
        place = f"consent/versions/{i}/sections"
        mapped = version.get("sections")
        if mapped is None:
            if elements and version["version"] == consent["current"]:
                problems.append((place, f"the current version {version['version']} must map "
                                        "every required element to a section"))
            continue
        for element in elements:
            if element not in mapped:
                problems.append((place, f"required element {element!r} is not mapped to a "
                                        "section"))
        for element in sorted(set(mapped) - set(elements)):
            problems.append((f"{place}/{element}",
                             f"{element!r} is not one of consent/required_elements"))
    return problems


def document_problems(
    study: dict[str, Any], documents: dict[str, dict[str, str]], surveys_dir: Path
) -> list[Problem]:
    """Every mapped section present and not empty in every language's document."""
    rules = {e["id"]: ", ".join(e["regulations"])
             for e in study["consent"].get("required_elements", [])}
    problems: list[Problem] = []
    for version in study["consent"]["versions"]:
        mapped: dict[str, str] = version.get("sections") or {}
        if not mapped:
            continue
        for lang, text in documents[version["version"]].items():
            file = str(surveys_dir / "consent" / study["key"] / version["version"] / f"{lang}.md")
            where = f"consent version {version['version']}, language {lang}"
            for twice in duplicate_ids(text):
                problems.append((file, f"{where}: section id {{#{twice}}} is used twice"))
            found = sections(text)
            for element, section_id in mapped.items():
                section = found.get(section_id)
                if section is not None and section.text:
                    continue
                state = "missing" if section is None else "empty"
                problems.append((file, f"{where}: required element {element!r} "
                                       f"({rules.get(element, 'no rule given')}) needs section "
                                       f"{{#{section_id}}}, which is {state}"))
    return problems


def link_problems(
    study: dict[str, Any], documents: dict[str, dict[str, str]], surveys_dir: Path
) -> list[Problem]:
    """Every link in every document is https:, http:, tel:, or a place on this site."""
    problems: list[Problem] = []
    for version, texts in documents.items():
        for lang, text in texts.items():
            file = str(surveys_dir / "consent" / study["key"] / version / f"{lang}.md")
            problems += [(file, f"consent version {version}, language {lang}: link {href!r} "
                                "must be an https://, http:// or tel: address or a path on this "
                                "site (javascript:, data: and other schemes are refused)")
                         for href in links(text) if not allowed_link(href)]
    return problems

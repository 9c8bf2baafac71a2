"""Loading study protocol files and reading the current protocol of a study.

A study file is validated against surveys/schema/study.schema.json, then stored as a protocol
version together with the hashes of everything it references. Loading the same content twice is
a no-op; changed content becomes a new version and the old one is kept.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from sqlmodel import Session, col, func, select

from app.audit import service as audit
from app.consent import service as consent
from app.core import safe_yaml, urls
from app.core.errors import AppError, NotFound
from app.core.security import sha256_json, sha256_text
from app.db import utcnow
from app.studies import consent_checks, crisis
from app.studies import diff as study_diff
from app.studies.diff import StudyDiff
from app.studies.models import LoadResult, ProtocolVersion, Study


class StudyLoadError(AppError):
    status_code = 422
    code = "invalid_protocol"


@lru_cache
def _schema(surveys_dir: str) -> dict[str, Any]:
    return json.loads((Path(surveys_dir) / "schema" / "study.schema.json").read_text("utf-8"))


def read_study_file(path: Path, surveys_dir: Path) -> dict[str, Any]:
    """Parse and validate a study file; errors name the file, the place in it and the reason.
    Size, nesting and aliases are limited (app/core/safe_yaml.py) before anything is built."""
    try:
        data = safe_yaml.load(safe_yaml.read_text(path, "study file"))
    except safe_yaml.YamlLimitError as exc:
        raise StudyLoadError(f"{path}: {exc}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise StudyLoadError(f"{path}: cannot read the study file: {exc}") from exc
    validator = jsonschema.Draft202012Validator(_schema(str(surveys_dir)),
                                                format_checker=urls.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "(top level)"
        raise StudyLoadError(
            f"{path}: {where}: {_problem(first)}",
            details=[{"path": "/".join(str(p) for p in e.absolute_path), "problem": _problem(e)}
                     for e in errors[:20]],
        )
    _check_semantics(path, data)
    return data


def _problem(error: jsonschema.ValidationError) -> str:
    """The schema's own wording (errorMessage) for a value of the wrong form (pattern, anyOf);
    jsonschema's for the rest (a missing key says which)."""
    if error.validator == "format" and error.validator_value in urls.FORMATS:
        return urls.format_problem(error.validator_value, error.instance)
    wording = error.schema.get("errorMessage") if isinstance(error.schema, dict) else None
    if not wording or error.validator not in ("pattern", "anyOf", "oneOf"):
        return error.message
    return wording if isinstance(error.instance, dict) else f"{error.instance!r}: {wording}"


def _check_semantics(path: Path, data: dict[str, Any]) -> None:
    langs = set(data["languages"])
    if data["default_language"] not in langs:
        raise StudyLoadError(f"{path}: default_language: {data['default_language']!r} "
                             "is not one of the study's languages")
    versions = [v["version"] for v in data["consent"]["versions"]]
    if len(set(versions)) != len(versions):
        raise StudyLoadError(f"{path}: consent/versions: a version is listed twice")
    if data["consent"]["current"] not in versions:
        raise StudyLoadError(f"{path}: consent/current: {data['consent']['current']!r} "
                             "is not among consent/versions")
    for i, version in enumerate(data["consent"]["versions"]):
        for j, statement in enumerate(version["statements"]):
            missing = set(version["languages"]) - set(statement["text"])
            if missing:
                raise StudyLoadError(
                    f"{path}: consent/versions/{i}/statements/{j}/text: "
                    f"no text for {', '.join(sorted(missing))}")
        missing = set(version["languages"]) - set(version["signature_meaning"])
        if missing:
            raise StudyLoadError(f"{path}: consent/versions/{i}/signature_meaning: "
                                 f"no text for {', '.join(sorted(missing))}")
    _raise_first(path, consent_checks.language_problems(data)
                 + consent_checks.element_map_problems(data))
    from app.safety import config as safety_config

    _raise_first(path, safety_config.problems(data))


def _raise_first(path: Path, problems: list[tuple[str, str]]) -> None:
    """Refuse the file naming its first problem; the details list them all."""
    if problems:
        where, problem = problems[0]
        raise StudyLoadError(f"{path}: {where}: {problem}",
                             details=[{"path": w, "problem": p} for w, p in problems[:20]])


def read_consent_documents(
    study: dict[str, Any], surveys_dir: Path
) -> dict[str, dict[str, str]]:
    """version -> language -> Markdown text, for every consent version the file lists."""
    documents: dict[str, dict[str, str]] = {}
    for version in study["consent"]["versions"]:
        folder = surveys_dir / "consent" / study["key"] / version["version"]
        documents[version["version"]] = {}
        for lang in version["languages"]:
            doc = folder / f"{lang}.md"
            if not doc.is_file():
                raise StudyLoadError(f"{doc}: consent document missing for version "
                                     f"{version['version']} in language {lang}")
            documents[version["version"]][lang] = doc.read_text("utf-8")
    return documents


def resolve_instruments(
    path: Path, study: dict[str, Any], surveys_dir: Path
) -> dict[str, dict[str, Any]]:
    """Validate every instrument the study uses and pin its definition in the protocol."""
    from app.surveys.instruments import InstrumentError, acceptable_languages, load_instrument

    pinned: dict[str, dict[str, Any]] = {}
    accept = study.get("accept_translations") or {lang: ["validated"]
                                                  for lang in study["languages"]}
    for key in study["instruments"]:
        file = surveys_dir / "instruments" / f"{key}.yaml"
        if not file.is_file():
            raise StudyLoadError(f"{path}: instruments: unknown instrument {key!r} "
                                 f"(no file {file})")
        try:
            instrument = load_instrument(file)
            languages = acceptable_languages(instrument, accept)
        except (InstrumentError, ValueError) as exc:
            raise StudyLoadError(str(exc)) from exc
        if study["default_language"] not in languages:
            raise StudyLoadError(
                f"{file}: languages: the study's default language {study['default_language']} "
                f"is not available with an accepted translation status")
        pinned[key] = {"version": instrument.version, "sha256": instrument.content_hash(),
                       "languages": languages,
                       "definition": instrument.model_dump(mode="json", exclude_unset=True)}
    _check_schedule(path, study, pinned)
    _check_feedback(path, study, pinned)
    return pinned


def _check_feedback(path: Path, study: dict[str, Any], pinned: dict[str, dict[str, Any]]) -> None:
    """participant_feedback names scores its instruments really define."""
    from app.surveys import feedback

    found = feedback.problems(study, pinned)
    if found:
        raise StudyLoadError(f"{path}: {found[0]}",
                             details=[{"path": p.split(":")[0], "problem": p} for p in found])


def _check_schedule(path: Path, study: dict[str, Any], pinned: dict[str, dict[str, Any]]) -> None:
    """Cadences, windows and recall periods, checked before anything is stored."""
    from app.scheduling.schedule import ScheduleError, parse_schedule

    recall = {key: p["definition"]["recall_period_days"] for key, p in pinned.items()}
    try:
        parse_schedule(study["schedule"], recall)
    except ScheduleError as exc:
        raise StudyLoadError(f"{path}: {exc}") from exc


def load_study(
    session: Session, path: Path, surveys_dir: Path, *, actor: str, now: datetime | None = None
) -> LoadResult:
    """Load (or re-load) a study file in one transaction."""
    now = now or utcnow()
    data, documents, content = _checked_content(path, surveys_dir)
    digest = sha256_json(content)

    study = session.exec(select(Study).where(Study.key == data["key"])).first()
    if study is None:
        study = Study(key=data["key"], created_at=now)
        session.add(study)
        session.flush()
    assert study.id is not None

    new_versions = consent.publish_versions(session, study.id, data, documents, actor=actor,
                                            now=now)
    latest = latest_protocol(session, study.id)
    if latest is not None and latest.sha256 == digest:
        session.commit()
        return LoadResult(study_key=study.key, protocol_version=latest.version, created=False,
                          new_consent_versions=new_versions)

    version = 1 if latest is None else latest.version + 1
    protocol = ProtocolVersion(study_id=study.id, version=version, sha256=digest,
                               consent_current=data["consent"]["current"], content=content,
                               loaded_at=now, loaded_by=actor)
    session.add(protocol)
    audit.append(session, actor=actor, action="protocol.load", target=f"study:{study.key}",
                 details={"version": version, "sha256": digest, "file": path.name},
                 old_value={"version": latest.version, "sha256": latest.sha256} if latest else None,
                 new_value={"version": version, "sha256": digest}, now=now)
    if latest is not None:  # an amendment: re-plan what has not been sent yet
        from app.scheduling.amendments import apply_amendment

        session.flush()
        apply_amendment(session, study, protocol, now)
    session.commit()
    return LoadResult(study_key=study.key, protocol_version=version, created=True,
                      new_consent_versions=new_versions)


def _checked_content(path: Path, surveys_dir: Path
                     ) -> tuple[dict[str, Any], dict[str, dict[str, str]], dict[str, Any]]:
    """Read and check a study file with everything it references: (study, consent documents,
    the protocol content to store). Raises StudyLoadError before anything is stored."""
    data = read_study_file(path, surveys_dir)
    documents = read_consent_documents(data, surveys_dir)
    _raise_first(path, consent_checks.document_problems(data, documents, surveys_dir)
                 + consent_checks.link_problems(data, documents, surveys_dir))
    content = {
        "study": data,
        "consent_documents": {v: {lang: sha256_text(text) for lang, text in docs.items()}
                              for v, docs in documents.items()},
        "instruments": resolve_instruments(path, data, surveys_dir),
    }
    crisis_problem = crisis.problem(data, content["instruments"])
    if crisis_problem:
        raise StudyLoadError(f"{path}: {crisis_problem}")
    return data, documents, content


def preview_load(session: Session, path: Path, surveys_dir: Path) -> StudyDiff:
    """What loading `path` would change, checked exactly as a load checks it; writes nothing."""
    from app.scheduling.amendments import participants_to_replan

    _data, _documents, content = _checked_content(path, surveys_dir)
    key = content["study"]["key"]
    study = session.exec(select(Study).where(Study.key == key)).first()
    latest = latest_protocol(session, study.id) if study and study.id is not None else None
    old = latest.content if latest is not None else None
    unchanged = latest is not None and latest.sha256 == sha256_json(content)
    return StudyDiff(
        study_key=key, from_version=latest.version if latest else None, unchanged=unchanged,
        changes=[] if unchanged else study_diff.compare(old, content),
        new_consent_versions=study_diff.new_consent_versions(old, content),
        reconsent_required=study_diff.reconsent_required(old, content),
        replanned_participants=(participants_to_replan(session, study.id)
                                if latest is not None and not unchanged and study else 0))


def protocol_history(session: Session, key: str) -> list[tuple[ProtocolVersion, StudyDiff]]:
    """Every loaded version of a study, newest first, each with what it changed."""
    study = get_study(session, key)
    versions = session.exec(select(ProtocolVersion).where(ProtocolVersion.study_id == study.id)
                            .order_by(col(ProtocolVersion.version))).all()
    history = []
    previous: ProtocolVersion | None = None
    for version in versions:
        old = previous.content if previous else None
        history.append((version, StudyDiff(
            study_key=key, from_version=previous.version if previous else None,
            unchanged=False, changes=study_diff.compare(old, version.content),
            new_consent_versions=study_diff.new_consent_versions(old, version.content),
            reconsent_required=study_diff.reconsent_required(old, version.content))))
        previous = version
    return history[::-1]


def latest_protocol(session: Session, study_id: int) -> ProtocolVersion | None:
    return session.exec(
        select(ProtocolVersion).where(ProtocolVersion.study_id == study_id)
        .order_by(col(ProtocolVersion.version).desc()).limit(1)
    ).first()


def current_consent_version_name(session: Session, study_id: int) -> str:
    name = session.exec(
        select(ProtocolVersion.consent_current).where(ProtocolVersion.study_id == study_id)
        .order_by(col(ProtocolVersion.version).desc()).limit(1)
    ).first()
    if name is None:
        raise NotFound("This study has no protocol loaded yet.")
    return name


def study_keys(session: Session) -> list[str]:
    return list(session.exec(select(Study.key).order_by(Study.key)).all())


def get_study(session: Session, key: str) -> Study:
    study = session.exec(select(Study).where(Study.key == key)).first()
    if study is None:
        raise NotFound(f"There is no study called {key!r}.")
    return study


def current_protocol(session: Session, study_id: int) -> dict[str, Any]:
    """The study file content of the newest protocol version."""
    latest = latest_protocol(session, study_id)
    if latest is None:
        raise NotFound("This study has no protocol loaded yet.")
    return latest.content["study"]


def protocol_at(session: Session, study_id: int, moment: datetime) -> dict[str, Any]:
    """The study file content in force at `moment`: the newest version loaded by then (the
    first version if `moment` precedes every load)."""
    loads = session.exec(select(ProtocolVersion.version, ProtocolVersion.loaded_at)
                         .where(ProtocolVersion.study_id == study_id)
                         .order_by(col(ProtocolVersion.version))).all()
    if not loads:
        raise NotFound("This study has no protocol loaded yet.")
    in_force = [version for version, loaded_at in loads if loaded_at <= moment] or [loads[0][0]]
    return session.exec(select(ProtocolVersion.content).where(
        ProtocolVersion.study_id == study_id, ProtocolVersion.version == in_force[-1])).one()[
        "study"]


def protocol_count(session: Session, study_id: int) -> int:
    return session.exec(
        select(func.count()).select_from(ProtocolVersion)
        .where(ProtocolVersion.study_id == study_id)
    ).one()


def localized(texts: dict[str, str], language: str, fallback: str = "en") -> str:
    return texts.get(language) or texts.get(fallback) or next(iter(texts.values()))

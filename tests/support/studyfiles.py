"""Editable copies of the shipped study and consent files, for amendment tests."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from app.config import PROJECT_ROOT

STUDY_KEY = "keep4o-panel"


class StudyCopy:
    def __init__(self, root: Path) -> None:
        self.surveys = root / "surveys"
        shutil.copytree(PROJECT_ROOT / "surveys", self.surveys)
        self.file = self.surveys / "studies" / f"{STUDY_KEY}.yaml"

    def read(self) -> dict[str, Any]:
        return yaml.safe_load(self.file.read_text("utf-8"))

    def write(self, data: dict[str, Any]) -> None:
        self.file.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), "utf-8")

    def consent_doc(self, version: str, lang: str) -> Path:
        return self.surveys / "consent" / STUDY_KEY / version / f"{lang}.md"

    def add_consent_version(self, version: str, *, requires_reconsent: bool,
                            languages: tuple[str, ...] = ("en",)) -> None:
        data = self.read()
        base = dict(data["consent"]["versions"][-1])
        new = dict(base)
        new.update(version=version, requires_reconsent=requires_reconsent,
                    approval_ref=f"IRB amendment {version}", languages=list(languages))
        data["consent"]["versions"].append(new)
        data["consent"]["current"] = version
        for lang in languages:
            # the base version's text (so it keeps every section the elements map to), amended
            source = self.consent_doc(base["version"], lang)
            text = source.read_text("utf-8") if source.is_file() else ""
            doc = self.consent_doc(version, lang)
            doc.parent.mkdir(parents=True, exist_ok=True)
            doc.write_text(f"# Consent version {version}\n\nAmended text for {lang}.\n\n{text}",
                           "utf-8")
        self.write(data)

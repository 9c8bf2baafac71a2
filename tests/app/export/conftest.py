"""Fixtures for the export tests: a loaded study and a populated synthetic panel, on both
databases (the ``engine`` fixture of tests/conftest.py is parametrized on SQLite/PostgreSQL)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
import typer
from sqlalchemy import Engine
from sqlmodel import Session

from app.config import get_settings
from app.export.cli import register
from app.studies import service as studies
from tests.app.export.seed import START, Person, Seeder
from tests.conftest import STUDY_FILE, SURVEYS_DIR

FREE_TEXT = "my friend Zebulon Quark's homemade bot"


@dataclass
class Population:
    seeder: Seeder
    people: list[Person]
    stop_contact: Person
    delete_data: Person
    never_consented: Person
    free_text: Person
    key_file: Path
    extra: dict[str, Person] = field(default_factory=dict)

    @property
    def exported(self) -> list[Person]:
        return [p for p in self.people if p is not self.delete_data
                and p is not self.never_consented]


@pytest.fixture
def study(engine: Engine) -> str:
    with Session(engine) as s:
        studies.load_study(s, STUDY_FILE, SURVEYS_DIR, actor="test")
    return "keep4o-panel"


@pytest.fixture
def seeder(engine: Engine, study: str) -> Seeder:
    return Seeder(engine)


def populate(seeder: Seeder, tmp_path: Path, n: int = 60, waves: int = 4,
             seed: int = 7) -> Population:
    rng = random.Random(seed)
    people = seeder.populate(n, waves, seed=seed)
    stop = seeder.participant(rng, enrolled_at=START + timedelta(days=3), waves=waves,
                              withdraw=("stop_contact", 1), answer_after_withdrawal=True,
                              miss=0.0)
    delete = seeder.participant(rng, enrolled_at=START + timedelta(days=4), waves=waves,
                                withdraw=("delete_data", 1), miss=0.0)
    never = seeder.participant(rng, enrolled_at=START + timedelta(days=5), waves=2,
                               consented=False)
    free = seeder.participant(rng, enrolled_at=START + timedelta(days=6), waves=2,
                              free_text=FREE_TEXT, miss=0.0)
    seeder.flush()
    key_file = tmp_path / "linkage.key"
    key_file.write_text("0123456789abcdef0123456789abcdef\n", "utf-8")
    return Population(seeder, [*people, stop, delete, never, free], stop, delete, never, free,
                      key_file)


@pytest.fixture
def population(seeder: Seeder, tmp_path: Path) -> Population:
    return populate(seeder, tmp_path)


@pytest.fixture
def cli(db_url, monkeypatch):  # type: ignore[no-untyped-def]
    """The `wellpanel` command with only `export`, on this test's database."""
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """wellpanel"""

    register(app)
    monkeypatch.setenv("WELLPANEL_DATABASE_URL", db_url)
    get_settings.cache_clear()
    yield app
    get_settings.cache_clear()

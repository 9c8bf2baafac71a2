"""Shared fixtures: every database test runs on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import io
import logging
import os
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlmodel import Session

from app import migrate
from app.config import PROJECT_ROOT, Settings
from app.db import make_engine
from app.logging_setup import configure_logging
from app.main import create_app
from app.notify.dispatch import wait_all_idle
from app.privileges import grant_app_role
from app.studies import service as studies
from tests.support.clock import Clock
from tests.support.dbview import observer_engine
from tests.support.pg import APP_ROLE, PostgresServer
from tests.support.smtp import SMTPServer

STUDY_FILE = PROJECT_ROOT / "surveys" / "studies" / "keep4o-panel.yaml"
SURVEYS_DIR = PROJECT_ROOT / "surveys"
BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    server = PostgresServer.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pg_template(pg_server: PostgresServer) -> str:
    name = pg_server.create_database()
    migrate.upgrade(pg_server.url(name))
    _grant_app_role(pg_server.url(name))
    pg_server.execute(f"ALTER DATABASE {name} WITH IS_TEMPLATE true")
    return name


def _grant_app_role(url: str) -> None:
    """The app role's privileges, carried into every database cloned from the template."""
    engine = make_engine(url)
    with engine.begin() as conn:
        grant_app_role(conn, APP_ROLE)
    engine.dispose()


@pytest.fixture(scope="session")
def pg_loaded_template(pg_server: PostgresServer, pg_template: str) -> str:
    """The migrated template with the default study loaded (most tests start from it)."""
    name = pg_server.create_database(template=pg_template)
    _load_default_study(pg_server.url(name))
    pg_server.execute(f"ALTER DATABASE {name} WITH IS_TEMPLATE true")
    return name


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    migrate.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def sqlite_loaded_template(sqlite_template: Path) -> Path:
    path = sqlite_template.with_name("loaded.db")
    _copy_sqlite(sqlite_template, path)
    _load_default_study(f"sqlite:///{path}")
    return path


def _copy_sqlite(source: Path, target: Path) -> None:
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)  # includes whatever is still in the source's WAL


def _load_default_study(url: str) -> None:
    """Load the default study once into a template: a load reads and checks every instrument
    and consent document, too slow to repeat for each of a thousand tests."""
    engine = observer_engine(url)
    with Session(engine) as s:
        studies.load_study(s, STUDY_FILE, SURVEYS_DIR, actor="test")
    engine.dispose()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def db_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated database of the test's backend: empty, or with the default study loaded when
    the test asks for `loaded_study` (directly or through another fixture)."""
    loaded = "loaded_study" in request.fixturenames
    if backend == "sqlite":
        template = request.getfixturevalue(
            "sqlite_loaded_template" if loaded else "sqlite_template")
        path = tmp_path / "test.db"
        _copy_sqlite(template, path)
        yield f"sqlite:///{path}"
        return
    server: PostgresServer = request.getfixturevalue("pg_server")
    name = server.create_database(template=request.getfixturevalue(
        "pg_loaded_template" if loaded else "pg_template"))
    yield server.url(name)
    server.drop_database(name)


def app_role_url(db_url: str) -> str:
    """The same database as the app's restricted role (PostgreSQL; SQLite has no roles)."""
    if not db_url.startswith("postgresql"):
        return db_url
    return make_url(db_url).set(username=APP_ROLE).render_as_string(hide_password=False)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """The test's own view of the database (deferred transactions, so it never blocks the app)."""
    eng = observer_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as s:
        yield s


@pytest.fixture(scope="session")
def smtp() -> Iterator[SMTPServer]:
    server = SMTPServer().start()
    yield server
    server.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def settings(db_url: str, smtp: SMTPServer, tmp_path: Path) -> Settings:
    # On PostgreSQL the app connects as the restricted app role, as deployed; the test's own
    # `engine` and `db_url` stay the server's superuser (drills play a stronger attacker).
    return Settings(database_url=app_role_url(db_url), migration_database_url=db_url,
                    environment="test", secret_key="test-secret-0123456789",
                    smtp_host="127.0.0.1", smtp_port=smtp.port, notify_channel="smtp",
                    base_url="http://testserver", log_json=False,
                    export_dir=tmp_path / "exports",  # never ./exports in the checkout
                    ledger_dir=tmp_path / "ledger")  # the ledger's checkpoints, per test


@pytest.fixture
def loaded_study(settings: Settings, engine: Engine) -> str:
    """The default study's key; db_url cloned the database from a template that has it."""
    return "keep4o-panel"


@pytest.fixture
def app(settings: Settings, clock: Clock, loaded_study: str):  # type: ignore[no-untyped-def]
    application = create_app(settings, clock=clock)
    yield application
    application.state.engine.dispose()


class SettlingClient(TestClient):
    """A TestClient that, after each answer, waits for what the request woke in the app's
    deliverer thread (app/notify/dispatch.py) to be done, so a test that next runs a scheduler
    tick or reads the mailbox sees the same state every run."""

    def request(self, *args, **kwargs):  # type: ignore[no-untyped-def,override]
        response = super().request(*args, **kwargs)
        wait_all_idle()
        return response


@pytest.fixture
def client(app) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    with SettlingClient(app) as c:
        yield c


@pytest.fixture
def artifacts_dir() -> Path:
    path = Path(os.environ.get("WELLPANEL_TEST_ARTIFACTS", PROJECT_ROOT / "test-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("WELLPANEL_ENVIRONMENT", "test")
    os.environ.setdefault("WELLPANEL_SECRET_KEY", "test-secret-0123456789")
    # Ledger checkpoints of a PostgreSQL database without WELLPANEL_LEDGER_DIR default to
    # $XDG_DATA_HOME/wellpanel/ledger/...: in tests (commands run as subprocesses) a temporary
    # directory, never the home directory.
    if "XDG_DATA_HOME" not in os.environ:
        os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="wellpanel-test-data-")
    tempfile.tempdir = None


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """Everything logged during the test, as JSON lines; logging is put back afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level,
             {name: logging.getLogger(name).level for name in logging.root.manager.loggerDict})
    stream = io.StringIO()
    configure_logging("DEBUG", json_format=True, stream=stream)
    yield stream
    root.handlers[:], root.level = saved[0], saved[1]
    for name, level in saved[2].items():
        logging.getLogger(name).setLevel(level)

"""docker-compose.yml, the Dockerfile and the README against the code they describe.

No Docker engine runs in CI, so the compose file is checked statically: the services and their
wiring, every `wellpanel ...` command against the real typer app, every WELLPANEL_* name
against app.config.Settings, and the README's configuration table against
scripts/settings_table.py.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
from types import ModuleType
from typing import Any

import pytest
import typer
import yaml

from app.cli import app as cli_app
from app.config import PROJECT_ROOT, Settings

COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
DOCKERFILE = PROJECT_ROOT / "Dockerfile"
README = PROJECT_ROOT / "README.md"
SERVICES = {"postgres", "migrate", "api", "scheduler", "mailpit"}
WELLPANEL_SERVICES = {"migrate", "api", "scheduler"}
OWNER_URL = "WELLPANEL_MIGRATION_DATABASE_URL"

# Commands the compose file already runs but another issue has not added to the CLI yet. The
# test fails for a compose command missing from the CLI unless it is listed here, and fails
# for an entry here once the command exists, so remove it in the change that adds the command.
PENDING: set[tuple[str, ...]] = set()

ENV_NAME = re.compile(r"\bWELLPANEL_[A-Z0-9_]+\b")
INTERPOLATION = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _argv(command: str | list[str] | None) -> list[str]:
    if command is None:
        return []
    return shlex.split(command) if isinstance(command, str) else [str(a) for a in command]


def _subcommands(command: Any) -> dict[str, Any] | None:
    """A group's subcommands by name, None for a plain command. Duck-typed: recent typer ships
    its own copy of click, so isinstance checks against the click package would not hold."""
    commands = getattr(command, "commands", None)
    return commands if isinstance(commands, dict) else None


def resolve(argv: list[str]) -> tuple[tuple[str, ...], Any | None]:
    """Walk `wellpanel ARGS...` down the CLI's groups: (subcommand path, leaf command or None)."""
    assert argv and argv[0] == "wellpanel", argv
    command: Any = typer.main.get_command(cli_app)
    path: list[str] = []
    words = argv[1:]
    for i, token in enumerate(words):
        subcommands = _subcommands(command)
        if subcommands is None or token.startswith("-"):
            break
        if token not in subcommands:  # unknown: name it by the words up to the first option
            rest = words[i:]
            cut = next((j for j, w in enumerate(rest) if w.startswith("-")), len(rest))
            return tuple(path + rest[:cut]), None
        path.append(token)
        command = subcommands[token]
    if _subcommands(command) is not None:
        return tuple(path), None  # stopped at a group: not a runnable command
    return tuple(path), command


def option_names(command: Any) -> set[str]:
    return {
        opt
        for p in command.params
        if getattr(p, "param_type_name", "") == "option"
        for opt in [*p.opts, *p.secondary_opts]
    }


def option_value(argv: list[str], name: str) -> str | None:
    for i, token in enumerate(argv):
        if token == name and i + 1 < len(argv):
            return argv[i + 1]
        if token.startswith(name + "="):
            return token.split("=", 1)[1]
    return None


def check_cli_command(argv: list[str], where: str) -> list[str]:
    """Problems with one `wellpanel ...` command line (empty when it is fine)."""
    path, command = resolve(argv)
    if command is None:
        if path in PENDING:
            return []
        return [
            f"{where}: `{' '.join(argv)}` is not a command of the wellpanel CLI "
            f"(add it to PENDING in this test only if another issue is adding it)"
        ]
    if path in PENDING:
        return [f"{where}: `wellpanel {' '.join(path)}` exists now: remove it from PENDING"]
    unknown = [
        t.split("=")[0]
        for t in argv[1 + len(path) :]
        if t.startswith("--") and t.split("=")[0] not in option_names(command)
    ]
    return [f"{where}: `wellpanel {' '.join(path)}` has no option {opt}" for opt in unknown]


def settings_env_names() -> set[str]:
    prefix = Settings.model_config.get("env_prefix", "")
    return {f"{prefix}{name}".upper() for name in Settings.model_fields}


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def interpolate(value: str) -> str:
    """Compose's ${VAR:-default} / ${VAR:?error} as `docker compose up` would see them with
    only the required variables set (to a stand-in value)."""

    def substitute(match: re.Match[str]) -> str:
        op = match.group("op") or ""
        if op.endswith("-"):
            return match.group("arg")
        if op.endswith("?"):
            return "stand-in-for-a-required-variable-0123456789"
        return ""

    return INTERPOLATION.sub(substitute, value)


# --- compose ---------------------------------------------------------------------------------


def test_the_five_services_exist(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) >= SERVICES, f"missing services: {sorted(SERVICES - set(services))}"


def test_postgres_has_healthcheck_and_named_volume(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    pg = services["postgres"]
    assert str(pg["image"]).startswith("postgres:15")
    test = pg["healthcheck"]["test"]
    assert "pg_isready" in (test if isinstance(test, str) else " ".join(test))
    volumes = pg.get("volumes") or []
    assert volumes, "postgres keeps its data in a volume"
    named = {str(v).split(":")[0] if isinstance(v, str) else v.get("source") for v in volumes}
    assert named & set(compose.get("volumes") or {}), "postgres uses a named (top-level) volume"
    assert any(
        (str(v) if isinstance(v, str) else v.get("target", "")).endswith("/var/lib/postgresql/data")
        for v in volumes
    )


def test_image_has_a_pg_dump_matching_the_compose_server(
    services: dict[str, dict[str, Any]]
) -> None:
    # pg_dump refuses a server newer than itself: `wellpanel backup` in the container needs it
    major = str(services["postgres"]["image"]).split(":")[1].split(".")[0]
    assert f"postgresql-client-{major}" in DOCKERFILE.read_text()


def test_startup_order(services: dict[str, dict[str, Any]]) -> None:
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "scheduler"):
        condition = services[name]["depends_on"]["migrate"]["condition"]
        assert condition == "service_completed_successfully", name
    assert str(services["migrate"].get("restart", "no")) == "no", "migrate runs once"
    assert _argv(services["migrate"]["command"])[:3] == ["wellpanel", "db", "upgrade"]
    assert _argv(services["scheduler"]["command"])[:3] == ["wellpanel", "scheduler", "run"]


def test_service_commands_exist_in_the_cli(services: dict[str, dict[str, Any]]) -> None:
    problems: list[str] = []
    checked = 0
    for name, service in services.items():
        for key in ("command", "entrypoint"):
            argv = _argv(service.get(key))
            if argv[:1] == ["wellpanel"]:
                checked += 1
                problems += check_cli_command(argv, f"service {name} {key}")
    assert checked >= len(WELLPANEL_SERVICES)
    assert problems == []


def test_pending_commands_are_still_used(services: dict[str, dict[str, Any]]) -> None:
    used = {
        resolve(_argv(s.get("command")))[0]
        for s in services.values()
        if _argv(s.get("command"))[:1] == ["wellpanel"]
    }
    assert used >= PENDING, f"PENDING lists commands compose no longer runs: {PENDING - used}"


def test_resolve_finds_real_commands_and_rejects_made_up_ones() -> None:
    assert resolve(["wellpanel", "db", "upgrade"])[1] is not None
    assert resolve(["wellpanel", "serve", "--port", "1"])[1] is not None
    assert resolve(["wellpanel", "db"])[1] is None  # a group is not a command
    assert resolve(["wellpanel", "db", "sideways"]) == (("db", "sideways"), None)
    assert resolve(["wellpanel", "nope", "run", "--x"]) == (("nope", "run"), None)
    assert check_cli_command(["wellpanel", "serve", "--prot", "1"], "x") != []


def test_environment_names_match_settings(compose: dict[str, Any]) -> None:
    known = settings_env_names()
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    used = set(ENV_NAME.findall(text))
    assert used, "compose configures wellpanel through WELLPANEL_* variables"
    assert sorted(used - known) == [], f"not settings of app.config.Settings: {used - known}"


def test_wellpanel_services_share_a_complete_environment(
    services: dict[str, dict[str, Any]],
) -> None:
    required = {
        "WELLPANEL_DATABASE_URL",
        "WELLPANEL_SECRET_KEY",
        "WELLPANEL_SMTP_HOST",
        "WELLPANEL_SMTP_PORT",
        "WELLPANEL_BASE_URL",
    }
    envs = {name: environment(services[name]) for name in WELLPANEL_SERVICES}
    for name, env in envs.items():
        assert required <= set(env), f"{name} lacks {required - set(env)}"
    # only migrate holds the tables' owner's URL; the long-running services never see it
    migrate_env = dict(envs.pop("migrate"))
    assert migrate_env.pop(OWNER_URL, None), f"migrate runs as the owner ({OWNER_URL})"
    envs["migrate"] = migrate_env
    assert len({json.dumps(env, sort_keys=True) for env in envs.values()}) == 1, (
        "migrate, api and scheduler share one environment (the x- anchor), migrate adds the "
        "owner's URL"
    )
    env = envs["api"]
    assert re.fullmatch(r"\$\{WELLPANEL_SECRET_KEY:\?[^}]+\}", env["WELLPANEL_SECRET_KEY"]), (
        "the secret key must come from the operator, with no default"
    )


def test_environment_values_are_valid_settings(services: dict[str, dict[str, Any]]) -> None:
    env = {k: interpolate(v) for k, v in environment(services["api"]).items()}
    prefix = Settings.model_config.get("env_prefix", "")
    settings = Settings(
        _env_file=None, **{k.removeprefix(prefix).lower(): v for k, v in env.items()}
    )  # type: ignore[arg-type]
    assert settings.database_url.startswith("postgresql+psycopg://")
    pg_env = environment(services["postgres"])
    owner_url = interpolate(environment(services["migrate"])[OWNER_URL])
    owner = Settings(_env_file=None, database_url=owner_url, environment="test")
    app_user, app_password = url_parts(settings.database_url, pg_env)
    owner_user, owner_password = url_parts(owner.database_url, pg_env)
    # migrations as the owner (the image's POSTGRES_USER), the app as its own restricted role
    assert (owner_user, owner_password) == (
        pg_env["POSTGRES_USER"], interpolate(pg_env["POSTGRES_PASSWORD"]))
    assert app_user == "wellpanel_app" != owner_user
    assert app_password == interpolate(pg_env["APP_DB_PASSWORD"])
    assert settings.smtp_host == "mailpit" and settings.smtp_port == 1025
    assert settings.environment == "production"


def url_parts(url: str, pg_env: dict[str, str]) -> tuple[str, str]:
    """(user, password) of a URL that must reach the compose database."""
    match = re.fullmatch(r"postgresql\+psycopg://([^:@/]+):([^@/]*)@([^:/]+):(\d+)/(\w+)", url)
    assert match, url
    user, password, host, port, db = match.groups()
    assert (host, port, db) == ("postgres", "5432", pg_env["POSTGRES_DB"])
    return user, password


def test_postgres_creates_the_app_role_on_first_start(
    services: dict[str, dict[str, Any]]
) -> None:
    mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in services["postgres"]["volumes"]}
    source = mounts.get("/docker-entrypoint-initdb.d")
    assert source, "an init script directory is mounted into the postgres container"
    scripts = sorted((PROJECT_ROOT / source).glob("*.sh"))
    assert scripts and all(p.stat().st_mode & 0o111 for p in scripts)
    text = "\n".join(p.read_text(encoding="utf-8") for p in scripts)
    assert "CREATE ROLE" in text and "NOSUPERUSER" in text
    assert "${APP_DB_USER:-wellpanel_app}" in text and "$APP_DB_PASSWORD" in text
    assert "APP_DB_PASSWORD" in environment(services["postgres"])


def test_mailpit_ports(services: dict[str, dict[str, Any]]) -> None:
    mailpit = services["mailpit"]
    assert str(mailpit["image"]).startswith("axllent/mailpit")
    container_ports = {str(p).rsplit(":", 1)[-1] for p in mailpit["ports"]}
    assert {"1025", "8025"} <= container_ports


def test_api_port_mapping_matches_serve_port(services: dict[str, dict[str, Any]]) -> None:
    argv = _argv(services["api"]["command"])
    assert resolve(argv)[0] == ("serve",)
    assert option_value(argv, "--host") == "0.0.0.0"
    port = option_value(argv, "--port")
    assert port is not None, "give serve an explicit --port"
    mappings = [str(p) for p in services["api"]["ports"]]
    assert any(m.rsplit(":", 1)[-1].split("/")[0] == port for m in mappings), (port, mappings)


# --- Dockerfile ------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text(encoding="utf-8")
    text = re.sub(r"\\\n", " ", text)  # line continuations
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_dockerfile_base_user_and_cmd() -> None:
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim-bookworm")
    users = [rest for kw, rest in instructions if kw == "USER"]
    assert users and users[-1] not in {"root", "0"}, "the image runs as a non-root user"
    cmds = [rest for kw, rest in instructions if kw == "CMD"]
    assert cmds, "the Dockerfile has a CMD"
    argv = json.loads(cmds[-1])  # exec form
    assert argv[:2] == ["wellpanel", "serve"]
    assert option_value(argv, "--host") == "0.0.0.0"
    assert check_cli_command(argv, "Dockerfile CMD") == []


def test_dockerfile_environment_names_match_settings() -> None:
    used = set(ENV_NAME.findall(DOCKERFILE.read_text(encoding="utf-8")))
    assert sorted(used - settings_env_names()) == []


def test_dockerfile_copies_what_the_app_reads_at_run_time() -> None:
    copied = " ".join(rest for kw, rest in dockerfile_instructions() if kw == "COPY")
    for needed in ("pyproject.toml", "app", "analysis", "migrations", "surveys", "alembic.ini"):
        assert re.search(rf"(^|\s){re.escape(needed)}(\s|$)", copied), needed
    ignored = (PROJECT_ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert ".venv" in ignored and ".git" in ignored


# --- README ----------------------------------------------------------------------------------


def _settings_table_module() -> ModuleType:
    path = PROJECT_ROOT / "scripts" / "settings_table.py"
    spec = importlib.util.spec_from_file_location("settings_table", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_configuration_table_is_up_to_date() -> None:
    module = _settings_table_module()
    current = module.current_block(README.read_text(encoding="utf-8"))
    assert current is not None, "README.md lacks the settings-table markers"
    assert current == module.block(), (
        "README.md's configuration table is out of date with app.config.Settings; run "
        ".venv/bin/python scripts/settings_table.py --update"
    )


def test_readme_opens_with_the_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    first_block = re.search(r"```[a-z]*\n(.*?)```", text, re.S)
    assert first_block, "README.md starts with a fenced block of commands"
    commands = [ln.split("#")[0].strip() for ln in first_block.group(1).splitlines()]
    assert [c for c in commands if c] == ["make demo", "make test"]
    assert text.find("```") < text.find("\n## "), "the commands come before the first section"


def test_makefile_has_the_documented_targets() -> None:
    text = (PROJECT_ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-z][a-z-]*):", text, re.M))
    assert {"demo", "test", "lint", "format", "bench", "clean"} <= targets


def test_ci_runs_make_test() -> None:
    path = PROJECT_ROOT / ".ci" / "run"
    text = path.read_text(encoding="utf-8")
    assert path.stat().st_mode & 0o111, ".ci/run is executable"
    assert "set -euo pipefail" in text and re.search(r"\bmake test\b", text)


def test_settings_table_lists_every_setting() -> None:
    table = _settings_table_module().table()
    for env in settings_env_names():
        assert f"`{env}`" in table
    assert str(PROJECT_ROOT) not in table, "defaults are shown the same in every checkout"


def test_exports_land_on_a_named_volume(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    export_dir = compose["x-wellpanel-environment"]["WELLPANEL_EXPORT_DIR"]
    mounts = {str(v).split(":")[1] for v in services["api"].get("volumes") or []}
    assert export_dir in mounts, "the api's export directory must be a volume"
    assert "exports" in (compose.get("volumes") or {})

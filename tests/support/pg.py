"""Start a throw-away PostgreSQL server for the test run.

PostgreSQL refuses to run as root, so when we are root the server runs as the `postgres` system
user (created by Debian's package). Tests get a fresh database per test, cloned from a migrated
template, which takes a few milliseconds.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg

# Roles of every test server (cluster-wide): the tables' owner that migrations run as, and the
# app's restricted role (app/privileges.py), granted on the migrated template and so on every
# database cloned from it. The servers trust local connections: no passwords.
OWNER_ROLE = "wellpanel_owner"
APP_ROLE = "wellpanel_app"


def find_pg_bin() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for folder in candidates:
        if Path(folder, "initdb").exists():
            return Path(folder)
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    raise RuntimeError("PostgreSQL server binaries not found; run `make pg-install` "
                       "(Debian: apt-get install postgresql)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PostgresServer:
    bin_dir: Path
    data_dir: Path
    port: int
    run_as: str | None

    def _cmd(self, *args: str) -> list[str]:
        prefix = ["runuser", "-u", self.run_as, "--"] if self.run_as else []
        return prefix + list(args)

    @classmethod
    def start(cls) -> PostgresServer:
        bin_dir = find_pg_bin()
        run_as = "postgres" if os.geteuid() == 0 else None
        base = Path(tempfile.mkdtemp(prefix="wellpanel-pg-"))
        data_dir = base / "data"
        if run_as:
            shutil.chown(base, user=run_as)
        server = cls(bin_dir, data_dir, free_port(), run_as)
        subprocess.run(server._cmd(str(bin_dir / "initdb"), "-D", str(data_dir), "-A", "trust",
                                   "-U", "postgres", "--no-sync", "-E", "UTF8"),
                       check=True, capture_output=True)
        options = (f"-p {server.port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c full_page_writes=off -c synchronous_commit=off -c max_connections=200")
        subprocess.run(server._cmd(str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-o", options,
                                   "-l", str(base / "server.log"), "-w", "start"),
                       check=True, capture_output=True)
        server._wait()
        server.create_roles()
        return server

    def create_roles(self) -> None:
        self.execute(f"CREATE ROLE {OWNER_ROLE} LOGIN NOSUPERUSER")
        self.execute(f"CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOINHERIT")

    def _wait(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.admin_dsn(), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self) -> None:
        subprocess.run(self._cmd(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir),
                                 "-m", "immediate", "stop"), capture_output=True)
        shutil.rmtree(self.data_dir.parent, ignore_errors=True)

    def admin_dsn(self, database: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={database}"

    def url(self, database: str, user: str = "postgres") -> str:
        return f"postgresql+psycopg://{user}@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str, database: str = "postgres") -> None:
        with psycopg.connect(self.admin_dsn(database), autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def create_database(self, template: str | None = None, owner: str | None = None) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        clause = (f" TEMPLATE {template}" if template else "") + (f" OWNER {owner}" if owner
                                                                 else "")
        self.execute(f"CREATE DATABASE {name}{clause}")
        return name

    def drop_database(self, name: str) -> None:
        self.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

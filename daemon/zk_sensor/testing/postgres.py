"""A real PostgreSQL server for the tests: Debian's `postgresql` package, a throw-away
cluster on a free loopback port, password (SCRAM) authentication over TCP as in a
deployment, and a database per test.

PostgreSQL refuses to run as root; as root the cluster belongs to the `postgres` user
the package creates (the server runs as that user itself, so signals reach it), in a
directory of its own under /tmp (pytest's are root's, 0700).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg

from zk_sensor.testing.ports import free_port

ROLE = "zk_collector"


def postgres_bin() -> Path | None:
    """The newest installed server's bin directory (/usr/lib/postgresql/<major>/bin)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"),
                   key=lambda path: int(path.parent.parent.name))
    return found[-1].parent if found else None


class PgServer:
    def __init__(self) -> None:
        found = postgres_bin()
        if found is None:
            raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql")
        self.bin = found
        self.as_root = os.geteuid() == 0
        self.root = Path(tempfile.mkdtemp(prefix="zk-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.password = "collector-" + os.urandom(8).hex()
        self.process: subprocess.Popen[bytes] | None = None
        self.databases = 0
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")

    def as_postgres(self) -> dict[str, Any]:
        """Popen's arguments that run a command as the `postgres` user when we are root."""
        return {"user": "postgres", "group": "postgres", "extra_groups": []} if self.as_root \
            else {}

    def run(self, command: Sequence[str]) -> None:
        subprocess.run(command, check=True, capture_output=True, cwd=self.root,
                       **self.as_postgres())

    def start(self) -> PgServer:
        self.run([str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                  "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                  "--no-sync"])
        self.resume()
        with self.admin() as db:
            db.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{self.password}'")
        return self

    def resume(self) -> None:
        """Start the server on its port and wait until it answers."""
        with (self.root / "server.log").open("ab") as sink:
            self.process = subprocess.Popen(
                [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
                 "-k", str(self.root), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
                stdout=sink, stderr=subprocess.STDOUT, cwd=self.root, **self.as_postgres())
        deadline = time.monotonic() + 30
        while True:
            try:
                self.admin().close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("PostgreSQL did not start: see "
                                       f"{self.root / 'server.log'}") from None
                time.sleep(0.1)

    def admin(self) -> psycopg.Connection:
        """The superuser, over the Unix socket (trusted): for the tests' own setup."""
        return psycopg.connect(host=str(self.root), port=self.port, user="postgres",
                               dbname="postgres", autocommit=True, connect_timeout=2)

    def new_database(self) -> str:
        """A fresh database owned by the collectors' role, as the Ansible role makes it."""
        self.databases += 1
        name = f"rounds_{self.databases}"
        with self.admin() as db:
            db.execute(f"CREATE DATABASE {name} OWNER {ROLE}")
        return name

    def passfile(self, directory: Path) -> Path:
        path = directory / "pgpass"
        path.write_text(f"127.0.0.1:{self.port}:*:{ROLE}:{self.password}\n")
        path.chmod(0o600)
        return path

    def url(self, database: str, passfile: Path) -> str:
        """What an operator writes in `database`: no password in it."""
        return f"postgresql://{ROLE}@127.0.0.1:{self.port}/{database}?passfile={passfile}"

    def stop(self) -> None:
        """A fast shutdown: clients are disconnected, transactions rolled back."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(30)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

"""A real zk-collector process, and the HTTP calls the tests make to one.

`CollectorProcess` is the one wrapper that starts the venv's `zk-collector` console
script and waits for it: the tests' collectors (SQLite or PostgreSQL, with tokens, TLS or
a fence), the demo's and the benchmark's all go through it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zk_sensor.testing.fleet import BIN

SERVING = re.compile(r"serving on (https?)://[^/\s]+?:(\d+)/")
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 15.0
POLL_S = 0.05
# Rows per page when reading every round back (`fetch_rounds`).
PAGE = 1000


class CollectorFailed(RuntimeError):
    """zk-collector exited before it served (`exit_code`), or did not serve in time
    (`exit_code` None: it was killed)."""

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def collector_env() -> dict[str, str]:
    """This environment minus ZK_COLLECTOR_* settings, which would override the flags."""
    return {key: value for key, value in os.environ.items()
            if not key.startswith("ZK_COLLECTOR_")}


@dataclass
class CollectorProcess:
    """A real zk-collector listening on `host` (loopback by default), its output appended
    to `log_file`, its rounds in the SQLite file `db` or the PostgreSQL `database`.

    `args` adds flags (--tokens-file, --cert-file/--key-file, --fence-zookeeper,
    --log-level, ...), `prefix` a command to run it under (taskset, setpriv), `popen`
    further Popen arguments (cwd, start_new_session, ...), `env` replaces the environment
    (default: this one, ZK_COLLECTOR_* settings included; `collector_env()` leaves them
    out).
    """

    db: Path
    log_file: Path
    token_file: Path | None = None
    database: str = ""  # a PostgreSQL URI, used instead of the SQLite file `db`
    args: Sequence[str] = ()
    host: str = "127.0.0.1"
    prefix: Sequence[str] = ()
    popen: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] | None = None
    process: subprocess.Popen[bytes] | None = None
    port: int = 0
    scheme: str = "http"
    log_offset: int = 0

    def command(self, port: int) -> list[str]:
        command = [*self.prefix, str(BIN / "zk-collector"), "--listen", f"{self.host}:{port}",
                   *(["--database", self.database] if self.database else ["--db", str(self.db)])]
        if self.token_file:
            command += ["--token-file", str(self.token_file)]
        return [*command, *self.args]

    def launch(self, port: int = 0) -> subprocess.Popen[bytes]:
        """Start the process without waiting for it (for one that must refuse to start)."""
        self.port = port
        with self.log_file.open("ab") as sink:
            self.log_offset = sink.tell()
            self.process = subprocess.Popen(
                self.command(port), stdout=sink, stderr=subprocess.STDOUT,
                env=self.env, **self.popen)
        return self.process

    def start(self, timeout: float = START_TIMEOUT_S) -> CollectorProcess:
        return self.start_on(0, timeout)

    def start_on(self, port: int, timeout: float = START_TIMEOUT_S) -> CollectorProcess:
        """Port 0 picks a free one; a fixed port brings a collector back where it was.
        Killed if it does not serve within `timeout` (CollectorFailed)."""
        self.launch(port)
        try:
            return self.wait_serving(timeout)
        except BaseException:
            assert self.process is not None
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait()
            raise

    def wait_serving(self, timeout: float = START_TIMEOUT_S) -> CollectorProcess:
        """Wait for the "serving on" line it logs at info level (which gives the port it
        got), or, logging at warning or above on a fixed port, for a connection to
        succeed."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while True:
            found = SERVING.findall(self.log_since_launch())
            if found:
                self.scheme, port = found[-1]
                self.port = int(port)
                return self
            code = self.process.poll()
            if code is not None:
                raise CollectorFailed(
                    f"zk-collector exited with code {code} ({self.last_log_line()})", code)
            if self.port and self.quiet() and self.accepts():
                return self
            if time.monotonic() > deadline:
                raise CollectorFailed(f"zk-collector (pid {self.process.pid}) did not serve "
                                      f"within {timeout:.0f} s ({self.last_log_line()})")
            time.sleep(POLL_S)

    def quiet(self) -> bool:
        """Whether it runs at a --log-level that leaves out the "serving on" line."""
        args = list(self.args)
        return "--log-level" in args and \
            args[args.index("--log-level") + 1:][:1] not in (["debug"], ["info"])

    def accepts(self) -> bool:
        address = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        try:
            with socket.create_connection((address, self.port), timeout=1):
                return True
        except OSError:
            return False

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_since_launch(self) -> str:
        """What this run logged (the file may hold earlier runs' lines before it)."""
        try:
            return self.log_file.read_bytes()[self.log_offset:].decode(errors="replace")
        except FileNotFoundError:
            return ""

    def last_log_line(self) -> str:
        lines = self.log_since_launch().strip().splitlines()
        return lines[-1] if lines else "(empty log)"

    def rounds(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(self.url("/api/rounds?limit=1000"), timeout=10) as reply:
            rounds: list[dict[str, Any]] = json.loads(reply.read())["rounds"]
        return rounds

    def stop(self, sig: signal.Signals = signal.SIGTERM,
             timeout: float = STOP_TIMEOUT_S) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)
        return self.process.wait(timeout)


def restart_collector(old: CollectorProcess) -> CollectorProcess:
    """A new zk-collector on the same port and database as `old` (which has stopped), so
    the daemons' api_url does not change."""
    assert old.process is not None and old.process.poll() is not None, "stop it first"
    return CollectorProcess(old.db, old.log_file).start_on(old.port)


# ---------------------------------------------------------------- HTTP to a collector


def call(url: str, method: str = "GET", body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any] | str]:
    """One request; the status and the decoded JSON body (the text if it is not JSON)."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, raw = response.status, response.read()
            kind = response.headers.get_content_type()
    except urllib.error.HTTPError as error:
        status, raw, kind = error.code, error.read(), error.headers.get_content_type()
    return status, json.loads(raw) if kind == "application/json" else raw.decode()


def post_round(collector: CollectorProcess, payload: Any, headers: dict[str, str] | None = None,
               content_type: str = "application/json") -> tuple[int, Any]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return call(collector.url("/api/rounds"), "POST", body,
                {"Content-Type": content_type, **(headers or {})})


def stored(collector: CollectorProcess) -> list[dict[str, Any]]:
    status, body = call(collector.url("/api/rounds?limit=1000"))
    assert status == 200 and isinstance(body, dict), body
    rounds: list[dict[str, Any]] = body["rounds"]
    return rounds


def a_round(number: int, epoch: int = 1, mean: float = 80.0,
            incarnation: str | None = None) -> dict[str, Any]:
    """A daemon's JSON round; without `incarnation`, as an older daemon sends it."""
    payload = {"mean": mean, "count": 3, "min": mean - 2, "max": mean + 2, "round": number,
               "epoch": epoch, "leader": "2", "time": 1_800_000_000.0 + number, "fleet": "/f"}
    return payload if incarnation is None else {**payload, "incarnation": incarnation}


def fetch_rounds(base_url: str) -> list[dict[str, Any]]:
    """Every round the collector at `base_url` holds, newest first (paged)."""
    rows: list[dict[str, Any]] = []
    before: int | None = None
    while True:
        query = f"limit={PAGE}" + (f"&before={before}" if before is not None else "")
        with urllib.request.urlopen(f"{base_url}/api/rounds?{query}", timeout=10) as reply:
            page = json.loads(reply.read())["rounds"]
        rows += page
        if len(page) < PAGE:
            return rows
        before = page[-1]["id"]


def collector_replies(base_url: str) -> dict[str, int]:
    """The collector's answers to writes since it started, by outcome (its /metrics)."""
    with urllib.request.urlopen(f"{base_url}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {name: int(float(value)) for name, value in
            re.findall(r'^zk_collector_deliveries_total\{outcome="(\w+)"\} (\S+)$', text,
                       re.MULTILINE)}


__all__ = ["CollectorFailed", "CollectorProcess", "a_round", "call", "collector_env",
           "collector_replies", "fetch_rounds", "post_round", "restart_collector", "stored"]

"""Real zk-sensor processes and a small HTTP receiver, for the integration tests (the
collector's process is in collector.py).

Daemons run as separate processes with the installed console script, get real
signals, and are observed through their logs, ZooKeeper and what they deliver.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from zk_sensor.testing.httpserver import QuietHTTPServer

BIN = Path(sys.executable).parent
T = TypeVar("T")


def wait_for(
    condition: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05
) -> T:
    """Poll until `condition()` is truthy; fail with `what` when the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@dataclass
class Daemon:
    node_id: str
    process: subprocess.Popen[bytes]
    log_file: Path

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def wait_log(self, pattern: str, timeout: float = 20.0, count: int = 1) -> str:
        regex = re.compile(pattern)
        wait_for(lambda: len(regex.findall(self.log())) >= count, timeout,
                 f"node {self.node_id} to log {pattern!r} x{count}\n--- log ---\n"
                 f"{self.log()[-3000:]}")
        return self.log()

    def signal(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    def wait_exit(self, timeout: float = 15.0) -> int:
        return self.process.wait(timeout)

    @property
    def running(self) -> bool:
        return self.process.poll() is None


@dataclass
class Fleet:
    hosts: str
    namespace: str
    work_dir: Path
    api_url: str
    period: float = 0.5
    session_timeout: float = 4.0
    daemons: dict[str, Daemon] = field(default_factory=dict)
    history: list[Daemon] = field(default_factory=list)

    def start(self, node_id: str, *extra: str, env: dict[str, str] | None = None) -> Daemon:
        log_file = self.work_dir / f"node-{node_id}-{len(self.history)}.log"
        command = [
            str(BIN / "zk-sensor"), "--id", node_id, "--zookeeper", self.hosts,
            "--namespace", self.namespace, "--sampling-period", str(self.period),
            "--api-url", self.api_url, "--session-timeout", str(self.session_timeout),
            "--zk-deadline", "1", "--http-timeout", "1", "--log-level", "debug", *extra,
        ]
        environment = {k: v for k, v in os.environ.items() if not k.startswith("ZK_SENSOR_")}
        environment.update(env or {})
        with log_file.open("wb") as sink:
            process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT,
                                       env=environment)
        daemon = Daemon(node_id, process, log_file)
        self.daemons[node_id] = daemon
        self.history.append(daemon)
        return daemon

    def start_ready(self, *node_ids: str) -> list[Daemon]:
        started = [self.start(node_id) for node_id in node_ids]
        for daemon in started:
            daemon.wait_log(r"ready: first reading published")
        return started

    def stop_all(self) -> None:
        for daemon in self.history:
            if daemon.running:
                daemon.signal(signal.SIGCONT)
                daemon.signal(signal.SIGTERM)
        for daemon in self.history:
            try:
                daemon.wait_exit(15)
            except subprocess.TimeoutExpired:
                daemon.process.kill()
                daemon.process.wait()

    def measurements(self) -> int:
        """Readings published by every process ever started, from their own logs."""
        return sum(len(re.findall(r" measured \S+ for round", d.log()))
                   for d in self.history)


@dataclass(frozen=True)
class Delivery:
    method: str
    path: str
    query: dict[str, list[str]]
    body: dict[str, Any] | None
    received_at: float


class Receiver:
    """Records every delivery; answers 200 (or `status`) to anything."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.status = 200
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self, body: dict[str, Any] | None) -> None:
                parts = urlsplit(self.path)
                with receiver.lock:
                    receiver.deliveries.append(Delivery(
                        self.command, parts.path, parse_qs(parts.query), body, time.time()))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:
                self._record(None)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                self._record(json.loads(self.rfile.read(length) or b"null"))

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = QuietHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def snapshot(self) -> list[Delivery]:
        with self.lock:
            return list(self.deliveries)

    def rounds(self) -> list[int]:
        return [int(d.body["round"]) for d in self.snapshot() if d.body]

    def wait_rounds(self, count: int, timeout: float = 30.0, after: float = 0.0) -> list[Delivery]:
        def enough() -> list[Delivery]:
            recent = [d for d in self.snapshot() if d.received_at > after]
            return recent if len(recent) >= count else []

        return wait_for(enough, timeout, f"{count} deliveries")


def run_ctl(hosts: str, namespace: str, *args: str,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """zk-sensorctl on the fleet at `hosts` and `namespace`, its output captured."""
    return subprocess.run([str(BIN / "zk-sensorctl"), "--zookeeper", hosts,
                           "--namespace", namespace, *args],
                          capture_output=True, text=True, timeout=timeout)


def ctl(fleet: Fleet, *args: str) -> subprocess.CompletedProcess[str]:
    return run_ctl(fleet.hosts, fleet.namespace, *args, timeout=30)


def status(fleet: Fleet) -> dict[str, Any]:
    result = ctl(fleet, "status", "--json")
    assert result.returncode == 0, result.stderr
    shown: dict[str, Any] = json.loads(result.stdout)
    return shown

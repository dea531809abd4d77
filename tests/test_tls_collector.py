"""HTTPS between the leader and zk-collector, and where the write token may go.

Real zk-collector processes serve HTTPS with certificates from a throw-away CA
(zk_sensor.testing.pki); a real Courier, built from Settings as the daemon builds it, delivers to
them and verifies them; a small recording HTTP server stands for a destination the
operator never configured, and must never hear from the courier or see the token.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import ssl
import subprocess
import threading
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from zk_sensor.fleet.aggregate import Aggregate
from zk_sensor.node.delivery import Courier
from zk_sensor.node.settings import Settings
from zk_sensor.testing.collector import CollectorProcess
from zk_sensor.testing.fleet import BIN, Fleet, ctl, status, wait_for
from zk_sensor.testing.httpserver import QuietHTTPServer
from zk_sensor.testing.pki import CertificateAuthority, Issued

TOKEN = "tls-test-bearer-s3cret"


def clean_env() -> dict[str, str]:
    return {key: value for key, value in os.environ.items()
            if not key.startswith(("ZK_COLLECTOR_", "ZK_SENSOR_"))}


@dataclass
class TlsCollector:
    """A real zk-collector serving HTTPS only; writes need TOKEN."""

    work: Path
    issued: Issued
    ca: Path
    server: CollectorProcess | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port

    def start(self) -> TlsCollector:
        self.work.mkdir(parents=True, exist_ok=True)
        token_file = self.work / "token"
        token_file.write_text(TOKEN)
        token_file.chmod(0o600)
        self.server = CollectorProcess(
            self.work / "rounds.sqlite3", self.work / "collector.log", token_file,
            args=("--cert-file", str(self.issued.cert), "--key-file", str(self.issued.key)),
            env=clean_env()).start()
        assert self.server.scheme == "https"
        return self

    def url(self, path: str = "/api/rounds") -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    def rounds(self) -> list[int]:
        """Read back over HTTPS, trusting the CA that signed this collector."""
        context = ssl.create_default_context(cafile=str(self.ca))
        with urllib.request.urlopen(self.url("/api/rounds?limit=1000"), context=context,
                                    timeout=10) as reply:
            return sorted(row["round"] for row in json.loads(reply.read())["rounds"])

    def stop(self) -> int:
        assert self.server is not None
        return self.server.stop()


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    authorization: str | None


class Recorder:
    """A destination nobody configured: records every request, answers 201."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                recorder.requests.append(
                    Request(self.command, self.path, self.headers.get("Authorization")))
                self.send_response(201)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = _record

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = QuietHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/rounds") -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Leader:
    """A real Courier as the daemon's loop drives it: always allowed to deliver, its
    answers collected, its api_url switchable like the live config in ZooKeeper."""

    live_url: str
    reports: list[tuple[int, str, str]] = field(default_factory=list)
    attempts: int = 0
    courier: Courier | None = None

    def api_url(self) -> str:
        self.attempts += 1
        return self.live_url

    def report(self, round_number: int, outcome: str, detail: str) -> None:
        self.reports.append((round_number, outcome, detail))

    def delivered(self, *rounds: int, timeout: float = 15) -> None:
        wait_for(lambda: {r for r, outcome, _ in self.reports if outcome == "delivered"}
                 >= set(rounds), timeout, f"rounds {rounds} delivered; reports {self.reports}")

    def attempted(self, count: int, timeout: float = 15) -> None:
        wait_for(lambda: self.attempts >= count, timeout, f"{count} delivery attempts")


def a_round(number: int) -> Aggregate:
    return Aggregate(round=number, epoch=1, leader="1", mean=20.5, count=3, min=19.0,
                     max=22.0, time=1_800_000_000.0 + number, incarnation="tls")


@pytest.fixture(autouse=True)
def token_never_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    assert TOKEN not in caplog.text


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority(tmp_path / "ca")


@pytest.fixture
def collectors(tmp_path: Path) -> Iterator[Callable[[Issued, Path], TlsCollector]]:
    """Starts HTTPS collectors; each must stop cleanly (exit 0) on SIGTERM."""
    started: list[TlsCollector] = []

    def start(issued: Issued, ca_cert: Path) -> TlsCollector:
        collector = TlsCollector(tmp_path / f"collector-{len(started)}", issued, ca_cert)
        started.append(collector)
        return collector.start()

    yield start
    assert [collector.stop() for collector in started] == [0] * len(started)


@pytest.fixture
def leaders() -> Iterator[Callable[..., Leader]]:
    """Couriers built by Courier.from_settings, as daemon.py builds them."""
    made: list[Leader] = []

    def make(live_url: str, **settings: Any) -> Leader:
        leader = Leader(live_url)
        values = {"node_id": "1", "namespace": "/tls", "api_url": live_url,
                  "api_token": TOKEN, "http_timeout": 2.0, **settings}
        leader.courier = Courier.from_settings(Settings(**values), lambda: 1,
                                               leader.api_url, leader.report)
        made.append(leader)
        return leader

    yield make
    for leader in made:
        assert leader.courier is not None
        leader.courier.stop(10)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    running = Recorder()
    yield running
    running.close()


def failures(caplog: pytest.LogCaptureFixture, pattern: str) -> list[str]:
    return [line for line in caplog.text.splitlines() if re.search(pattern, line)]


@pytest.mark.parametrize("setting", ["collector_ca_file", "zk_ca_file"])
def test_https_collector_gets_a_round_verified_against_the_configured_ca(
    ca: CertificateAuthority, collectors: Callable[[Issued, Path], TlsCollector],
    leaders: Callable[..., Leader], setting: str,
) -> None:
    collector = collectors(ca.issue("collector"), ca.cert)
    leader = leaders(collector.url(), **{setting: str(ca.cert)})
    assert leader.courier is not None
    leader.courier.add(a_round(1))
    leader.courier.add(a_round(2))
    leader.delivered(1, 2)
    assert collector.rounds() == [1, 2]


def test_collector_ca_file_wins_over_zk_ca_file(
    tmp_path: Path, ca: CertificateAuthority,
    collectors: Callable[[Issued, Path], TlsCollector], leaders: Callable[..., Leader],
) -> None:
    zookeepers_ca = CertificateAuthority(tmp_path / "zk-ca", "ZooKeeper's own CA")
    collector = collectors(ca.issue("collector"), ca.cert)
    leader = leaders(collector.url(), collector_ca_file=str(ca.cert),
                     zk_ca_file=str(zookeepers_ca.cert))
    assert leader.courier is not None
    leader.courier.add(a_round(1))
    leader.delivered(1)


def test_a_collector_from_another_ca_is_refused_and_its_round_waits_for_the_right_ca(
    tmp_path: Path, ca: CertificateAuthority, caplog: pytest.LogCaptureFixture,
    collectors: Callable[[Issued, Path], TlsCollector], leaders: Callable[..., Leader],
) -> None:
    stranger = CertificateAuthority(tmp_path / "stranger", "a stranger's CA")
    collector = collectors(stranger.issue("collector"), stranger.cert)
    leader = leaders(collector.url(), collector_ca_file=str(ca.cert))
    assert leader.courier is not None
    leader.courier.add(a_round(1))
    leader.attempted(2)
    refused = failures(caplog, r"delivery of round 1 failed: "
                               rf"{re.escape(collector.url())}: certificate not trusted "
                               r"\(unable to get local issuer certificate\), checked against "
                               rf"CA file {re.escape(str(ca.cert))}")
    assert len(refused) == 1, caplog.text
    assert leader.reports == [] and list(leader.courier.pending) == [1]
    assert collector.rounds() == []

    # The operator configures the collector's CA and restarts the node: the new leader
    # gets the outbox's pending rounds, as after any restart.
    pending = list(leader.courier.pending.values())
    leader.courier.stop(10)
    fixed = leaders(collector.url(), collector_ca_file=str(stranger.cert))
    assert fixed.courier is not None
    fixed.courier.replace(pending)
    fixed.delivered(1)
    assert collector.rounds() == [1]


def test_a_certificate_for_another_host_name_is_refused(
    ca: CertificateAuthority, caplog: pytest.LogCaptureFixture,
    collectors: Callable[[Issued, Path], TlsCollector], leaders: Callable[..., Leader],
) -> None:
    collector = collectors(ca.issue("elsewhere", ("collector.example", "10.9.9.9")), ca.cert)
    leader = leaders(collector.url(), collector_ca_file=str(ca.cert))
    assert leader.courier is not None
    leader.courier.add(a_round(1))
    leader.attempted(2)
    assert failures(caplog, rf"{re.escape(collector.url())}: certificate not trusted "
                            r"\(IP address mismatch, certificate is not valid for "
                            r"'127\.0\.0\.1'\.\)"), caplog.text
    assert leader.reports == [] and list(leader.courier.pending) == [1]


def test_an_unloadable_ca_file_is_a_retried_failure_naming_it(
    tmp_path: Path, ca: CertificateAuthority, caplog: pytest.LogCaptureFixture,
    collectors: Callable[[Issued, Path], TlsCollector], leaders: Callable[..., Leader],
) -> None:
    collector = collectors(ca.issue("collector"), ca.cert)
    missing = tmp_path / "not-yet.pem"
    leader = leaders(collector.url(), collector_ca_file=str(missing))
    assert leader.courier is not None
    leader.courier.add(a_round(1))
    leader.attempted(2)
    assert failures(caplog, rf"delivery of round 1 failed: cannot load CA file "
                            rf"{re.escape(str(missing))}: No such file or directory")
    assert leader.reports == []
    missing.write_bytes(ca.cert.read_bytes())
    leader.delivered(1)


def test_plain_http_to_the_https_port_is_retried_never_dropped(
    ca: CertificateAuthority, collectors: Callable[[Issued, Path], TlsCollector],
    leaders: Callable[..., Leader],
) -> None:
    collector = collectors(ca.issue("collector"), ca.cert)
    leader = leaders(f"http://127.0.0.1:{collector.port}/api/rounds")
    assert leader.courier is not None
    leader.courier.add(a_round(1))
    leader.attempted(3)
    assert leader.reports == [] and list(leader.courier.pending) == [1]


def test_a_silent_client_does_not_stall_the_https_collector(
    ca: CertificateAuthority, collectors: Callable[[Issued, Path], TlsCollector],
    leaders: Callable[..., Leader],
) -> None:
    """Connections that never start their handshake hold a worker each, not the
    collector's accept loop: the first delivery attempt gets through."""
    collector = collectors(ca.issue("collector"), ca.cert)
    silent = [socket.create_connection(("127.0.0.1", collector.port)) for _ in range(2)]
    try:
        leader = leaders(collector.url(), collector_ca_file=str(ca.cert))
        assert leader.courier is not None
        leader.courier.add(a_round(1))
        leader.delivered(1)
        assert leader.attempts == 1
    finally:
        for connection in silent:
            connection.close()


def test_no_token_and_no_request_go_to_a_live_api_url_on_another_origin(
    ca: CertificateAuthority, caplog: pytest.LogCaptureFixture, recorder: Recorder,
    collectors: Callable[[Issued, Path], TlsCollector], leaders: Callable[..., Leader],
) -> None:
    collector = collectors(ca.issue("collector"), ca.cert)
    leader = leaders(collector.url(), collector_ca_file=str(ca.cert))
    assert leader.courier is not None
    leader.live_url = recorder.url("/stolen")
    leader.courier.add(a_round(1))
    leader.courier.add(a_round(2))
    leader.attempted(4)
    assert recorder.requests == []
    assert leader.reports == [] and sorted(leader.courier.pending) == [1, 2]
    held = failures(caplog, "outside the write token's origins")
    assert len(held) == 1, caplog.text
    assert (f"api_url {recorder.url('/stolen')} is outside the write token's origins "
            f"(https://127.0.0.1:{collector.port}); holding rounds until an operator fixes "
            "it or adds it to api_token_origins") in held[0]
    assert not failures(caplog, "delivery of round"), "a hold is not a delivery failure"

    leader.live_url = collector.url()
    leader.delivered(1, 2)
    assert collector.rounds() == [1, 2] and recorder.requests == []

    leader.live_url = recorder.url("/stolen")
    leader.courier.add(a_round(3))
    wait_for(lambda: len(failures(caplog, "outside the write token's origins")) == 2, 15,
             "a second hold line once the refused URL comes back")
    assert recorder.requests == []


def test_api_token_origins_lets_a_listed_origin_receive_the_token(
    recorder: Recorder, leaders: Callable[..., Leader],
) -> None:
    origin = recorder.url("").rstrip("/")
    leader = leaders("https://collector.example/api/rounds",
                     api_token_origins=f"https://other.example, {origin}")
    assert leader.courier is not None
    leader.live_url = recorder.url("/listed")
    leader.courier.add(a_round(1))
    leader.delivered(1)
    assert recorder.requests == [Request("POST", "/listed", f"Bearer {TOKEN}")]


def test_without_a_token_any_live_api_url_is_used(
    recorder: Recorder, leaders: Callable[..., Leader],
) -> None:
    leader = leaders("https://collector.example/api/rounds", api_token="")
    assert leader.courier is not None
    leader.live_url = recorder.url("/anywhere")
    leader.courier.add(a_round(1))
    leader.delivered(1)
    assert recorder.requests == [Request("POST", "/anywhere", None)]


def test_a_daemon_holds_rounds_off_a_foreign_api_url_and_delivers_them_over_https(
    tmp_path: Path, zk_hosts: str, zk_namespace: str, ca: CertificateAuthority,
    recorder: Recorder, collectors: Callable[[Issued, Path], TlsCollector],
) -> None:
    """End to end: a real daemon, its api_url changed live to a stranger's server."""
    collector = collectors(ca.issue("collector"), ca.cert)
    fleet = Fleet(zk_hosts, zk_namespace, tmp_path, collector.url())
    try:
        daemon = fleet.start("1", "--collector-ca-file", str(ca.cert),
                             env={"ZK_SENSOR_API_TOKEN": TOKEN})
        wait_for(lambda: len(collector.rounds()) >= 2, 30, "rounds at the https collector")

        assert ctl(fleet, "config", "set", "api_url", recorder.url("/stolen")).returncode == 0
        daemon.wait_log(r"api_url http://127\.0\.0\.1:\d+/stolen is outside the write "
                        r"token's origins")
        wait_for(lambda: status(fleet)["outbox"]["pending"] >= 3, 30, "rounds held")
        box = status(fleet)["outbox"]
        last_held = box["oldest"] + box["pending"] - 1

        assert ctl(fleet, "config", "set", "api_url", collector.url()).returncode == 0
        wait_for(lambda: max(collector.rounds()) >= last_held, 30, "the held rounds")
        stored = collector.rounds()
        assert stored == list(range(stored[0], stored[-1] + 1)), "a round went missing"
        assert recorder.requests == []
        assert len(re.findall("outside the write token's origins", daemon.log())) == 1
        assert TOKEN not in daemon.log()
    finally:
        fleet.stop_all()


BAD_TLS_SETTINGS = [
    ("cert only", ["--cert-file", "{cert}"], {}, "cert_file and key_file go together"),
    ("key only, from the environment", [], {"ZK_COLLECTOR_KEY_FILE": "{key}"},
     "cert_file and key_file go together"),
    ("missing cert", ["--cert-file", "{dir}/nope.pem", "--key-file", "{key}"], {},
     "cannot read cert_file {dir}/nope.pem: No such file or directory"),
    ("missing key, from TOML", ["--config", "{dir}/missing-key.toml"], {},
     "cannot read key_file {dir}/nope.key: No such file or directory"),
    ("another certificate's key", ["--cert-file", "{cert}", "--key-file", "{other_key}"], {},
     "are not a PEM certificate and its key"),
    ("not PEM", ["--cert-file", "{dir}/garbage.pem", "--key-file", "{key}"], {},
     "are not a PEM certificate and its key"),
]


@pytest.mark.parametrize(("argv", "env", "message"),
                         [case[1:] for case in BAD_TLS_SETTINGS],
                         ids=[case[0] for case in BAD_TLS_SETTINGS])
def test_bad_tls_settings_stop_the_collector_with_one_line(
    tmp_path: Path, ca: CertificateAuthority, argv: list[str], env: dict[str, str],
    message: str,
) -> None:
    issued, other = ca.issue("collector"), ca.issue("other")
    (tmp_path / "garbage.pem").write_text("not a certificate\n")
    (tmp_path / "missing-key.toml").write_text(
        f'cert_file = "{issued.cert}"\nkey_file = "{tmp_path}/nope.key"\n')
    names = {"cert": issued.cert, "key": issued.key, "other_key": other.key, "dir": tmp_path}
    result = subprocess.run(
        [str(BIN / "zk-collector"), "--listen", "127.0.0.1:0", "--db",
         str(tmp_path / "db.sqlite3"), *(arg.format(**names) for arg in argv)],
        capture_output=True, text=True, timeout=30,
        env={**clean_env(), **{k: v.format(**names) for k, v in env.items()}})
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("zk-collector: "), result.stderr
    assert message.format(**names) in lines[0]
    assert not (tmp_path / "db.sqlite3").exists()

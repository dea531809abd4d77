"""The courier's HTTP through requests (node/sender.py) where requests' defaults would
differ from what a user was promised: no redirect followed, no proxy or certifi bundle
from the environment, one kept-alive connection, one timeout per attempt.

Small local HTTP(S) servers stand for collectors; a real Courier makes the attempts.
"""

from __future__ import annotations

import contextlib
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from zk_sensor.fleet.aggregate import Aggregate
from zk_sensor.node.delivery import Courier
from zk_sensor.testing.httpserver import QuietHTTPServer
from zk_sensor.testing.pki import CertificateAuthority, Issued

TOKEN = "sender-test-s3cret"
TIMEOUT = 1.0

Answer = tuple[int, dict[str, str], bytes]


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    authorization: str | None
    port: int


@dataclass
class Server:
    """An HTTP/1.1 server (keep-alive) that records each request and answers with
    `answer(path)`; HTTPS when given a certificate."""

    answer: Callable[[str], Answer] = lambda path: (201, {}, b'{"outcome": "stored"}')
    issued: Issued | None = None
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                server.seen.append(Seen(self.command, self.path,
                                        self.headers.get("Authorization"),
                                        self.client_address[1]))
                status, headers, body = server.answer(self.path)
                if status == 0:  # hang up without an answer
                    self.close_connection = True
                    return
                self.send_response(status)
                for name, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(name, value)
                self.end_headers()
                # A client that keeps only the start of a long reply hangs up midway.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(body)

            do_GET = do_POST = _serve

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.http = QuietHTTPServer(("127.0.0.1", 0), Handler)
        if self.issued is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.issued.cert, self.issued.key)
            self.http.socket = context.wrap_socket(self.http.socket, server_side=True)
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/api/rounds") -> str:
        scheme = "https" if self.issued is not None else "http"
        return f"{scheme}://127.0.0.1:{self.http.server_address[1]}{path}"

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def servers() -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(**kwargs: Any) -> Server:
        started.append(Server(**kwargs))
        return started[-1]

    yield start
    for server in started:
        server.close()


@pytest.fixture
def couriers() -> Iterator[Callable[..., Courier]]:
    made: list[Courier] = []

    def make(url: str, ca_file: str = "", token: str = TOKEN) -> Courier:
        courier = Courier(TIMEOUT, "/sender", token, "1", lambda: 1, lambda: url,
                          lambda *answer: None, token_origins=(url.rsplit("/", 2)[0],),
                          ca_file=ca_file)
        made.append(courier)
        return courier

    yield make
    for courier in made:
        courier.sender.close()


def a_round(number: int) -> Aggregate:
    return Aggregate(round=number, epoch=1, leader="1", mean=20.5, count=3, min=19.0,
                     max=22.0, time=1_800_000_000.0 + number, incarnation="sender")


def test_a_redirect_is_not_followed_and_is_retried_at_the_same_collector(
        servers: Callable[..., Server], couriers: Callable[..., Courier]) -> None:
    elsewhere = servers()
    redirecting = servers(answer=lambda path: (307, {"Location": elsewhere.url("/x")}, b""))
    courier = couriers(redirecting.url())
    assert courier.attempt(a_round(1), redirecting.url()) == ("retry", "HTTP 307", False)
    assert elsewhere.seen == [] and len(redirecting.seen) == 1


def test_one_kept_alive_connection_carries_the_rounds_and_the_token(
        servers: Callable[..., Server], couriers: Callable[..., Courier]) -> None:
    collector = servers()
    courier = couriers(collector.url())
    for number in (1, 2, 3):
        outcome, detail, _ = courier.attempt(a_round(number), collector.url())
        assert (outcome, detail) == ("delivered", 'HTTP 201 {"outcome": "stored"}')
    assert [(s.method, s.path, s.authorization) for s in collector.seen] == \
        [("POST", "/api/rounds", f"Bearer {TOKEN}")] * 3
    assert len({s.port for s in collector.seen}) == 1, "one connection"


def test_a_kept_connection_closed_at_the_next_request_is_resent_once(
        servers: Callable[..., Server], couriers: Callable[..., Courier]) -> None:
    """The collector closes its idle connection just as the next round goes out."""
    answers: Iterator[Answer] = iter([(201, {}, b"first"), (0, {}, b""), (201, {}, b"resent")])
    collector = servers(answer=lambda path: next(answers))
    courier = couriers(collector.url())
    assert courier.attempt(a_round(1), collector.url())[1] == "HTTP 201 first"
    assert courier.attempt(a_round(2), collector.url())[1] == "HTTP 201 resent"
    assert len({s.port for s in collector.seen}) == 2


def test_a_long_answer_is_cut_and_the_next_round_still_goes(
        servers: Callable[..., Server], couriers: Callable[..., Courier]) -> None:
    collector = servers(answer=lambda path: (503, {}, b"x" * 1_000_000))
    courier = couriers(collector.url())
    outcome, detail, elsewhere = courier.attempt(a_round(1), collector.url())
    assert (outcome, detail, elsewhere) == ("retry", "HTTP 503 " + "x" * 200, True)
    assert courier.attempt(a_round(1), collector.url())[0] == "retry"
    assert len(collector.seen) == 2


def test_a_hung_collector_costs_one_timeout(
        servers: Callable[..., Server], couriers: Callable[..., Courier]) -> None:
    release = threading.Event()

    def hang(path: str) -> Answer:
        release.wait(10)
        return 201, {}, b""

    collector = servers(answer=hang)
    courier = couriers(collector.url())
    started = time.monotonic()
    try:
        outcome, detail, elsewhere = courier.attempt(a_round(1), collector.url())
    finally:
        release.set()
    assert (outcome, detail, elsewhere) == ("retry", "TimeoutError: timed out", True)
    assert 0.9 * TIMEOUT <= time.monotonic() - started < 1.8 * TIMEOUT
    assert len(collector.seen) == 1


def test_proxy_settings_in_the_environment_are_ignored(
        servers: Callable[..., Server], couriers: Callable[..., Courier],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """requests would send the round and the token through HTTP_PROXY."""
    proxy, collector = servers(), servers()
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, proxy.url(""))
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    courier = couriers(collector.url())
    assert courier.attempt(a_round(1), collector.url())[0] == "delivered"
    assert proxy.seen == [] and len(collector.seen) == 1


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority(tmp_path / "ca")


def test_without_a_ca_file_the_systems_cas_are_trusted_not_certifis(
        tmp_path: Path, ca: CertificateAuthority, servers: Callable[..., Server],
        couriers: Callable[..., Courier], monkeypatch: pytest.MonkeyPatch) -> None:
    """SSL_CERT_FILE stands for the system's store: requests would check certifi's."""
    collector = servers(issued=ca.issue("collector"))
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.cert))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "nowhere.pem"))
    courier = couriers(collector.url())
    assert courier.attempt(a_round(1), collector.url())[0] == "delivered"


def test_with_a_ca_file_a_collector_the_system_trusts_is_refused(
        tmp_path: Path, ca: CertificateAuthority, servers: Callable[..., Server],
        couriers: Callable[..., Courier], monkeypatch: pytest.MonkeyPatch) -> None:
    """collector_ca_file is the only trust: neither the system's CAs nor certifi's."""
    system = CertificateAuthority(tmp_path / "system", "a CA in the system's store")
    collector = servers(issued=system.issue("collector"))
    monkeypatch.setenv("SSL_CERT_FILE", str(system.cert))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(system.cert))
    courier = couriers(collector.url(), ca_file=str(ca.cert))
    outcome, detail, elsewhere = courier.attempt(a_round(1), collector.url())
    assert (outcome, elsewhere) == ("retry", True)
    assert detail == (f"{collector.url()}: certificate not trusted (unable to get local "
                      f"issuer certificate), checked against CA file {ca.cert}")
    assert collector.seen == []
    assert courier.sender.tls is not None
    assert len(courier.sender.tls.get_ca_certs()) == 1, "the CA file's certificate alone"


def test_a_node_that_has_not_delivered_has_not_loaded_requests() -> None:
    """A follower's memory: the daemon and an idle courier leave requests unimported."""
    script = (
        "import sys\n"
        "from zk_sensor.node import daemon\n"
        "from zk_sensor.node.delivery import Courier\n"
        "from zk_sensor.node.settings import Settings\n"
        "Courier.from_settings(Settings(node_id='1'), lambda: 1, lambda: '', print)\n"
        "print(sorted(m for m in ('requests', 'urllib3', 'charset_normalizer') "
        "if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout == "[]\n", result.stderr

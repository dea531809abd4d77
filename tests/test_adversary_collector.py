"""zk-collector against hostile clients, over real HTTP to real collector processes:
anonymous hosts and token holders forging rounds, raising the fence, claiming round
numbers, padding the summary; oversized, unbounded and poisoned bodies; slow clients;
and the fence against a real ZooKeeper server."""

import base64
import contextlib
import hashlib
import http.client
import json
import re
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kazoo.client import KazooClient

from zk_sensor.node.delivery import classify
from zk_sensor.testing.collector import CollectorProcess as Collector
from zk_sensor.testing.fleet import Fleet, wait_for
from zk_sensor.testing.pki import CertificateAuthority
from zk_sensor.testing.ports import free_port

TOP_EPOCH = 2**63 - 1
TOKENS = {"1": "token-of-node-1", "2": "token-of-node-2"}
SHARED_TOKEN = "the-shared-token"


def private_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def tokens_file(tmp_path: Path) -> Path:
    lines = "# node id, token\n\n" + "".join(f"{n} {t}\n" for n, t in TOKENS.items())
    return private_file(tmp_path / "tokens", lines)


def collector_in(tmp_path: Path, *args: str, host: str = "127.0.0.1") -> Collector:
    return Collector(tmp_path / "rounds.sqlite3", tmp_path / "collector.log", args=args,
                     host=host)


def launch(tmp_path: Path, *args: str, listen: str = "127.0.0.1:0") -> subprocess.Popen[bytes]:
    host, port = listen.rsplit(":", 1)
    return collector_in(tmp_path, *args, host=host).launch(int(port))


def exit_status(process: subprocess.Popen[bytes]) -> int | None:
    """How a collector that must refuse to start exited; None (and killed) if it runs."""
    try:
        return process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return None


def start(tmp_path: Path, *args: str, listen: str = "127.0.0.1:0") -> Collector:
    host, port = listen.rsplit(":", 1)
    return collector_in(tmp_path, *args, host=host).start_on(int(port))


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[Collector]:
    """Per-node tokens and a shared one, no fence: what a token alone protects."""
    shared = private_file(tmp_path / "token", SHARED_TOKEN + "\n")
    running = start(tmp_path, "--tokens-file", str(tokens_file(tmp_path)),
                    "--token-file", str(shared))
    yield running
    running.stop()


@pytest.fixture
def open_demo(tmp_path: Path) -> Iterator[Collector]:
    running = start(tmp_path)
    yield running
    running.stop()


def request(collector: Collector, method: str, path: str, body: Any = None,
            token: str | None = None, headers: dict[str, str] | None = None,
            source: str = "127.0.0.1") -> tuple[int, dict[str, str], Any]:
    connection = http.client.HTTPConnection("127.0.0.1", collector.port, timeout=20,
                                            source_address=(source, 0))
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    raw = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    if raw is not None:
        sent.setdefault("Content-Type", "application/json")
    try:
        connection.request(method, path, raw, sent)
        reply = connection.getresponse()
        data = reply.read()
    finally:
        connection.close()
    answer = dict(reply.getheaders())
    parsed = json.loads(data) if answer.get("Content-Type") == "application/json" else data
    return reply.status, answer, parsed


def post(collector: Collector, payload: Any, token: str | None = None) -> tuple[int, Any]:
    status, _, body = request(collector, "POST", "/api/rounds", payload, token)
    return status, body


def a_round(number: int, epoch: int = 1, fleet: str = "/f", leader: str = "1",
            incarnation: str | None = None, mean: float = 50.0) -> dict[str, Any]:
    payload = {"mean": mean, "count": 2, "min": mean - 1, "max": mean + 1, "round": number,
               "epoch": epoch, "leader": leader, "fleet": fleet}
    return payload if incarnation is None else {**payload, "incarnation": incarnation}


def rounds(collector: Collector) -> list[dict[str, Any]]:
    return request(collector, "GET", "/api/rounds?limit=1000")[2]["rounds"]


def metrics(collector: Collector) -> str:
    return request(collector, "GET", "/metrics")[2].decode()


# --- Writes closed by default, per-node credentials ----------------------------------

def test_refuses_to_listen_off_loopback_with_open_writes(tmp_path: Path) -> None:
    process = launch(tmp_path, listen="0.0.0.0:0")
    assert exit_status(process) == 2
    said = (tmp_path / "collector.log").read_text().strip().splitlines()
    assert len(said) == 1 and "insecure_open_writes" in said[0] and "token_file" in said[0]
    running = start(tmp_path, "--insecure-open-writes", listen="0.0.0.0:0")
    try:
        assert post(running, a_round(1))[0] == 201
    finally:
        running.stop()


@pytest.mark.parametrize("setting", ["--tokens-file", "--token-file"])
@pytest.mark.parametrize("mode", [0o640, 0o604])
def test_a_token_file_others_can_read_is_refused(tmp_path: Path, setting: str,
                                                 mode: int) -> None:
    secret = private_file(tmp_path / "secret", "1 abc\n" if "tokens" in setting else "abc\n",
                          mode)
    process = launch(tmp_path, setting, str(secret))
    assert exit_status(process) == 2
    said = (tmp_path / "collector.log").read_text().strip().splitlines()
    assert len(said) == 1 and f"chmod 600 {secret}" in said[0]


def test_anonymous_hosts_cannot_write_anything(guarded: Collector) -> None:
    for attack in (a_round(5, epoch=TOP_EPOCH), a_round(10**6), a_round(1, fleet="/junk-1")):
        assert post(guarded, attack)[0] == 401
        assert post(guarded, attack, token="guess")[0] == 401
    for query in ("dato=1", f"dato=1&round=9&epoch={TOP_EPOCH}&fleet=/f"):
        status, answer, _ = request(guarded, "GET", f"/nuevo?{query}")
        assert status == 401 and answer["WWW-Authenticate"].startswith("Bearer")
    assert rounds(guarded) == []
    assert post(guarded, a_round(5, epoch=1), token=TOKENS["1"])[0] == 201
    assert request(guarded, "GET", "/api/summary")[2]["fleets"][0]["fleet"] == "/f"


def test_a_node_token_cannot_deliver_as_another_leader(guarded: Collector) -> None:
    status, body = post(guarded, a_round(3, leader="1"), token=TOKENS["2"])
    assert status == 403 and "'2'" in body["error"] and "\n" not in body["error"]
    assert post(guarded, a_round(3, leader="2"), token=TOKENS["2"])[0] == 201
    assert post(guarded, a_round(4, leader="1"), token=SHARED_TOKEN)[0] == 201
    assert 'zk_collector_forbidden_total{reason="leader"} 1.0' in metrics(guarded)


def test_a_token_holder_can_still_raise_the_fence_without_zookeeper(guarded: Collector) -> None:
    """What the threat model (docs/explanation/threat-model.md) says a token alone
    cannot prevent: the fence needs ZooKeeper."""
    assert post(guarded, a_round(1, epoch=TOP_EPOCH), token=TOKENS["1"])[0] == 201
    assert post(guarded, a_round(2, epoch=5), token=TOKENS["1"])[0] == 409


def test_get_writes_need_a_token_or_the_seed_setting(tmp_path: Path) -> None:
    running = start(tmp_path, "--insecure-open-writes", listen="0.0.0.0:0")
    try:
        status, _, body = request(running, "GET", "/nuevo?dato=1")
        assert status == 403 and "seed_get_writes" in body["error"]
        assert rounds(running) == []
    finally:
        running.stop()


def test_seed_get_writes_take_only_keyless_rounds_anonymously(tmp_path: Path) -> None:
    running = start(tmp_path, "--tokens-file", str(tokens_file(tmp_path)), "--seed-get-writes")
    try:
        assert request(running, "GET", "/nuevo?dato=7")[0] == 201
        forged = f"/nuevo?dato=1&round=9&epoch={TOP_EPOCH}&fleet=/f"
        assert request(running, "GET", forged)[0] == 401
        assert request(running, "GET", forged, token=TOKENS["1"])[0] == 201
        assert post(running, a_round(1))[0] == 401
        assert [r["mean"] for r in rounds(running)] == [1.0, 7.0]
    finally:
        running.stop()


def test_a_cross_site_browser_request_cannot_write_even_to_the_demo(
        open_demo: Collector) -> None:
    for site in ("cross-site", "same-site"):
        status, _, body = request(open_demo, "GET", "/nuevo?dato=1",
                                  headers={"Sec-Fetch-Site": site})
        assert status == 403 and site in body["error"]
    assert request(open_demo, "GET", "/nuevo?dato=2")[0] == 201
    assert [r["mean"] for r in rounds(open_demo)] == [2.0]


# --- 401s logged (rate-limited) and counted ------------------------------------------

def test_refused_tokens_are_counted_and_logged_once_a_minute(guarded: Collector) -> None:
    for _ in range(5):
        assert post(guarded, a_round(1), token="wrong-token-XYZ")[0] == 401
    for _ in range(3):
        assert post(guarded, a_round(1))[0] == 401
    assert request(guarded, "GET", "/nuevo?dato=1", source="127.0.0.3")[0] == 401
    text = metrics(guarded)
    assert 'zk_collector_unauthorized_total{reason="bad_token"} 5.0' in text
    assert 'zk_collector_unauthorized_total{reason="missing_token"} 4.0' in text
    log = guarded.log()
    assert len(re.findall(r"401 to 127\.0\.0\.1:", log)) == 1
    assert len(re.findall(r"401 to 127\.0\.0\.3:", log)) == 1
    assert "wrong-token-XYZ" not in log and TOKENS["1"] not in log


# --- The summary cannot be padded without bound --------------------------------------

def test_the_summary_lists_at_most_100_fleets(open_demo: Collector) -> None:
    for number in range(130):
        assert post(open_demo, a_round(1, fleet=f"/fleet-{number:03d}"))[0] == 201
    summary = request(open_demo, "GET", "/api/summary")[2]
    assert len(summary["fleets"]) == 100 and summary["truncated"] == 30
    assert summary["rounds"] == 130
    assert {f["fleet"] for f in summary["fleets"]} == {f"/fleet-{n:03d}" for n in range(30, 130)}
    assert len(summary["epochs"]) == 100


def test_fleets_setting_takes_only_its_fleets(tmp_path: Path) -> None:
    running = start(tmp_path, "--fleets", "/a,/b")
    try:
        status, body = post(running, a_round(1, fleet="/junk"))
        assert status == 403 and "fleets" in body["error"]
        assert post(running, a_round(1, fleet="/b"))[0] == 201
        summary = request(running, "GET", "/api/summary")[2]
        assert [f["fleet"] for f in summary["fleets"]] == ["/b"]
    finally:
        running.stop()


# --- Bodies: declared length, bounded reads, total decoding --------------------------

def raw_exchange(collector: Collector, head: bytes, body_stream: int = 0) -> bytes:
    """Sends `head` and returns the start of the answer, which must come before any body;
    then tries to stream `body_stream` bytes of body, as fast as the server takes them."""
    with socket.create_connection(("127.0.0.1", collector.port), timeout=10) as sock:
        sock.sendall(head)
        try:
            answer = sock.recv(4096)
        except OSError:
            answer = b""
        chunk = b"x" * 65536
        try:
            for _ in range(body_stream // len(chunk)):
                sock.sendall(chunk)
        except OSError:
            pass
    return answer


def rss_mib(collector: Collector) -> float:
    status = Path(f"/proc/{collector.process.pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]


@pytest.mark.parametrize("length", ["-1", "+5", "0x10", "1e3", "99999999999999999999"])
def test_a_bad_content_length_is_refused_before_the_body(open_demo: Collector,
                                                         length: str) -> None:
    head = (f"POST /api/rounds HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()
    before = rss_mib(open_demo)
    answer = raw_exchange(open_demo, head, body_stream=64 * 1024 * 1024)
    assert answer.startswith(b"HTTP/1.1 4"), answer[:80]
    assert rss_mib(open_demo) < before + 20
    assert rounds(open_demo) == []


def test_a_write_without_a_length_is_refused(open_demo: Collector) -> None:
    head = (b"POST /api/rounds HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    answer = raw_exchange(open_demo, head, body_stream=8 * 1024 * 1024)
    assert answer.startswith(b"HTTP/1.1 411"), answer[:80]


def test_headers_are_capped(open_demo: Collector) -> None:
    padding = b"".join(b"X-Pad-%d: %s\r\n" % (n, b"a" * 1000) for n in range(64))
    answer = raw_exchange(open_demo, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + padding
                          + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 4"), answer[:80]
    assert request(open_demo, "GET", "/healthz")[0] == 200


def deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize("body", [
    deep(100_000),
    b'{"mean": 1, "round": 1, "epoch": ' + b"9" * 5000 + b"}",
    b'{"mean": ' + b"1" * 5000 + b', "round": 1, "epoch": 1}',
    b'{"mean": 1, "round": 1, "epoch": 1, "leader": ' + deep(50) + b"}",
])
def test_poisoned_json_is_a_400_not_a_500(open_demo: Collector, body: bytes) -> None:
    status, _, answer = request(open_demo, "POST", "/api/rounds", body)
    assert status in (400, 413) and "\n" not in answer["error"]
    assert request(open_demo, "GET", "/healthz")[0] == 200


# --- Slow clients ----------------------------------------------------------------------

class Trickler:
    """A client that sends a request one header byte a second, never finishing it;
    `cut_after` is when the collector closed the connection."""

    def __init__(self, port: int, source: str) -> None:
        self.sock = socket.socket()
        self.sock.bind((source, 0))
        self.sock.connect(("127.0.0.1", port))
        self.sock.sendall(b"POST /api/rounds HTTP/1.1\r\nHost: x\r\n")
        self.sock.settimeout(1.0)
        self.started = time.monotonic()
        self.cut_after: float | None = None
        self.closing = False
        self.thread = threading.Thread(target=self.trickle, daemon=True)
        self.thread.start()

    def trickle(self) -> None:
        while not self.closing:
            try:
                self.sock.recv(4096)
                break  # the end of the stream, or an answer: either way, cut off
            except TimeoutError:
                try:
                    self.sock.sendall(b"X")
                except OSError:
                    break
            except OSError:
                break
        self.cut_after = time.monotonic() - self.started

    def close(self) -> None:
        self.closing = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def healthz_latencies(collector: Collector, seconds: float) -> list[float]:
    latencies = []
    ends = time.monotonic() + seconds
    while time.monotonic() < ends:
        began = time.monotonic()
        assert request(collector, "GET", "/healthz")[0] == 200
        latencies.append(time.monotonic() - began)
        time.sleep(0.2)
    return latencies


def test_slow_and_idle_clients_cannot_starve_healthz(open_demo: Collector) -> None:
    idle = [socket.create_connection(("127.0.0.1", open_demo.port)) for _ in range(30)]
    slow = ([Trickler(open_demo.port, f"127.0.0.{10 + n}") for n in range(6)]
            + [Trickler(open_demo.port, "127.0.0.2") for _ in range(12)])
    try:
        # Over 4 s every trickler holds a worker long before its 10 s deadline.
        assert max(healthz_latencies(open_demo, 4)) < 1.0
    finally:
        for client in slow:
            client.close()
        for sock in idle:
            sock.close()


def test_a_trickling_request_is_cut_at_its_deadline(open_demo: Collector) -> None:
    client = Trickler(open_demo.port, "127.0.0.2")
    try:
        cut = wait_for(lambda: client.cut_after, 20, "the collector to cut the trickler")
        assert 9 <= cut <= 14
    finally:
        client.close()


# --- Security headers ------------------------------------------------------------------

def test_every_answer_carries_the_security_headers(open_demo: Collector) -> None:
    for path in ("/", "/api/summary", "/healthz", "/nope"):
        _, headers, _ = request(open_demo, "GET", path)
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "no-referrer"
        assert headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert "Strict-Transport-Security" not in headers


def test_https_answers_carry_hsts(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path / "ca")
    issued = ca.issue("collector")
    running = start(tmp_path, "--cert-file", str(issued.cert), "--key-file", str(issued.key))
    try:
        assert running.scheme == "https"
        context = ssl.create_default_context(cafile=str(ca.cert))
        connection = http.client.HTTPSConnection("127.0.0.1", running.port, timeout=10,
                                                 context=context)
        connection.request("GET", "/healthz")
        reply = connection.getresponse()
        assert reply.status == 200
        assert reply.getheader("Strict-Transport-Security", "").startswith("max-age=")
        connection.close()
    finally:
        running.stop()


def test_the_page_policy_allows_its_own_script_and_nothing_else(open_demo: Collector) -> None:
    _, headers, page = request(open_demo, "GET", "/")
    policy = headers["Content-Security-Policy"]
    assert "'unsafe-inline'" not in policy and "default-src 'none'" in policy
    script = re.search(rb"<script>(.*?)</script>", page, re.DOTALL).group(1)  # type: ignore[union-attr]
    digest = base64.b64encode(hashlib.sha256(script).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in policy


# --- Hypothesis: nested structures and huge numbers never make a 500 -----------------

@pytest.fixture(scope="module")
def shared_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    running = start(tmp_path_factory.mktemp("adversary-hypothesis"))
    yield running
    running.stop()


JSON_LEAVES = (st.none() | st.booleans() | st.text(max_size=20)
               | st.integers(-(10**40), 10**40) | st.floats(allow_nan=False))
NESTED = st.recursive(JSON_LEAVES, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=30)
HUGE = st.integers(4000, 6000).map(lambda n: "9" * n)


def with_field(field: str, value: str) -> bytes:
    base = {"mean": 1.0, "round": 1, "epoch": 1, "fleet": "/h", "count": 1}
    return json.dumps({**base, field: "@"}).replace('"@"', value).encode()


BODIES = (NESTED.map(lambda value: json.dumps(value).encode())
          | st.builds(with_field, st.sampled_from(["mean", "round", "epoch", "count", "min",
                                                   "max", "time", "fleet", "leader"]),
                      HUGE | NESTED.map(json.dumps) | st.integers(1, 200).map(
                          lambda d: "[" * d + "]" * d))
          | st.integers(50, 3000).map(deep))


@settings(max_examples=120, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])
@given(body=BODIES)
def test_any_body_gets_an_answer_below_500(shared_demo: Collector, body: bytes) -> None:
    status, _, answer = request(shared_demo, "POST", "/api/rounds", body)
    assert status in (200, 201, 400, 409, 413)
    if status >= 400:
        assert "\n" not in answer["error"]


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(field=st.sampled_from(["dato", "round", "epoch", "fleet", "incarnation"]),
       value=HUGE | NESTED.map(json.dumps))
def test_any_seed_query_gets_an_answer_below_500(shared_demo: Collector, field: str,
                                                 value: str) -> None:
    query = {"dato": "1", "round": "1", "epoch": "1", "fleet": "/h", field: value}
    status, _, _ = request(shared_demo, "GET", "/nuevo?" + urlencode(query))
    assert status in (200, 201, 400, 409, 413, 414)


# --- The fence against ZooKeeper ------------------------------------------------------

def test_a_403_keeps_the_round_for_a_retry() -> None:
    """The fence's refusal is an answer the daemon retries, never one it drops."""
    assert classify(403) == "retry" and classify(503) == "retry"


def simulate_fleet(zk: KazooClient, namespace: str, epoch: int, holder: str,
                   barrier_round: int, incarnation: str = "inc-a") -> None:
    """The znodes a fleet's leader writes, as it writes them (coordination.py)."""
    values = {"epoch": {"epoch": epoch, "leader": holder},
              "barrier": {"round": barrier_round, "epoch": epoch, "leader": holder,
                          "released_at": time.time(), "last": None}}
    for name, value in values.items():
        zk.ensure_path(f"{namespace}/{name}")
        zk.set(f"{namespace}/{name}", json.dumps(value).encode())
    zk.ensure_path(f"{namespace}/incarnation")
    zk.set(f"{namespace}/incarnation", incarnation.encode())


@pytest.fixture
def fenced(tmp_path: Path, zk_hosts: str, zk_namespace: str,
           make_zk: Any) -> Iterator[tuple[Collector, KazooClient, str]]:
    zk = make_zk(zk_hosts)
    simulate_fleet(zk, zk_namespace, epoch=3, holder="1", barrier_round=10)
    shared = private_file(tmp_path / "token", SHARED_TOKEN + "\n")
    running = start(tmp_path, "--tokens-file", str(tokens_file(tmp_path)), "--token-file",
                    str(shared), "--fence-zookeeper", zk_hosts, "--fleets", zk_namespace)
    yield running, zk, zk_namespace
    running.stop()


def test_the_fence_takes_only_what_the_leader_may_deliver(
        fenced: tuple[Collector, KazooClient, str]) -> None:
    collector, zk, fleet = fenced
    one = TOKENS["1"]
    forgeries = [
        (a_round(9, epoch=TOP_EPOCH, fleet=fleet), one, "ahead"),
        (a_round(10, epoch=3, fleet=fleet), one, "not released"),
        (a_round(10**6, epoch=3, fleet=fleet), one, "not released"),
        (a_round(9, epoch=3, fleet=fleet, incarnation="inc-b"), one, "incarnation"),
        (a_round(9, epoch=3, fleet=fleet, leader="2"), TOKENS["2"], "not the leader"),
        (a_round(9, epoch=4, fleet=fleet), SHARED_TOKEN, "ahead"),
        (a_round(9, epoch=3, fleet="/elsewhere"), one, "fleets"),
    ]
    for payload, token, why in forgeries:
        status, body = post(collector, payload, token)
        assert status == 403 and why in body["error"], (payload, body)
    status, _, body = request(collector, "GET", f"/nuevo?dato=1&round=11&epoch=3&fleet={fleet}",
                              token=one)
    assert status == 403 and "not released" in body["error"]
    assert rounds(collector) == []
    assert post(collector, a_round(9, epoch=3, fleet=fleet, incarnation="inc-a"), one)[0] == 201
    assert post(collector, a_round(8, epoch=3, fleet=fleet, incarnation="inc-a"), one)[0] == 201
    shared = a_round(7, epoch=3, fleet=fleet, leader="9", incarnation="inc-a")
    assert post(collector, shared, SHARED_TOKEN)[0] == 201
    assert 'zk_collector_forbidden_total{reason="fence"} 7.0' in metrics(collector)
    assert "403 to 127.0.0.1" in collector.log() and one not in collector.log()

    simulate_fleet(zk, fleet, epoch=4, holder="2", barrier_round=12)
    status, body = post(collector, a_round(10, epoch=4, fleet=fleet), one)
    assert status == 403 and "not the leader" in body["error"]
    inherited = a_round(10, epoch=4, fleet=fleet, leader="2", incarnation="inc-a")
    assert post(collector, inherited, TOKENS["2"])[0] == 201


def test_the_fence_answers_503_when_zookeeper_is_out_of_reach(tmp_path: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"
    running = start(tmp_path, "--tokens-file", str(tokens_file(tmp_path)),
                    "--fence-zookeeper", dead, "--fleets", "/f")
    try:
        status, headers, body = request(running, "POST", "/api/rounds", a_round(1),
                                        TOKENS["1"])
        assert status == 503 and headers["Retry-After"] and "ZooKeeper" in body["error"]
        assert rounds(running) == []
    finally:
        running.stop()


def test_fence_needs_its_fleets(tmp_path: Path) -> None:
    process = launch(tmp_path, "--fence-zookeeper", "127.0.0.1:2181")
    assert exit_status(process) == 2
    said = (tmp_path / "collector.log").read_text().strip().splitlines()
    assert len(said) == 1 and "fleets" in said[0]


def test_a_real_fleet_delivers_through_the_fence_and_forgeries_do_not_unseat_it(
        tmp_path: Path, zk_hosts: str, zk_namespace: str) -> None:
    collector = start(tmp_path, "--tokens-file", str(tokens_file(tmp_path)),
                      "--fence-zookeeper", zk_hosts, "--fleets", zk_namespace)
    fleet = Fleet(zk_hosts, zk_namespace, tmp_path,
                  f"http://127.0.0.1:{collector.port}/api/rounds")
    try:
        for node, token in TOKENS.items():
            fleet.start(node, env={"ZK_SENSOR_API_TOKEN": token})
        newest = wait_for(lambda: rounds(collector)[:1], 60, "the fleet's first rounds")[0]
        leader = newest["leader"]
        follower = next(node for node in TOKENS if node != leader)
        forgeries = [(a_round(newest["round"] + 1, newest["epoch"], zk_namespace, follower),
                      TOKENS[follower]),
                     (a_round(newest["round"] + 100, newest["epoch"], zk_namespace, leader),
                      TOKENS[leader]),
                     (a_round(newest["round"] + 1, TOP_EPOCH, zk_namespace, leader),
                      TOKENS[leader])]
        for payload, token in forgeries:
            assert post(collector, payload, token)[0] == 403
        wait_for(lambda: rounds(collector)[0]["round"] >= newest["round"] + 5, 60,
                 "the leader to go on delivering")
        stored = rounds(collector)
        assert {r["leader"] for r in stored} == {leader}
        assert newest["round"] + 100 not in {r["round"] for r in stored}
        assert "fenced" not in fleet.daemons[leader].log()
    finally:
        fleet.stop_all()
        collector.stop()

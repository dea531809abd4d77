"""The fault matrix of issue 5, on loopback: real daemons, a real ZooKeeper and a real
zk-collector; a fault is injected, the fleet recovers, the collector catches up, and one
helper (`check_rounds`, in zk_sensor.testing.faults) checks what the collector kept:

(a) no round number missing between the first and the last stored round,
(b) none stored twice,
(c) epochs never go down as round numbers go up (fencing),
(d) the largest gap in arrival time between consecutive rounds stays below a bound stated
    per fault (the constants below and in zk_sensor.testing.faults, each with its
    reasoning).

Each test prints one line, `FAULT <name>: rounds a..b, lost 0, duplicated 0, max gap x s`,
so `pytest -s` shows the figures for the fault matrix
(docs/explanation/reliability.md). The lab faults (network cuts,
power) are at the end of test_lab.py and use the same helper.
"""

from __future__ import annotations

import http.client
import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from zk_sensor.testing.collector import (
    CollectorProcess,
    collector_replies,
    fetch_rounds,
    restart_collector,
)
from zk_sensor.testing.faults import (
    BACKOFF_FIRST_S,
    BACKOFF_MAX_S,
    CATCH_UP_ROUNDS,
    HTTP_TIMEOUT_S,
    PERIOD_S,
    SESSION_TIMEOUT_S,
    SIGKILL_GAP_S,
    SIGSTOP_GAP_S,
    SIGTERM_GAP_S,
    SLACK_S,
    STEADY_ROUNDS,
    ZK_FOLLOWER_GAP_S,
    ZK_LEADER_GAP_S,
    ZK_RESTART_S,
    RoundsRecord,
    assert_fenced,
    check_rounds,
    wait_caught_up,
    wait_full_rounds,
)
from zk_sensor.testing.fleet import Fleet, status
from zk_sensor.testing.httpserver import QuietHTTPServer
from zk_sensor.testing.zookeeper import ZkEnsemble, ZkServer

# --- fault durations (deliberate waits, not synchronisation)
# SIGSTOP of the leader: twice the session timeout, so its session surely expires.
PAUSE_S = 2 * SESSION_TIMEOUT_S
COLLECTOR_DOWN_S = 60.0
COLLECTOR_500_S = 10.0
COLLECTOR_HANG_S = 10.0
QUORUM_LOST_S = 30.0

# --- bounds on the largest gap between the arrivals of consecutive rounds (those of the
# leader's and one ZooKeeper server's faults are in zk_sensor.testing.faults)
# Collector down: the outage itself, plus at most one backoff interval before the next
# attempt, plus that attempt's timeout and the collector's own restart.
COLLECTOR_DOWN_GAP_S = COLLECTOR_DOWN_S + BACKOFF_MAX_S + HTTP_TIMEOUT_S + SLACK_S
# 500s: the failing span plus at most one backoff interval.
COLLECTOR_500_GAP_S = COLLECTOR_500_S + BACKOFF_MAX_S + SLACK_S
# Hanging: as 500s, plus the attempt in flight when it stops hanging (it times out).
COLLECTOR_HANG_GAP_S = COLLECTOR_HANG_S + HTTP_TIMEOUT_S + BACKOFF_MAX_S + SLACK_S
# Quorum lost: the outage, two JVMs started again and electing, reconnection within the
# session timeout, a few periods.
QUORUM_LOST_GAP_S = QUORUM_LOST_S + ZK_RESTART_S + SESSION_TIMEOUT_S + 2 * PERIOD_S + SLACK_S
# Full ensemble restart: three JVMs stopped one after another (no deliberate outage),
# started again and electing; then as above.
ZK_RESTART_GAP_S = 2 * ZK_RESTART_S + SESSION_TIMEOUT_S + 2 * PERIOD_S + SLACK_S


# ---------------------------------------------------------------- the shared check


def catch_up_and_check(fault: str, fleet: Fleet, base_url: str, gap_bound: float
                       ) -> tuple[RoundsRecord, list[dict[str, Any]]]:
    """After recovery: wait for rounds past the fleet's current one, then check them, and
    check that the outbox dropped and refused nothing."""
    target = status(fleet)["round"] + CATCH_UP_ROUNDS
    wait_caught_up(base_url, target)
    replies = collector_replies(base_url)
    rows = fetch_rounds(base_url)
    record = check_rounds(fault, rows, gap_bound, replies=replies)
    outbox = status(fleet)["outbox"]
    assert outbox["dropped"] == 0 and outbox["rejected"] == 0, outbox
    return record, rows


# ---------------------------------------------------------------- collector faults


@dataclass(frozen=True)
class Seen:
    """One write that reached the faulty front, and what it did with it."""

    at: float
    mode: str
    body: dict[str, Any] | None


class FaultyFront:
    """A loopback HTTP server in front of the real collector, switchable at any moment:
    "forward" passes every request on and relays the answer, "500" answers 500 without
    forwarding, "hang" accepts and never answers (the connection is dropped, unanswered,
    once the mode changes). Records every request it receives."""

    MODES = ("forward", "500", "hang")

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.mode = "forward"
        self.lock = threading.Lock()
        self.unhung = threading.Event()
        self.unhung.set()
        self.seen: list[Seen] = []
        front = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                mode = front.note(raw)
                if mode == "hang":
                    front.unhung.wait()
                    self.close_connection = True
                    return
                if mode == "500":
                    self._answer(500, b'{"error": "injected by the test"}', "application/json")
                    return
                self._answer(*front.forward(self.command, self.path, raw, self.headers))

            def _answer(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _handle

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = QuietHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def switch(self, mode: str) -> None:
        assert mode in self.MODES, mode
        with self.lock:
            if mode == "hang":
                self.unhung.clear()
            else:
                self.unhung.set()
            self.mode = mode

    def note(self, raw: bytes) -> str:
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        with self.lock:
            self.seen.append(Seen(time.time(), self.mode, body))
            return self.mode

    def count(self, mode: str) -> int:
        with self.lock:
            return sum(s.mode == mode for s in self.seen)

    def forward(self, method: str, path: str, raw: bytes, headers: Any) -> tuple[int, bytes, str]:
        passed = {k: headers[k] for k in ("Content-Type", "Authorization") if k in headers}
        connection = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=10)
        try:
            connection.request(method, path, body=raw or None, headers=passed)
            reply = connection.getresponse()
            return (reply.status, reply.read(),
                    reply.getheader("Content-Type", "application/octet-stream"))
        except OSError as error:
            return 502, json.dumps({"error": str(error)}).encode(), "application/json"
        finally:
            connection.close()

    def __enter__(self) -> FaultyFront:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.unhung.set()
        self.server.shutdown()
        self.server.server_close()


def attempts_with_backoff(window_s: float, attempt_s: float) -> int:
    """How many attempts a courier that backs off as documented starts within `window_s`
    of failures that each take `attempt_s`, plus one: the attempt in flight at either end."""
    at, wait, attempts = 0.0, BACKOFF_FIRST_S, 0
    while at < window_s:
        attempts += 1
        at += attempt_s + wait
        wait = min(2 * wait, BACKOFF_MAX_S)
    return attempts + 1


@pytest.fixture
def front(collector: CollectorProcess) -> Iterator[FaultyFront]:
    with FaultyFront(collector.port) as running:
        yield running


def start_fleet(fleet: Fleet, api_url: str, base_url: str) -> None:
    """Three daemons delivering to `api_url`, until the collector holds full rounds."""
    fleet.api_url = api_url
    fleet.start_ready("1", "2", "3")
    wait_full_rounds(base_url, STEADY_ROUNDS, devices=3)


# ---------------------------------------------------------------- 1. the leader daemon


def test_fault_leader_sigterm(fleet: Fleet, collector: CollectorProcess) -> None:
    base = collector.url("")
    start_fleet(fleet, collector.url("/api/rounds"), base)
    leader = status(fleet)["leader"]
    fleet.daemons[leader].signal(signal.SIGTERM)
    assert fleet.daemons[leader].wait_exit() == 0
    _, rows = catch_up_and_check("leader SIGTERM", fleet, base, SIGTERM_GAP_S)
    newest = max(rows, key=lambda r: r["round"])
    assert newest["leader"] != leader and newest["count"] == 2, newest


def test_fault_leader_sigkill(fleet: Fleet, collector: CollectorProcess) -> None:
    base = collector.url("")
    start_fleet(fleet, collector.url("/api/rounds"), base)
    leader = status(fleet)["leader"]
    fleet.daemons[leader].signal(signal.SIGKILL)
    fleet.daemons[leader].wait_exit()
    _, rows = catch_up_and_check("leader SIGKILL", fleet, base, SIGKILL_GAP_S)
    newest = max(rows, key=lambda r: r["round"])
    assert newest["leader"] != leader and newest["count"] == 2, newest


def test_fault_leader_sigstop_longer_than_the_session(
    fleet: Fleet, collector: CollectorProcess, front: FaultyFront
) -> None:
    """The paused leader wakes up believing it leads: it must deliver nothing with its old
    epoch, neither accepted (the collector's rows) nor attempted (what reached the front)."""
    base = collector.url("")
    start_fleet(fleet, front.url("/api/rounds"), base)
    before = status(fleet)
    leader, old_epoch = before["leader"], before["epoch"]
    paused = fleet.daemons[leader]
    paused.signal(signal.SIGSTOP)
    time.sleep(PAUSE_S)
    paused.signal(signal.SIGCONT)
    resumed_at = time.time()
    wait_full_rounds(base, 2, devices=3, after=resumed_at, timeout=30)
    _, rows = catch_up_and_check(f"leader SIGSTOP {PAUSE_S:.0f} s", fleet, base, SIGSTOP_GAP_S)
    assert paused.running
    assert_fenced(rows, leader, old_epoch, resumed_at)
    attempts = [s.body for s in front.seen if s.at > resumed_at and s.body
                and s.body.get("leader") == leader and s.body["epoch"] <= old_epoch]
    assert not attempts, f"the paused leader still tried to deliver: {attempts}"
    assert max(r["epoch"] for r in rows) > old_epoch


# ---------------------------------------------------------------- 2. the collector


def test_fault_collector_down_60s(fleet: Fleet, collector: CollectorProcess) -> None:
    base = collector.url("")
    start_fleet(fleet, collector.url("/api/rounds"), base)
    collector.stop()
    time.sleep(COLLECTOR_DOWN_S)
    again = restart_collector(collector)
    try:
        record, _ = catch_up_and_check("collector down 60 s", fleet, base, COLLECTOR_DOWN_GAP_S)
        assert record.max_gap > COLLECTOR_DOWN_S, "the outage must show in the arrivals"
    finally:
        again.stop()


def test_fault_collector_answers_500(
    fleet: Fleet, collector: CollectorProcess, front: FaultyFront
) -> None:
    base = collector.url("")
    start_fleet(fleet, front.url("/api/rounds"), base)
    front.switch("500")
    time.sleep(COLLECTOR_500_S)
    front.switch("forward")
    record, _ = catch_up_and_check("collector 500s 10 s", fleet, base, COLLECTOR_500_GAP_S)
    tries = front.count("500")
    print(f"  attempts during the fault: {tries}")
    assert tries >= 2, "the courier must have retried during the fault"
    assert tries <= attempts_with_backoff(COLLECTOR_500_S, 0.0), (
        f"{tries} attempts in {COLLECTOR_500_S:.0f} s of 500s: the courier does not back off")
    assert record.max_gap > COLLECTOR_500_S - PERIOD_S


def test_fault_collector_hangs(
    fleet: Fleet, collector: CollectorProcess, front: FaultyFront
) -> None:
    base = collector.url("")
    start_fleet(fleet, front.url("/api/rounds"), base)
    front.switch("hang")
    time.sleep(COLLECTOR_HANG_S)
    front.switch("forward")
    record, _ = catch_up_and_check("collector hanging 10 s", fleet, base,
                                   COLLECTOR_HANG_GAP_S)
    tries = front.count("hang")
    print(f"  attempts during the fault: {tries}")
    assert tries >= 2, "the courier must have timed out and retried"
    assert tries <= attempts_with_backoff(COLLECTOR_HANG_S, HTTP_TIMEOUT_S), (
        f"{tries} attempts in {COLLECTOR_HANG_S:.0f} s of hanging: the courier does not back off")
    assert record.max_gap > COLLECTOR_HANG_S - PERIOD_S


# ---------------------------------------------------------------- 3. ZooKeeper


def start_ensemble_fleet(ensemble_fleet: Fleet, collector: CollectorProcess) -> str:
    base = collector.url("")
    start_fleet(ensemble_fleet, collector.url("/api/rounds"), base)
    return base


def finish_ensemble_fault(fault: str, ensemble_fleet: Fleet, base: str, bound: float
                          ) -> RoundsRecord:
    record, _ = catch_up_and_check(fault, ensemble_fleet, base, bound)
    assert all(d.running for d in ensemble_fleet.daemons.values())
    recovered = time.time()
    wait_full_rounds(base, 2, devices=3, after=recovered)
    return record


ONE_SERVER_FAULTS = [
    ("ZooKeeper leader server stopped", ZkEnsemble.leader, ZK_LEADER_GAP_S),
    ("ZooKeeper follower stopped", lambda ensemble: ensemble.followers()[0], ZK_FOLLOWER_GAP_S),
]


@pytest.mark.ensemble
@pytest.mark.parametrize(("fault", "pick", "bound"), ONE_SERVER_FAULTS,
                         ids=["leader-server", "follower-server"])
def test_fault_zookeeper_one_server_stopped(
    zk_ensemble: ZkEnsemble, ensemble_fleet: Fleet, collector: CollectorProcess,
    fault: str, pick: Callable[[ZkEnsemble], ZkServer], bound: float,
) -> None:
    base = start_ensemble_fleet(ensemble_fleet, collector)
    server = pick(zk_ensemble)
    server.stop()
    zk_ensemble.wait_serving()
    server.start()
    zk_ensemble.wait_serving()
    finish_ensemble_fault(fault, ensemble_fleet, base, bound)


@pytest.mark.ensemble
def test_fault_zookeeper_quorum_lost_30s(
    zk_ensemble: ZkEnsemble, ensemble_fleet: Fleet, collector: CollectorProcess
) -> None:
    base = start_ensemble_fleet(ensemble_fleet, collector)
    stopped = [zk_ensemble.leader(), zk_ensemble.followers()[0]]
    for server in stopped:
        server.stop()
    time.sleep(QUORUM_LOST_S)
    for server in stopped:
        server.start()
    zk_ensemble.wait_serving()
    finish_ensemble_fault("ZooKeeper quorum lost 30 s", ensemble_fleet, base,
                          QUORUM_LOST_GAP_S)


@pytest.mark.ensemble
def test_fault_zookeeper_full_restart(
    zk_ensemble: ZkEnsemble, ensemble_fleet: Fleet, collector: CollectorProcess
) -> None:
    base = start_ensemble_fleet(ensemble_fleet, collector)
    zk_ensemble.stop()
    zk_ensemble.start()
    zk_ensemble.wait_serving()
    finish_ensemble_fault("ZooKeeper full ensemble restart", ensemble_fleet, base,
                          ZK_RESTART_GAP_S)

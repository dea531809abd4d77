"""The fault matrix of issue 5, on loopback: real daemons, a real ZooKeeper and a real
zk-collector; a fault is injected, the fleet recovers, the collector catches up, and one
helper (`check_rounds`) checks what the collector kept:

(a) no round number missing between the first and the last stored round,
(b) none stored twice,
(c) epochs never go down as round numbers go up (fencing),
(d) the largest gap in arrival time between consecutive rounds stays below a bound stated
    per fault (the constants below, each with its reasoning).

Each test prints one line, `FAULT <name>: rounds a..b, lost 0, duplicated 0, max gap x s`,
so `pytest -s` shows the figures for the README's table. The lab faults (network cuts,
power) are at the end of test_lab.py and use the same helper.
"""

from __future__ import annotations

import http.client
import itertools
import json
import re
import signal
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from zk_sensor.testing.fleet import CollectorProcess, Fleet, status, wait_for
from zk_sensor.testing.zookeeper import ZkEnsemble, ZkServer

# The loopback fleet (tests/fleet.py): sampling period, session timeout, delivery timeout.
PERIOD_S = Fleet.period
SESSION_TIMEOUT_S = Fleet.session_timeout
HTTP_TIMEOUT_S = 1.0
# The courier's first and longest waits between two attempts (zk_sensor.node.delivery's
# BACKOFF_FIRST and BACKOFF_MAX; the wait doubles after each failed attempt).
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 5.0
# Scheduling noise on a loaded 2-core machine running three JVMs and a fleet.
SLACK_S = 2.0
# A JVM stopped and started again, and its quorum elected, on that machine.
ZK_RESTART_S = 10.0

# Full rounds stored before any fault is injected.
STEADY_ROUNDS = 4
# After recovery, wait for this many rounds beyond the fleet's round at that moment.
CATCH_UP_ROUNDS = 3
CATCH_UP_TIMEOUT_S = 60.0
PAGE = 1000

# --- fault durations (deliberate waits, not synchronisation)
# SIGSTOP of the leader: twice the session timeout, so its session surely expires.
PAUSE_S = 2 * SESSION_TIMEOUT_S
COLLECTOR_DOWN_S = 60.0
COLLECTOR_500_S = 10.0
COLLECTOR_HANG_S = 10.0
QUORUM_LOST_S = 30.0

# --- bounds on the largest gap between the arrivals of consecutive rounds
# SIGTERM: the leader deletes its candidate znode, the next node takes office within
# milliseconds and closes the open round one period after its release: a few periods.
SIGTERM_GAP_S = 3 * PERIOD_S + SLACK_S
# SIGKILL: nobody notices until the dead leader's session expires, then as SIGTERM.
SIGKILL_GAP_S = SESSION_TIMEOUT_S + 2 * PERIOD_S + SLACK_S
# SIGSTOP longer than the session timeout: as SIGKILL for the fleet (the paused leader's
# lease lapses at once and its session expires after one session timeout).
SIGSTOP_GAP_S = SESSION_TIMEOUT_S + 2 * PERIOD_S + SLACK_S
# Collector down: the outage itself, plus at most one backoff interval before the next
# attempt, plus that attempt's timeout and the collector's own restart.
COLLECTOR_DOWN_GAP_S = COLLECTOR_DOWN_S + BACKOFF_MAX_S + HTTP_TIMEOUT_S + SLACK_S
# 500s: the failing span plus at most one backoff interval.
COLLECTOR_500_GAP_S = COLLECTOR_500_S + BACKOFF_MAX_S + SLACK_S
# Hanging: as 500s, plus the attempt in flight when it stops hanging (it times out).
COLLECTOR_HANG_GAP_S = COLLECTOR_HANG_S + HTTP_TIMEOUT_S + BACKOFF_MAX_S + SLACK_S
# The ensemble's leader server stopped: every client is dropped while the two others
# elect a leader (seconds on loopback); sessions survive (reconnect within the session
# timeout), the fleet's leader steps down on suspension and takes office again.
ZK_LEADER_GAP_S = SESSION_TIMEOUT_S + ZK_RESTART_S / 2 + 2 * PERIOD_S + SLACK_S
# One follower stopped: only its clients move to another server, within the session.
ZK_FOLLOWER_GAP_S = SESSION_TIMEOUT_S + 2 * PERIOD_S + SLACK_S
# Quorum lost: the outage, two JVMs started again and electing, reconnection within the
# session timeout, a few periods.
QUORUM_LOST_GAP_S = QUORUM_LOST_S + ZK_RESTART_S + SESSION_TIMEOUT_S + 2 * PERIOD_S + SLACK_S
# Full ensemble restart: three JVMs stopped one after another (no deliberate outage),
# started again and electing; then as above.
ZK_RESTART_GAP_S = 2 * ZK_RESTART_S + SESSION_TIMEOUT_S + 2 * PERIOD_S + SLACK_S


# ---------------------------------------------------------------- the shared check


@dataclass(frozen=True)
class RoundsRecord:
    """What the collector kept for one fault, and the figures for the README's table."""

    fault: str
    first: int
    last: int
    lost: list[int]
    duplicated: list[int]
    epoch_regressions: list[str]
    max_gap: float
    max_gap_after: int
    bound: float
    epochs: tuple[int, int]
    replies: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        replies = ", ".join(f"{k} {v}" for k, v in sorted(self.replies.items()) if v)
        return (f"FAULT {self.fault}: rounds {self.first}..{self.last}, lost {len(self.lost)}, "
                f"duplicated {len(self.duplicated)}, max gap {self.max_gap:.1f} s "
                f"(after round {self.max_gap_after}; bound {self.bound:.0f} s), "
                f"epochs {self.epochs[0]}..{self.epochs[1]}"
                + (f"; collector replies: {replies}" if replies else ""))


def check_rounds(fault: str, rows: list[dict[str, Any]], gap_bound: float,
                 since_round: int | None = None,
                 replies: dict[str, int] | None = None) -> RoundsRecord:
    """Check (a)-(d) on the collector's rows (from `fetch_rounds`), print the figures, and
    return them. `since_round` ignores older rounds (a collector with a longer history)."""
    kept = sorted((r for r in rows if r.get("round") is not None
                   and (since_round is None or r["round"] >= since_round)),
                  key=lambda r: (r["round"], r["received_at"]))
    assert len(kept) >= 2, f"{fault}: too few rounds stored to check: {kept}"
    numbers = [r["round"] for r in kept]
    first, last = numbers[0], numbers[-1]
    duplicated = sorted(n for n, times in Counter(numbers).items() if times > 1)
    lost = sorted(set(range(first, last + 1)) - set(numbers))
    regressions, highest = [], kept[0]
    for row in kept:
        if row["epoch"] < highest["epoch"]:
            regressions.append(f"round {row['round']} has epoch {row['epoch']} after round "
                               f"{highest['round']} with epoch {highest['epoch']}")
        if row["epoch"] > highest["epoch"]:
            highest = row
    gaps = [(later["received_at"] - earlier["received_at"], earlier["round"])
            for earlier, later in itertools.pairwise(kept)]
    max_gap, max_gap_after = max(gaps)
    record = RoundsRecord(fault, first, last, lost, duplicated, regressions, max_gap,
                          max_gap_after, gap_bound,
                          (min(r["epoch"] for r in kept), max(r["epoch"] for r in kept)),
                          dict(replies or {}))
    print(f"\n{record.line()}")
    assert not lost, f"{fault}: rounds lost: {lost}"
    assert not duplicated, f"{fault}: rounds stored twice: {duplicated}"
    assert not regressions, f"{fault}: epochs went down: {regressions}"
    assert max_gap < gap_bound, (
        f"{fault}: {max_gap:.1f} s between rounds {max_gap_after} and the next "
        f"(bound {gap_bound:.1f} s)")
    return record


def assert_fenced(rows: list[dict[str, Any]], node: str, old_epoch: int, since: float) -> None:
    """Every round stored after `since` that names `node` as its leader carries an epoch
    newer than `old_epoch`: the node delivered nothing with the epoch it held before."""
    stale = [r for r in rows if r["received_at"] > since and r.get("leader") == node
             and r["epoch"] <= old_epoch]
    assert not stale, f"node {node} delivered with its old epoch {old_epoch}: {stale}"


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


def newest_round(rows: list[dict[str, Any]]) -> int:
    return max((r["round"] for r in rows if r.get("round") is not None), default=-1)


def wait_caught_up(base_url: str, target: int, timeout: float = CATCH_UP_TIMEOUT_S
                   ) -> list[dict[str, Any]]:
    """Wait until the collector holds a round numbered `target` or above; its rows."""
    def caught_up() -> list[dict[str, Any]] | None:
        rows = fetch_rounds(base_url)
        return rows if newest_round(rows) >= target else None

    return wait_for(caught_up, timeout, f"the collector to hold round {target}", interval=0.5)


def wait_full_rounds(base_url: str, count: int, devices: int, after: float = 0.0,
                     timeout: float = 30.0) -> list[dict[str, Any]]:
    """Wait until `count` rounds over `devices` devices arrived after `after`."""
    def enough() -> list[dict[str, Any]] | None:
        full = [r for r in fetch_rounds(base_url)
                if r["count"] == devices and r["received_at"] > after]
        return full if len(full) >= count else None

    return wait_for(enough, timeout, f"{count} rounds over {devices} devices", interval=0.25)


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


def restart_collector(old: CollectorProcess) -> CollectorProcess:
    """A new zk-collector on the same port and database as `old` (which has stopped), so
    the daemons' api_url does not change."""
    assert old.process is not None and old.process.poll() is not None, "stop it first"
    return CollectorProcess(old.db, old.log_file).start_on(old.port)


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

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
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

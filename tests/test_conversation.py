"""Faults inside the conversation with ZooKeeper (issue 9): a lost reply, a slow commit, a
dropped watch, a wiped namespace, garbage in the coordination znodes.

The daemons talk to a real ZooKeeper through `zkproxy.ZkProxy`, which forwards a chosen
request and then cuts the connection before its reply (the request landed; the daemon
only knows the outcome is unknown), or holds a reply back past the daemon's deadline.
Each test checks what a user would notice: a leader exists, every round reaches a real
zk-collector once, the counter and the epoch behave.
"""

from __future__ import annotations

import re
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient
from kazoo.handlers.threading import KazooTimeoutError

from zk_sensor.fleet.layout import Layout
from zk_sensor.testing.collector import CollectorProcess, collector_replies, fetch_rounds
from zk_sensor.testing.fleet import Fleet, Receiver, status, wait_for
from zk_sensor.testing.proxy import ZkProxy
from zk_sensor.testing.zookeeper import MakeZk, ZkEnsemble
from zk_sensor.zk.client import KazooZk
from zk_sensor.zk.errors import StepBudgetSpent

# zk_sensor.testing.fleet runs daemons with --zk-deadline 1: a reply held longer is a timeout.
LATE_REPLY_S = 1.5
ROUNDS_S = 30.0
# A new leader backs off 0.5, 1, 2... s between attempts to take office; a repair costs
# at most a couple of attempts, never hundreds (the seed's fleet rose by 955 in 10 s).
EPOCH_CHURN_MAX = 3


@pytest.fixture
def proxy(zk_hosts: str) -> Iterator[ZkProxy]:
    with ZkProxy(zk_hosts) as running:
        yield running


@pytest.fixture
def admin(zk_hosts: str, make_zk: MakeZk) -> KazooClient:
    """A direct client: what really is in ZooKeeper."""
    return make_zk(zk_hosts)


@pytest.fixture
def proxied_fleet(proxy: ZkProxy, zk_namespace: str, collector: CollectorProcess,
                  tmp_path: Path) -> Iterator[Fleet]:
    """Daemons that reach ZooKeeper only through `proxy`, delivering to a real collector."""
    running = Fleet(proxy.address, zk_namespace, tmp_path, collector.url("/api/rounds"))
    yield running
    running.stop_all()


@pytest.fixture
def fleet_with_collector(zk_hosts: str, zk_namespace: str, collector: CollectorProcess,
                         tmp_path: Path) -> Iterator[Fleet]:
    """Daemons straight to ZooKeeper, delivering to a real collector."""
    running = Fleet(zk_hosts, zk_namespace, tmp_path, collector.url("/api/rounds"))
    yield running
    running.stop_all()


def stored(collector: CollectorProcess) -> list[dict[str, Any]]:
    return sorted(fetch_rounds(collector.url("")), key=lambda row: row["id"])


def wait_stored(collector: CollectorProcess, count: int, after_id: int = 0,
                timeout: float = ROUNDS_S) -> list[dict[str, Any]]:
    def enough() -> list[dict[str, Any]] | None:
        rows = [row for row in stored(collector) if row["id"] > after_id]
        return rows if len(rows) >= count else None

    return wait_for(enough, timeout, f"{count} more rounds stored", interval=0.2)


def assert_contiguous_once(rows: list[dict[str, Any]]) -> None:
    """Per (fleet, incarnation): no round missing between first and last, none twice."""
    by_key: dict[tuple[str, str], list[int]] = {}
    for row in rows:
        by_key.setdefault((row["fleet"], row["incarnation"]), []).append(row["round"])
    for key, numbers in by_key.items():
        twice = [n for n, times in Counter(numbers).items() if times > 1]
        missing = sorted(set(range(min(numbers), max(numbers) + 1)) - set(numbers))
        assert not twice and not missing, f"{key}: twice {twice}, missing {missing}"


def test_a_lost_reply_to_a_candidate_create_leaves_no_orphan(
        proxy: ZkProxy, proxied_fleet: Fleet, admin: KazooClient,
        collector: CollectorProcess) -> None:
    layout = Layout(proxied_fleet.namespace)
    cut = proxy.cut_after("create", re.compile(r"/election/n_1_$"))
    node = proxied_fleet.start("1")
    wait_for(cut.fired.is_set, 20, "the candidate create to be cut after landing")
    node.wait_log(r"I am the leader now")
    candidates = admin.get_children(layout.election)
    assert len(candidates) == 1, f"one candidate per node, not {candidates}"
    proxied_fleet.start_ready("2")
    rows = wait_stored(collector, 4)
    assert rows[-1]["leader"] == "1"
    assert len(admin.get_children(layout.election)) == 2


def test_late_replies_to_the_release_strand_no_round(
        proxy: ZkProxy, proxied_fleet: Fleet, collector: CollectorProcess) -> None:
    """Three times the leader's deadline passes before the release's reply arrives: each
    time it re-reads, finds the round closed, and the round still reaches the collector."""
    barrier = Layout(proxied_fleet.namespace).barrier
    proxied_fleet.start_ready("1", "2")
    before = wait_stored(collector, 3)
    slow = proxy.delay_reply("multi", re.compile(re.escape(barrier) + "$"),
                             seconds=LATE_REPLY_S, times=3)
    wait_for(lambda: slow.count >= 3, ROUNDS_S, "three release replies held past the deadline")
    leader_logs = "".join(d.log() for d in proxied_fleet.history)
    assert "the release's outcome is unknown" in leader_logs
    assert "its release landed after all" in leader_logs
    rows = wait_stored(collector, 6, after_id=before[-1]["id"])
    assert_contiguous_once(stored(collector))
    wait_for(lambda: status(proxied_fleet)["outbox"]["pending"] <= 2, ROUNDS_S,
             "the outbox to drain")
    assert rows[-1]["count"] == 2


def test_a_namespace_rebuilt_under_a_running_fleet_is_a_new_incarnation(
        fleet_with_collector: Fleet, admin: KazooClient, collector: CollectorProcess) -> None:
    fleet = fleet_with_collector
    fleet.start_ready("1", "2")
    old = wait_stored(collector, 4)
    admin.delete(fleet.namespace, recursive=True)
    new = wait_stored(collector, 4, after_id=old[-1]["id"],
                      timeout=4 * fleet.session_timeout + ROUNDS_S)
    incarnations = {row["incarnation"] for row in new}
    assert old[0]["incarnation"] not in incarnations, "a rebuilt namespace is a new fleet"
    replies = collector_replies(collector.url(""))
    assert replies.get("stale_epoch", 0) == 0, replies
    assert_contiguous_once(stored(collector))
    assert admin.exists(Layout(fleet.namespace).incarnation) is not None


def test_garbage_in_the_barrier_is_repaired_without_epoch_churn(
        fleet_with_collector: Fleet, admin: KazooClient, collector: CollectorProcess) -> None:
    fleet = fleet_with_collector
    layout = Layout(fleet.namespace)
    fleet.start_ready("1", "2")
    before = wait_stored(collector, 3)
    epoch = status(fleet)["epoch"]
    admin.set(layout.barrier, b"\x00garbage{")
    after = wait_stored(collector, 4, after_id=before[-1]["id"])
    assert status(fleet)["epoch"] - epoch <= EPOCH_CHURN_MAX
    assert_contiguous_once(stored(collector))
    assert all(row["incarnation"] == before[0]["incarnation"] for row in after)
    logs = "".join(d.log() for d in fleet.history)
    assert len(re.findall(r"barrier is garbage: restoring it", logs)) == 1


def test_a_node_started_on_a_garbage_barrier_repairs_it_and_leads(
        fleet_with_collector: Fleet, admin: KazooClient, collector: CollectorProcess) -> None:
    fleet = fleet_with_collector
    layout = Layout(fleet.namespace)
    fleet.start_ready("1")
    first = wait_stored(collector, 3)
    fleet.daemons["1"].signal(signal.SIGTERM)
    assert fleet.daemons["1"].wait_exit() == 0
    admin.set(layout.barrier, b"not a barrier")
    node = fleet.start("2")
    node.wait_log(r"I am the leader now")
    rows = wait_stored(collector, 3, after_id=first[-1]["id"])
    assert node.running, "a garbage barrier must not crash a node"
    assert rows[0]["round"] > first[-1]["round"], "round numbers never repeat"
    assert_contiguous_once(stored(collector))


def test_a_deleted_epoch_and_outbox_are_repaired_and_the_collector_keeps_accepting(
        fleet_with_collector: Fleet, admin: KazooClient, collector: CollectorProcess) -> None:
    fleet = fleet_with_collector
    layout = Layout(fleet.namespace)
    fleet.start_ready("1", "2")
    before = wait_stored(collector, 3)
    epoch = status(fleet)["epoch"]
    admin.delete(layout.epoch)
    admin.delete(layout.outbox, recursive=True)
    after = wait_stored(collector, 4, after_id=before[-1]["id"])
    assert after[-1]["epoch"] > epoch, "the epoch number never goes back"
    assert status(fleet)["epoch"] - epoch <= EPOCH_CHURN_MAX
    assert collector_replies(collector.url("")).get("stale_epoch", 0) == 0
    assert all(row["incarnation"] == before[0]["incarnation"] for row in after)


def test_a_409_makes_the_leader_step_down_and_keep_the_round(
        fleet: Fleet, receiver: Receiver) -> None:
    """A 409 is the collector's epoch fence: the leader's office is in doubt, the round is
    not at fault. It steps down, re-checks, and the round is delivered afterwards."""
    fleet.start_ready("1", "2")
    receiver.wait_rounds(3)
    receiver.status = 409
    fenced_node = wait_for(lambda: [d for d in fleet.daemons.values()
                                    if "the collector fenced round" in d.log()], ROUNDS_S,
                           "a leader to step down on a 409")[0]
    fenced = int(re.findall(r"the collector fenced round (\d+)", fenced_node.log())[0])
    receiver.status = 200
    back_at = time.time()
    wait_for(lambda: any(d.body and d.body["round"] == fenced and d.received_at > back_at
                         for d in receiver.snapshot()), ROUNDS_S,
             f"round {fenced} delivered again after the 409")
    assert status(fleet)["outbox"]["rejected"] == 0
    assert "dropping it" not in "".join(d.log() for d in fleet.history)


@pytest.fixture
def strict_server(tmp_path: Path) -> Iterator[str]:
    """A server that grants at most 10 s of session, whatever a client asks for."""
    ensemble = ZkEnsemble(tmp_path / "strict", n=1)
    config = ensemble.servers[0].config_file
    config.write_text(config.read_text().replace("maxSessionTimeout=60000",
                                                 "maxSessionTimeout=10000"))
    ensemble.start()
    try:
        ensemble.wait_serving()
        yield ensemble.hosts
    finally:
        ensemble.stop()


def test_timing_follows_the_session_timeout_the_server_negotiated(
        strict_server: str, tmp_path: Path, receiver: Receiver) -> None:
    fleet = Fleet(strict_server, "/zk-sensor", tmp_path, receiver.url("/rounds"))
    try:
        node = fleet.start("1", "--session-timeout", "30", "--zk-deadline", "2",
                           "--http-timeout", "2")
        node.wait_log(r"timeout 10\.0 s negotiated, 30\.0 s asked")
        node.wait_log(r"ready: first reading published")
        refused = fleet.start("2", "--session-timeout", "30", "--zk-deadline", "5")
        assert refused.wait_exit(30) == 2
        assert re.search(r"negotiated a session timeout of 10\.0 s: zk_deadline 5 s",
                         refused.log())
        assert node.running
    finally:
        fleet.stop_all()


def test_a_lost_reply_to_a_reading_keeps_the_counter_exact(
        proxy: ZkProxy, proxied_fleet: Fleet, collector: CollectorProcess) -> None:
    """The reading landed; the node only saw a connection loss. It writes the same count
    again with its next reading, so the counter equals the readings the nodes logged."""
    reading = Layout(proxied_fleet.namespace).reading("2")
    proxied_fleet.start_ready("1", "2")
    before = wait_stored(collector, 2)
    cut = proxy.cut_after("set", re.compile(re.escape(reading) + "$"))
    wait_for(cut.fired.is_set, ROUNDS_S, "a reading's reply to be cut")
    wait_stored(collector, 4, after_id=before[-1]["id"])
    proxied_fleet.stop_all()
    assert status(proxied_fleet)["counter"] == proxied_fleet.measurements()


def test_a_dropped_release_notification_costs_a_device_rounds_not_its_place(
        proxy: ZkProxy, fleet_with_collector: Fleet, collector: CollectorProcess,
        tmp_path: Path) -> None:
    """The device that missed a release watches nothing until it re-reads the barrier on
    its own, after `stalled_after` without a release (node/barrier_watch.py)."""
    fleet_with_collector.start_ready("1")
    fleet_with_collector.daemons["1"].wait_log(r"I am the leader now")
    behind = Fleet(proxy.address, fleet_with_collector.namespace, tmp_path / "proxied",
                   fleet_with_collector.api_url)
    behind.work_dir.mkdir()
    try:
        behind.start_ready("2")
        barrier = Layout(behind.namespace).barrier
        dropped = proxy.drop_notification(re.compile(re.escape(barrier) + "$"), "changed")
        wait_for(dropped.fired.is_set, ROUNDS_S, "a release notification to be dropped")
        dropped_at = time.time()
        stalled_after = max(3 * behind.period, 2 * behind.session_timeout)
        wait_for(lambda: [row for row in stored(collector)
                          if row["count"] == 2 and row["received_at"] > dropped_at],
                 stalled_after + 3 * behind.period + 5, "the device back in a whole round")
    finally:
        behind.stop_all()


def test_a_step_gives_up_as_a_whole_once_its_budget_is_spent(
        proxy: ZkProxy, make_zk: MakeZk, zk_namespace: str) -> None:
    """Many calls to a slow server never add up past the step's budget (the watchdog's
    interval): each call waits at most what is left of it."""
    client = make_zk(proxy.address)
    zk = KazooZk(client, deadline=1.0)
    path = f"{zk_namespace}/slow"
    client.create(path, b"x")
    proxy.delay_reply("get", re.compile(re.escape(path) + "$"), seconds=LATE_REPLY_S)
    zk.begin_step(1.2)
    started = time.monotonic()
    with pytest.raises(KazooTimeoutError):
        zk.get(path)
    with pytest.raises(KazooTimeoutError):
        zk.get(path)
    with pytest.raises(StepBudgetSpent):
        zk.exists(path)
    assert time.monotonic() - started < 1.2 + 0.3


def test_the_leader_confirms_its_office_with_a_read_the_quorum_stands_behind(
        proxy: ZkProxy, proxied_fleet: Fleet) -> None:
    """Between rounds (a 2 s period, over a lease of 2 s) the leader renews its lease with
    a sync followed by a read of the epoch znode, not with a read a cut-off server could
    answer from a stale copy."""
    epoch = Layout(proxied_fleet.namespace).epoch
    synced = proxy.delay_reply("sync", re.compile(re.escape(epoch) + "$"), seconds=0.05)
    node = proxied_fleet.start("1", "--sampling-period", "2")
    node.wait_log(r"I am the leader now")
    wait_for(synced.fired.is_set, 2 * proxied_fleet.session_timeout,
             "the leader to sync before confirming its office")

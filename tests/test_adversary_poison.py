"""Poison znodes (issue 18): what any fleet credential can write into the barrier, a
reading, an outbox entry or the epoch. Python's `json` raises RecursionError on a few
thousand nested brackets and refuses integers of more than 4,300 digits; ZooKeeper takes
payloads up to 1 MiB and any bytes at all. Each costs the fleet a log line and a repair
(the barrier, the epoch, the outbox entry) or a skipped reading, never a node: every
daemon stays up, rounds keep reaching the receiver, and `zk-sensorctl status` answers.

One fleet serves every case, in its own namespace on the shared server; each case waits
for the fleet to have dealt with its poison (the leader's log line) and for new rounds.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from kazoo.security import make_acl

from zk_sensor.fleet.aggregate import aggregate
from zk_sensor.fleet.layout import Layout
from zk_sensor.fleet.outbox import encode_pending
from zk_sensor.testing.fleet import Daemon, Fleet, Receiver, ctl, wait_for
from zk_sensor.testing.zookeeper import ZkEnsemble

POISONS = {
    # Each opens as a JSON object, so it reaches the JSON parser of every decoder (a bare
    # word in the epoch znode is an earlier release's leader id, parsed without JSON).
    "nested": b'{"round": ' + b"[" * 5000,
    "huge-int": b'{"round": ' + b"9" * 5000 + b"}",
    # Valid JSON just under ZooKeeper's 1 MiB (jute.maxbuffer) limit on a znode.
    "oversized": b'{"round": [' + b"0," * 499_000 + b"0]}",
    "not-utf8": b'{"round": 7, "leader": "\xff\xfe"}',
}
GHOST = "ghost"
ROUNDS_S = 20.0
# Polls that run zk-sensorctl, a process start each: two cores are shared with the fleet.
CTL_POLL = 0.3


@dataclass
class Poisoned:
    fleet: Fleet
    receiver: Receiver
    admin: KazooClient
    layout: Layout

    def leader(self) -> Daemon:
        return wait_for(self._leader, ROUNDS_S, "a leader", interval=CTL_POLL)

    def _leader(self) -> Daemon | None:
        found = json.loads(ctl(self.fleet, "status", "--json").stdout or "{}").get("leader")
        return self.fleet.daemons.get(found) if found else None

    def logs(self) -> dict[str, int]:
        """Where each node's log ends now: a case looks only at what came after."""
        return {node: len(daemon.log()) for node, daemon in self.fleet.daemons.items()}


@pytest.fixture(scope="module")
def poisoned(zk_standalone: ZkEnsemble, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[Poisoned]:
    """Two nodes delivering to a receiver; stopped after the module."""
    zk_standalone.wait_serving(60)
    namespace = f"/t-poison-{secrets.token_hex(3)}"
    admin = KazooClient(hosts=zk_standalone.hosts)
    admin.start(timeout=10)
    with Receiver() as receiver:
        fleet = Fleet(zk_standalone.hosts, namespace, Path(tmp_path_factory.mktemp("poison")),
                      receiver.url("/rounds"))
        try:
            fleet.start_ready("1", "2")
            receiver.wait_rounds(2, ROUNDS_S)
            yield Poisoned(fleet, receiver, admin, Layout(namespace))
        finally:
            fleet.stop_all()
            admin.delete(namespace, recursive=True)
            admin.stop()
            admin.close()


def assert_fleet_lives_on(poisoned: Poisoned, since: float) -> None:
    """Nobody exited (systemd would restart a node into the same crash), and rounds keep
    coming; the status command answers."""
    fleet = poisoned.fleet
    poisoned.receiver.wait_rounds(2, ROUNDS_S, after=since)
    assert len(fleet.history) == 2
    for daemon in fleet.history:
        assert daemon.running, f"node {daemon.node_id} died:\n{daemon.log()[-3000:]}"
    result = ctl(fleet, "status")
    assert result.returncode == 0, result.stderr


def new_lines(poisoned: Poisoned, before: dict[str, int], pattern: str) -> dict[str, int]:
    regex = re.compile(pattern)
    return {node: len(regex.findall(daemon.log()[before[node]:]))
            for node, daemon in poisoned.fleet.daemons.items()}


@pytest.mark.parametrize("poison", POISONS)
def test_a_poison_barrier_is_logged_once_and_repaired(poisoned: Poisoned, poison: str) -> None:
    before, since = poisoned.logs(), time.time()
    leader = poisoned.leader()
    poisoned.admin.set(poisoned.layout.barrier, POISONS[poison])
    leader.wait_log(r"the barrier is garbage: restoring it",
                    count=leader.log().count("the barrier is garbage: restoring it") + 1)
    assert_fleet_lives_on(poisoned, since)
    followers = [node for node in poisoned.fleet.daemons if node != leader.node_id]
    seen = new_lines(poisoned, before, r"barrier znode holds garbage")
    assert all(seen[node] <= 1 for node in followers), seen


@pytest.mark.parametrize("poison", POISONS)
def test_a_poison_reading_is_skipped_and_shown(poisoned: Poisoned, poison: str) -> None:
    since = time.time()
    path = poisoned.layout.reading(GHOST)
    poisoned.admin.ensure_path(path)
    poisoned.admin.set(path, POISONS[poison])
    leader = poisoned.leader()
    skipped = rf"garbage skipped \({GHOST}\)"
    leader.wait_log(skipped, count=len(re.findall(skipped, leader.log())) + 1)
    shown = json.loads(ctl(poisoned.fleet, "status", "--json").stdout)
    assert shown["garbage_readings"] == [GHOST]
    assert_fleet_lives_on(poisoned, since)
    poisoned.admin.delete(path)


@pytest.mark.parametrize("poison", POISONS)
def test_a_poison_outbox_entry_is_removed_by_the_leader(poisoned: Poisoned,
                                                        poison: str) -> None:
    """The leader reads the outbox entries when it reloads: a barrier it did not write
    (harmless garbage here) makes it reload."""
    since = time.time()
    path = poisoned.layout.outbox_round(10**11 + len(poison))
    poisoned.admin.create(path, POISONS[poison])
    name = path.rsplit("/", 1)[-1]
    shown = json.loads(ctl(poisoned.fleet, "status", "--json").stdout)
    assert shown["outbox"]["garbage"] == [name]
    leader = poisoned.leader()
    poisoned.admin.set(poisoned.layout.barrier, b"x")
    leader.wait_log(rf"outbox entry {name} is not a round; removing it")
    wait_for(lambda: poisoned.admin.exists(path) is None, ROUNDS_S, "the entry removed")
    assert_fleet_lives_on(poisoned, since)


@pytest.mark.parametrize("poison", POISONS)
def test_a_poison_epoch_is_replaced_by_the_next_office(poisoned: Poisoned,
                                                       poison: str) -> None:
    logs, since = poisoned.logs(), time.time()
    before = json.loads(ctl(poisoned.fleet, "status", "--json").stdout)["epoch"]
    poisoned.admin.set(poisoned.layout.epoch, POISONS[poison])
    replace_poison_epoch(poisoned, before, logs)
    assert_fleet_lives_on(poisoned, since)


def replace_poison_epoch(poisoned: Poisoned, before: int, logs: dict[str, int]) -> None:
    """The leader finds its epoch znode moved, steps down and takes office again."""
    wait_for(lambda: (json.loads(ctl(poisoned.fleet, "status", "--json").stdout)["epoch"]
                      or 0) > before, ROUNDS_S, "a new office over the poison epoch",
             interval=CTL_POLL)
    noted = new_lines(poisoned, logs, r"the epoch znode holds garbage: replacing it")
    assert sum(noted.values()) == 1, noted


def test_a_round_stored_under_another_name_is_removed_not_delivered(poisoned: Poisoned) -> None:
    """The leader removes a delivered round by its number's name; a round stored under
    another name could never be removed, and would fail every cleanup after it."""
    since = time.time()
    forged = aggregate([1.0], round_number=10**11 + 7, epoch=1, leader="1", now=since)
    assert forged is not None
    path = poisoned.layout.outbox_round(10**11 + 8)
    poisoned.admin.create(path, encode_pending(forged))
    leader = poisoned.leader()
    poisoned.admin.set(poisoned.layout.barrier, b"x")
    leader.wait_log(rf"outbox entry {path.rsplit('/', 1)[-1]} is not a round; removing it")
    assert_fleet_lives_on(poisoned, since)
    assert forged.round not in poisoned.receiver.rounds()


def test_znodes_whose_acl_shuts_the_fleet_out_are_skipped_and_removed(
        poisoned: Poisoned) -> None:
    """Whoever may create a reading or an outbox entry may give it an ACL nobody can read
    it with; one such znode must not refuse the leader's whole batched read (a refusal
    is what makes a node exit for good, exit 2)."""
    since = time.time()
    unreadable = [make_acl("world", "anyone", create=True)]
    reading = poisoned.layout.reading("locked")
    entry = poisoned.layout.outbox_round(10**11 - 1)
    poisoned.admin.create(reading, b"{}", acl=unreadable)
    poisoned.admin.create(entry, b"{}", acl=unreadable)
    shown = json.loads(ctl(poisoned.fleet, "status", "--json").stdout)
    assert shown["garbage_readings"] == ["locked"]
    assert shown["outbox"]["garbage"] == [entry.rsplit("/", 1)[-1]]
    leader = poisoned.leader()
    poisoned.admin.set(poisoned.layout.barrier, b"x")
    leader.wait_log(r"garbage skipped \(locked\)")
    wait_for(lambda: poisoned.admin.exists(entry) is None, ROUNDS_S, "the entry removed")
    assert_fleet_lives_on(poisoned, since)
    poisoned.admin.delete(reading)


def test_a_candidate_name_zookeeper_did_not_number_stands_nowhere(poisoned: Poisoned) -> None:
    """A znode in the election folder is sorted by the sequence at the end of its name;
    one without (created by hand) must not break the sort when the line is read again,
    here after a poison epoch makes the leader step down and stand anew."""
    logs, since = poisoned.logs(), time.time()
    garbage = [f"{poisoned.layout.election}/{name}"
               for name in ("garbage", "n_7_\u00b2", "n_8_" + "9" * 5000)]
    for path in garbage:
        poisoned.admin.create(path, b"")
    before = json.loads(ctl(poisoned.fleet, "status", "--json").stdout)["epoch"]
    poisoned.admin.set(poisoned.layout.epoch, POISONS["nested"])
    replace_poison_epoch(poisoned, before, logs)
    assert_fleet_lives_on(poisoned, since)
    for path in garbage:
        poisoned.admin.delete(path)


def test_a_persistent_znode_named_to_stand_first_does_not_stop_the_election(
        poisoned: Poisoned) -> None:
    """Any fleet credential can create a persistent `n_x_0000000000`: it sorts first and no
    session will ever remove it. The next in line sets it aside (and removes it), so a
    leader still takes office after the sitting one steps down."""
    logs, since = poisoned.logs(), time.time()
    impostor = f"{poisoned.layout.election}/n_x_0000000000"
    poisoned.admin.create(impostor, b"x")
    poisoned.admin.create(f"{impostor}/pinned", b"")  # not empty: it cannot be removed
    before = json.loads(ctl(poisoned.fleet, "status", "--json").stdout)["epoch"]
    poisoned.admin.set(poisoned.layout.epoch, POISONS["nested"])
    replace_poison_epoch(poisoned, before, logs)
    assert_fleet_lives_on(poisoned, since)
    assert any(new_lines(poisoned, logs, r"n_x_0000000000 is persistent, no candidate").values())
    poisoned.admin.delete(impostor, recursive=True)


def test_status_and_check_show_a_poisoned_namespace_as_garbage(poisoned: Poisoned) -> None:
    """A namespace with no node left to repair anything: what the operator's tools say."""
    layout = Layout(f"{poisoned.layout.namespace}-abandoned")
    nested = POISONS["nested"]
    for path in (layout.incarnation, layout.epoch, layout.barrier, layout.reading(GHOST),
                 layout.outbox_round(3)):
        poisoned.admin.create(path, nested, makepath=True)
    poisoned.admin.set(layout.outbox, nested)
    poisoned.admin.create(f"{layout.election}/garbage", b"", makepath=True)
    fleet = Fleet(poisoned.fleet.hosts, layout.namespace, poisoned.fleet.work_dir, "")
    text = ctl(fleet, "status")
    assert text.returncode == 0, text.stderr
    assert "garbage    incarnation, epoch, barrier znode" in text.stdout
    shown = json.loads(ctl(fleet, "status", "--json").stdout)
    assert shown["garbage_znodes"] == ["incarnation", "epoch", "barrier"]
    assert (shown["garbage_readings"], shown["outbox"]["garbage"]) == ([GHOST], ["000000000003"])
    check = ctl(fleet, "check")
    assert check.returncode == 2 and check.stdout.startswith("CRITICAL: no leader"), check
    assert ("garbage in the incarnation znode, the epoch znode, the barrier znode, reading "
            f"{GHOST}, outbox entry 000000000003") in check.stdout
    poisoned.admin.delete(layout.namespace, recursive=True)

"""The operator's day-two tools: `zk-sensorctl switchover`, `status --watch` and `check`,
with real daemons on the shared ZooKeeper, plus the switchover's and the check's rules
without a server."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import pty
import re
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kazoo.client import KazooClient
from kazoo.security import Permissions

from zk_sensor.ctl.check import CRITICAL, OK, WARNING, Limits, assess
from zk_sensor.fleet.election import node_of, sequence_of
from zk_sensor.fleet.layout import Layout
from zk_sensor.fleet.status import FleetStatus
from zk_sensor.fleet.switchover import (
    InvalidRequest,
    Part,
    Request,
    decode_request,
    encode_request,
    part_of,
)
from zk_sensor.testing.fleet import BIN, Fleet, Receiver, ctl, status, wait_for
from zk_sensor.testing.identities import (
    FLEET,
    OPERATOR,
    Secured,
    identity_client,
    write_credentials,
)
from zk_sensor.testing.ports import free_port
from zk_sensor.testing.proxy import ZkProxy

SWITCHED = re.compile(r"switched over: node (\S+) \(epoch (\d+)\) -> node (\S+) "
                      r"\(epoch (\d+)\) in ([\d.]+) s\n")


def line_of(client: KazooClient, layout: Layout) -> list[str]:
    """Node ids in election order."""
    names = sorted(client.get_children(layout.election), key=sequence_of)
    return [node_of(name) or "?" for name in names]


def leadership(fleet: Fleet) -> tuple[str, int]:
    state = status(fleet)
    assert state["leader"] is not None, state
    return state["leader"], state["epoch"]


def assert_no_round_lost_or_doubled(receiver: Receiver) -> None:
    deliveries = receiver.snapshot()
    rounds = [int(d.body["round"]) for d in deliveries if d.body]
    assert rounds == list(range(rounds[0], rounds[0] + len(rounds))), rounds
    epochs = [int(d.body["epoch"]) for d in deliveries if d.body]
    assert epochs == sorted(epochs), epochs


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


# ------------------------------------------------------------- switchover, with daemons
def test_switchover_hands_over_to_the_next_in_line_within_a_second(
        fleet: Fleet, receiver: Receiver, make_zk) -> None:
    fleet.start_ready("1", "2", "3")
    receiver.wait_rounds(3)
    admin: KazooClient = make_zk(fleet.hosts)
    layout = Layout(fleet.namespace)
    before = line_of(admin, layout)
    leader, epoch = leadership(fleet)
    assert before[0] == leader
    result = ctl(fleet, "switchover")
    assert result.returncode == 0, result.stderr
    switched = SWITCHED.fullmatch(result.stdout)
    assert switched, result.stdout
    assert switched.group(1, 2, 3) == (leader, str(epoch), before[1])
    assert int(switched[4]) > epoch
    assert float(switched[5]) < 1.0, result.stdout
    handed_at = time.time()
    receiver.wait_rounds(4, after=handed_at)
    assert line_of(admin, layout) == [before[1], before[2], leader]
    assert_no_round_lost_or_doubled(receiver)
    arrivals = [d.received_at for d in receiver.snapshot()]
    assert max(b - a for a, b in itertools.pairwise(arrivals)) < 4 * fleet.period
    old = fleet.daemons[leader].log()
    assert re.search(rf"stepping down as leader \(epoch {epoch}\): handing over to node "
                     rf"{before[1]}, switchover requested by anonymous@", old), old[-2000:]
    assert admin.get(layout.switchover)[0] == b"", "the CLI clears its request"


def test_switchover_to_a_chosen_node(fleet: Fleet, receiver: Receiver, make_zk) -> None:
    fleet.start_ready("1", "2", "3")
    receiver.wait_rounds(3)
    admin: KazooClient = make_zk(fleet.hosts)
    layout = Layout(fleet.namespace)
    before = line_of(admin, layout)
    target = before[2]
    result = ctl(fleet, "switchover", "--to", target)
    assert result.returncode == 0, result.stderr
    switched = SWITCHED.fullmatch(result.stdout)
    assert switched and switched[3] == target, result.stdout
    assert status(fleet)["leader"] == target
    receiver.wait_rounds(3, after=time.time())
    assert line_of(admin, layout) == [target, before[1], before[0]], \
        "the node ahead of the target stood again first, the leader last"
    assert_no_round_lost_or_doubled(receiver)
    assert receiver.snapshot()[-1].body["leader"] == target


def test_a_switchover_while_the_collector_fails_hands_the_pending_rounds_on(
        fleet: Fleet, receiver: Receiver) -> None:
    """The outbox never empties: the leader stops starting deliveries, waits out the one
    in flight, and the next leader inherits the pending rounds; none is lost."""
    fleet.start_ready("1", "2")
    receiver.wait_rounds(2)
    failing_from = time.time()
    receiver.status = 500
    taken_before = max(int(d.body["round"]) for d in receiver.snapshot()
                       if d.received_at < failing_from)
    wait_for(lambda: status(fleet)["outbox"]["pending"] >= 2, 20, "rounds piling up")
    leader, _ = leadership(fleet)
    result = ctl(fleet, "switchover")
    assert result.returncode == 0, result.stderr
    switched = SWITCHED.fullmatch(result.stdout)
    assert switched and switched[1] == leader and switched[3] != leader, result.stdout
    assert fleet.daemons[leader].wait_log(r"switchover: the collector is slow; no new "
                                          r"delivery attempt")
    healed_at = time.time()
    receiver.status = 200
    wait_for(lambda: status(fleet)["outbox"]["pending"] == 0, 30, "the outbox to drain")
    receiver.wait_rounds(2, after=time.time())
    taken = [int(d.body["round"]) for d in receiver.snapshot() if d.received_at > healed_at]
    assert taken == list(range(taken[0], taken[0] + len(taken))), taken
    assert taken[0] <= taken_before + 1, "the rounds pending at the switchover were delivered"


@pytest.mark.parametrize("mover", ["leader", "node ahead of the target"])
def test_a_lost_reply_to_a_new_candidate_leaves_no_orphan(
        mover: str, zk_hosts: str, zk_namespace: str, receiver: Receiver, tmp_path: Path,
        make_zk) -> None:
    """The create of a node's new candidate lands but its reply is lost (the connection is
    cut): the node does not know it stands twice. It stands again and tidies, so each node
    keeps one candidate and the switchover still happens."""
    with ZkProxy(zk_hosts) as proxy:
        fleet = Fleet(proxy.address, zk_namespace, tmp_path, receiver.url("/rounds"))
        try:
            fleet.start_ready("1", "2", "3")
            receiver.wait_rounds(2)
            admin: KazooClient = make_zk(zk_hosts)
            layout = Layout(zk_namespace)
            line = line_of(admin, layout)
            cut_node = line[0] if mover == "leader" else line[1]
            cut = proxy.cut_after("create", re.compile(rf"/election/n_{cut_node}_$"))
            result = ctl(fleet, "switchover", "--to", line[2], "--wait", "10")
            assert cut.fired.is_set()
            assert result.returncode == 0, result.stderr
            assert SWITCHED.fullmatch(result.stdout), result.stdout
            wait_for(lambda: line_of(admin, layout) == [line[2], line[1], line[0]], 10,
                     "one candidate per node, the target first")
            receiver.wait_rounds(3, after=time.time())
            assert_no_round_lost_or_doubled(receiver)
        finally:
            fleet.stop_all()


def test_switchover_is_refused_without_a_leader_or_a_live_target(
        fleet: Fleet, receiver: Receiver, make_zk) -> None:
    layout = Layout(fleet.namespace)
    nobody = ctl(fleet, "switchover")
    assert nobody.returncode == 2
    assert one_line(nobody.stderr) == \
        "zk-sensorctl: switchover refused: no leader to hand over from"
    fleet.start_ready("1")
    receiver.wait_rounds(2)
    alone = ctl(fleet, "switchover")
    assert alone.returncode == 2 and "the only candidate" in one_line(alone.stderr)
    fleet.start_ready("2")
    leader, _ = leadership(fleet)
    for target, why in (("ghost", "node ghost is not a live candidate (candidates: "),
                        (leader, f"node {leader} is the leader already")):
        refused = ctl(fleet, "switchover", "--to", target)
        assert refused.returncode == 2
        assert why in one_line(refused.stderr)
    admin: KazooClient = make_zk(fleet.hosts)
    assert admin.exists(layout.switchover) is None, "a refused request writes nothing"
    assert status(fleet)["leader"] == leader


def test_a_stale_request_is_ignored_by_a_later_leader(
        fleet: Fleet, receiver: Receiver, make_zk) -> None:
    """A request replayed after its switchover (or written by a CLI that died) names an
    epoch that is over: neither the new leader nor the nodes ahead of its target move."""
    fleet.start_ready("1", "2", "3")
    receiver.wait_rounds(2)
    admin: KazooClient = make_zk(fleet.hosts)
    layout = Layout(fleet.namespace)
    _, old_epoch = leadership(fleet)
    assert ctl(fleet, "switchover").returncode == 0
    leader, epoch = leadership(fleet)
    line = line_of(admin, layout)
    last = sorted(admin.get_children(layout.election), key=sequence_of)[-1]
    stale = Request(old_epoch, node_of(last), last, "replayed@test")
    admin.set(layout.switchover, encode_request(stale))
    fleet.daemons[leader].wait_log(
        rf"switchover request for epoch {old_epoch} ignored: this office is epoch {epoch}")
    time.sleep(4 * fleet.period)
    assert leadership(fleet) == (leader, epoch)
    assert line_of(admin, layout) == line
    receiver.wait_rounds(2, after=time.time())
    assert_no_round_lost_or_doubled(receiver)


# ------------------------------------------------------------- switchover under ACLs
@pytest.fixture
def secured(zk_hosts: str, zk_namespace: str, tmp_path: Path) -> Iterator[Secured]:
    """A namespace under `acl apply` (as in test_trust.py)."""
    clients = {"operator": identity_client(zk_hosts, OPERATOR)}
    setup = Secured(zk_hosts, zk_namespace, write_credentials(tmp_path, OPERATOR),
                    write_credentials(tmp_path, FLEET), clients)
    applied = setup.as_operator("acl", "apply", "--fleet-auth-file", str(setup.fleet_file))
    assert applied.returncode == 0, applied.stderr
    yield setup
    with contextlib.suppress(Exception):
        clients["operator"].delete(zk_namespace, recursive=True)
    clients["operator"].stop()
    clients["operator"].close()


def test_only_the_operator_may_request_a_switchover(secured: Secured, receiver: Receiver,
                                                    tmp_path: Path) -> None:
    operator = secured.clients["operator"]
    acls, _ = operator.get_acls(secured.layout.switchover)
    assert {acl.id.id.split(":")[0]: acl.perms for acl in acls} == {
        "operator": Permissions.ALL, "fleet": Permissions.READ}
    fleet = Fleet(secured.hosts, secured.namespace, tmp_path, receiver.url("/rounds"))
    try:
        for node_id in ("a", "b"):
            fleet.start(node_id, "--zk-auth-file", str(secured.fleet_file))
        receiver.wait_rounds(3)
        for who in (("--zk-auth-file", str(secured.fleet_file)), ()):
            attempt = secured.ctl(*who, "switchover")
            assert attempt.returncode == 2, attempt.stderr
            assert "refused" in one_line(attempt.stderr)
        assert operator.get(secured.layout.switchover)[0] == b""
        leader = json.loads(secured.ctl("status", "--json").stdout)["leader"]
        done = secured.as_operator("switchover")
        assert done.returncode == 0, done.stderr
        assert SWITCHED.fullmatch(done.stdout), done.stdout
        assert re.search(r"requested by operator@", fleet.daemons[leader].log())
    finally:
        fleet.stop_all()


# ------------------------------------------------------------- status --watch
def read_until(fd: int, done: Any, timeout: float) -> str:
    """What a terminal shows: read the pty until `done(text)` or the deadline."""
    text, deadline = "", time.monotonic() + timeout
    while not done(text) and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.1)[0]:
            with contextlib.suppress(OSError):
                text += os.read(fd, 65536).decode(errors="replace")
    return text


def test_status_watch_refreshes_in_place_until_ctrl_c(fleet: Fleet, receiver: Receiver) -> None:
    fleet.start_ready("1")
    receiver.wait_rounds(1)
    main, terminal = pty.openpty()
    process = subprocess.Popen(
        [str(BIN / "zk-sensorctl"), "--zookeeper", fleet.hosts, "--namespace",
         fleet.namespace, "status", "--watch", "--interval", "0.3"],
        stdout=terminal, stderr=subprocess.PIPE, text=True)
    os.close(terminal)
    try:
        shown = read_until(main, lambda text: text.count("Every 0.3 s: ") >= 3, 20)
        assert shown.count("\x1b[H\x1b[2J") >= 3, shown
        refreshes = shown.split("\x1b[H\x1b[2J")[1:]
        for screen in refreshes[:2]:
            assert re.match(rf"Every 0\.3 s: zk-sensorctl status {fleet.namespace}    "
                            r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\r?\n", screen), screen
            assert "leader     node 1 (epoch " in screen
        process.send_signal(signal.SIGINT)
        read_until(main, lambda _: process.poll() is not None, 10)
        assert process.wait(1) == 0
        assert process.stderr is not None and process.stderr.read() == ""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(main)


# ------------------------------------------------------------- check
def check(fleet: Fleet, *args: str) -> tuple[int, str]:
    result = ctl(fleet, "check", *args)
    assert result.stderr == ""
    return result.returncode, one_line(result.stdout)


def test_check_in_each_state_of_a_fleet(fleet: Fleet, receiver: Receiver) -> None:
    fleet.session_timeout = 10.0  # a paused leader keeps its office long enough to see
    assert check(fleet)[0] == CRITICAL
    assert ctl(fleet, "config", "set", "sampling_period", str(fleet.period)).returncode == 0
    fleet.start_ready("1", "2", "3")
    receiver.wait_rounds(2)

    def delivered() -> tuple[int, str] | None:
        """The check once the leader cleared what the receiver took (a round can still be
        on its way when the receiver counts it)."""
        code, line = check(fleet)
        return (code, line) if ", outbox 0 |" in line else None

    code, line = wait_for(delivered, 10, "the delivered rounds to leave the outbox")
    assert code == OK, line
    assert re.fullmatch(r"OK: leader node \S+ \(epoch \d+\), round \d+ released \d+\.\d s "
                        r"ago, 3/3 devices live, outbox 0 \| round_age=\S+ devices_live=3;;;0;3 "
                        r"outbox=0;10;500;0 dropped=0c", line), line

    receiver.status = 500
    wait_for(lambda: status(fleet)["outbox"]["pending"] >= 3, 20, "rounds piling up")
    code, line = check(fleet, "--outbox-warning", "2")
    assert code == WARNING and "rounds waiting for the collector (warning above 2)" in line
    code, line = check(fleet, "--outbox-warning", "1", "--outbox-critical", "2")
    assert code == CRITICAL and line.startswith("CRITICAL: ") and "critical above 2" in line
    receiver.status = 200
    wait_for(lambda: status(fleet)["outbox"]["pending"] == 0, 30, "the outbox to drain")

    follower = next(d for node, d in fleet.daemons.items() if node != status(fleet)["leader"])
    follower.signal(signal.SIGTERM)
    follower.wait_exit()
    code, line = check(fleet)
    assert code == WARNING and f"1 device gone ({follower.node_id})" in line, line
    assert "2/3 devices live" in line
    assert check(fleet, "--gone-allowed", "1")[0] == OK

    leader = fleet.daemons[status(fleet)["leader"]]
    leader.signal(signal.SIGSTOP)
    try:
        time.sleep(4 * fleet.period)
        code, line = check(fleet, "--gone-allowed", "1")
        assert code == CRITICAL, line
        assert re.match(r"CRITICAL: rounds stalled: none released for [\d.]+ s "
                        r"\(3 periods of 0\.5 s allowed\); leader node", line), line
    finally:
        leader.signal(signal.SIGCONT)
    fleet.stop_all()
    code, line = check(fleet)
    assert code == CRITICAL and line.startswith("CRITICAL: no leader"), line


def test_check_warns_about_dropped_rounds_until_acknowledged(
        fleet: Fleet, receiver: Receiver) -> None:
    receiver.status = 500
    fleet.start("1", "--outbox-limit", "2").wait_log(r"outbox full", timeout=30)
    receiver.status = 200
    wait_for(lambda: status(fleet)["outbox"]["pending"] == 0, 30, "the outbox to drain")
    dropped = status(fleet)["outbox"]["dropped"]
    code, line = check(fleet)
    assert code == WARNING, line
    assert f"{dropped} rounds dropped from the full outbox (--dropped-since {dropped} " \
        "acknowledges them)" in line
    code, line = check(fleet, "--dropped-since", str(dropped))
    assert code == OK, line


def test_check_is_unknown_when_zookeeper_cannot_be_reached(zk_hosts: str) -> None:
    started = time.monotonic()
    result = subprocess.run([str(BIN / "zk-sensorctl"), "--zookeeper",
                             f"127.0.0.1:{free_port()}", "check", "--timeout", "1"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 3
    assert one_line(result.stdout).startswith("UNKNOWN: cannot reach ZooKeeper at 127.0.0.1:")
    assert time.monotonic() - started < 10
    nowhere = subprocess.run([str(BIN / "zk-sensorctl"), "--zookeeper", zk_hosts,
                              "--namespace", "/no-fleet-here", "check"],
                             capture_output=True, text=True, timeout=30)
    assert nowhere.returncode == 3
    assert one_line(nowhere.stdout) == "UNKNOWN: no fleet at namespace /no-fleet-here"


# ------------------------------------------------------------- the rules, without a server
LINE = ["n_1_0000000001", "n_2_0000000002", "n_3_0000000003", "n_4_0000000004"]


@pytest.mark.parametrize(("request_", "me", "part"), [
    (Request(5, None, None), "1", Part.STAND_AGAIN),
    (Request(5, None, None), "2", Part.NONE),
    (Request(5, "3", LINE[2]), "2", Part.STAND_AGAIN),
    (Request(5, "3", LINE[2]), "1", Part.WAIT),
    (Request(5, "3", LINE[2]), "3", Part.NONE),
    (Request(5, "3", LINE[2]), "4", Part.NONE),
    (Request(4, "3", LINE[2]), "2", Part.INERT),
    (Request(5, "3", "n_3_0000000009"), "2", Part.NONE),
])
def test_each_node_knows_its_part(request_: Request, me: str, part: Part) -> None:
    assert part_of(request_, 5, "1", LINE, me) is part


def test_the_leader_stands_again_last() -> None:
    request = Request(5, "3", LINE[2])
    after_2_moved = [LINE[0], LINE[2], LINE[3], "n_2_0000000005"]
    assert part_of(request, 5, "1", after_2_moved, "1") is Part.STAND_AGAIN
    after_1_moved = [*after_2_moved[1:], "n_1_0000000006"]
    assert part_of(request, 5, "1", after_1_moved, "1") is Part.NONE


@pytest.mark.parametrize("data", [b"x", b"[]", b'{"epoch": -1}', b'{"epoch": true}',
                                  b'{"epoch": 1, "to": "3"}',
                                  b'{"epoch": 1, "to": "3", "candidate": "n_4_0000000001"}'])
def test_garbage_requests_are_refused(data: bytes) -> None:
    with pytest.raises(InvalidRequest):
        decode_request(data)


REQUEST_VALUES = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True)
                  | st.text(max_size=20) | st.sampled_from(LINE) | st.lists(st.integers()))
NEAR_MISS_REQUESTS = st.dictionaries(st.sampled_from(("epoch", "to", "candidate", "by")),
                                     REQUEST_VALUES, max_size=4)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=100) | NEAR_MISS_REQUESTS.map(lambda v: json.dumps(v).encode()))
def test_a_request_is_decoded_or_refused_as_invalid(data: bytes) -> None:
    try:
        request = decode_request(data)
    except InvalidRequest:
        return
    if request is not None:
        assert isinstance(request.epoch, int) and request.epoch >= 0
        assert (request.to is None) == (request.candidate is None)
        assert request.candidate is None or node_of(request.candidate) == request.to


def test_requests_round_trip() -> None:
    request = Request(7, "a-1", "n_a-1_0000000012", "operator@seat")
    assert decode_request(encode_request(request)) == request
    assert decode_request(b"") is None


def healthy_status(**changes: Any) -> FleetStatus:
    """A status as `status --json` prints it, with `changes`."""
    state: dict[str, Any] = {
        "leader": "2", "first_in_line": "2", "epoch": 5, "round": 812,
        "round_changed_at": 1000.0,
        "devices": [{"node": node, "live": True} for node in ("1", "2", "3")],
        "without_reading": [], "outbox": {"pending": 0, "dropped": 0},
    }
    state.update(changes)
    return FleetStatus.from_json(state)


def test_check_lines_without_a_server() -> None:
    assert assess(healthy_status(), 5.0, 1000.8, Limits()) == (
        OK, "OK: leader node 2 (epoch 5), round 812 released 0.8 s ago, 3/3 devices live, "
            "outbox 0 | round_age=0.8s;;15;0 devices_live=3;;;0;3 outbox=0;10;500;0 "
            "dropped=0c")
    code, line = assess(healthy_status(leader=None, first_in_line=None), 5.0, 1020.0, Limits())
    assert code == CRITICAL
    assert line.startswith("CRITICAL: no leader; rounds stalled: none released for 20.0 s")
    code, line = assess(healthy_status(outbox={"pending": 11, "dropped": 0}), 5.0, 1001.0,
                        Limits())
    assert code == WARNING

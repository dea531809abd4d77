"""The seed's behaviours on a real ZooKeeper: election, rounds, mean, devices, counter."""

import re
import signal
import time

from kazoo.client import KazooClient

from zk_sensor.fleet.layout import Layout
from zk_sensor.testing.fleet import Fleet, Receiver, status, wait_for


def leaders(fleet: Fleet) -> list[str]:
    """Nodes whose latest leadership line says they lead."""
    found = []
    for node_id, daemon in fleet.daemons.items():
        log = daemon.log()
        took = log.rfind("I am the leader now")
        gave = max(log.rfind("stepping down"), log.rfind("gave up leadership"))
        if daemon.running and took > gave:
            found.append(node_id)
    return found


def constant(value: float) -> tuple[str, ...]:
    """A real MCP3008 driver on gpiozero's mock pins with nothing attached: the chip reads
    zero, so the reading is exactly the offset."""
    return ("--sensor", "mcp3008", "--pin-factory", "mock", "--sensor-scale", "0",
            "--sensor-offset", str(value))


def test_three_daemons_elect_exactly_one_leader(fleet: Fleet, receiver: Receiver) -> None:
    fleet.start_ready("1", "2", "3")
    receiver.wait_rounds(3)
    assert len(leaders(fleet)) == 1
    state = status(fleet)
    assert state["leader"] == leaders(fleet)[0]
    assert sorted(d["node"] for d in state["devices"]) == ["1", "2", "3"]
    assert all(d["age"] < 5 for d in state["devices"])
    assert state["last_aggregate"]["count"] == 3


def test_the_mean_is_right_for_known_readings(fleet: Fleet, receiver: Receiver) -> None:
    for node_id, value in (("a", 70), ("b", 80), ("c", 96)):
        fleet.start(node_id, *constant(value))
    for daemon in fleet.daemons.values():
        daemon.wait_log("ready")
    full = wait_for(lambda: [d for d in receiver.snapshot() if d.body["count"] == 3], 20,
                    "a round with all three devices")
    body = full[0].body
    assert body["mean"] == 82.0
    assert (body["min"], body["max"]) == (70.0, 96.0)
    assert body["leader"] in {"a", "b", "c"}
    assert body["epoch"] >= 1
    assert full[0].method == "POST"


def test_seed_api_gets_the_mean_as_dato(fleet: Fleet, receiver: Receiver) -> None:
    fleet.api_url = receiver.url("/nuevo")
    fleet.start("a", *constant(75))
    fleet.start("b", *constant(85))
    found = wait_for(
        lambda: [d for d in receiver.snapshot() if d.query.get("dato") == ["80.0"]], 20,
        "GET /nuevo?dato=80.0",
    )
    assert found[0].method == "GET" and found[0].path == "/nuevo"


def test_garbage_reading_is_skipped_and_counted(fleet: Fleet, receiver: Receiver,
                                                 make_zk) -> None:
    zk: KazooClient = make_zk(fleet.hosts)
    readings = Layout(fleet.namespace).readings
    zk.ensure_path(readings)
    zk.create(f"{readings}/junk", b"\xff not json")
    zk.create(f"{readings}/nan", b'{"value": "NaN", "taken_at": 1, "round": 0}')
    fleet.start("a", *constant(10))
    fleet.start("b", *constant(20))
    leader_log = wait_for(
        lambda: next((d.log() for d in fleet.daemons.values() if "2 garbage skipped" in d.log()),
                     None), 20, "the leader to report two garbage readings")
    assert "junk" in leader_log and "nan" in leader_log
    full = wait_for(lambda: [d for d in receiver.snapshot() if d.body["count"] == 2], 20,
                    "a round over both real devices")
    assert full[0].body["mean"] == 15.0
    assert all(daemon.running for daemon in fleet.daemons.values())


def test_sigterm_of_the_leader_hands_over_at_once(fleet: Fleet, receiver: Receiver) -> None:
    fleet.start_ready("1", "2", "3")
    receiver.wait_rounds(2)
    old = wait_for(lambda: leaders(fleet), 10, "a leader")[0]
    stopped_at = time.time()
    fleet.daemons[old].signal(signal.SIGTERM)
    assert fleet.daemons[old].wait_exit() == 0
    assert "gave up leadership" in fleet.daemons[old].log()
    new = wait_for(lambda: [n for n in leaders(fleet) if n != old], 5, "a new leader")
    after = receiver.wait_rounds(3, after=stopped_at)
    assert after[0].received_at - stopped_at < 3 * fleet.period + 1.0
    assert after[-1].body["leader"] == new[0]
    rounds = receiver.rounds()
    assert rounds == sorted(set(rounds)), "rounds must grow across the leader change"


def test_sigkill_of_the_leader_gives_a_new_leader(fleet: Fleet, receiver: Receiver) -> None:
    fleet.start_ready("1", "2", "3")
    receiver.wait_rounds(2)
    old = wait_for(lambda: leaders(fleet), 10, "a leader")[0]
    old_epoch = receiver.snapshot()[-1].body["epoch"]
    killed_at = time.time()
    fleet.daemons[old].signal(signal.SIGKILL)
    fleet.daemons[old].wait_exit()
    after = receiver.wait_rounds(3, after=killed_at, timeout=fleet.session_timeout + 15)
    assert after[-1].body["leader"] != old
    assert after[-1].body["epoch"] > old_epoch
    assert after[0].received_at - killed_at < fleet.session_timeout + 2 * fleet.period + 2
    assert after[-1].body["count"] == 2


def test_leader_logs_devices_joining_and_leaving(fleet: Fleet, receiver: Receiver) -> None:
    fleet.start_ready("1", "2")
    leader = fleet.daemons[wait_for(lambda: leaders(fleet), 10, "a leader")[0]]
    leader.wait_log(r"connected devices \(2\): 1, 2")
    fleet.start_ready("3")
    leader.wait_log(r"connected devices \(3\): 1, 2, 3 \(joined: 3\)")
    follower = next(d for n, d in fleet.daemons.items() if d is not leader and n != "3")
    follower.signal(signal.SIGTERM)
    follower.wait_exit()
    remaining = ", ".join(sorted(n for n in ("1", "2", "3") if n != follower.node_id))
    leader.wait_log(rf"connected devices \(2\): {remaining} \(left: {follower.node_id}\)")
    others = [d for d in fleet.daemons.values() if d is not leader]
    assert all("connected devices" not in d.log() for d in others)


def test_barrier_releases_every_device_every_round(fleet: Fleet, receiver: Receiver) -> None:
    fleet.start_ready("1", "2", "3")
    deliveries = receiver.wait_rounds(8)
    steady = [d.body for d in deliveries[2:]]
    assert all(body["count"] == 3 for body in steady), [b["count"] for b in steady]
    old = leaders(fleet)[0]
    stopped_at = time.time()
    fleet.daemons[old].signal(signal.SIGTERM)
    fleet.daemons[old].wait_exit()
    after = receiver.wait_rounds(6, after=stopped_at)
    assert all(d.body["count"] == 2 for d in after[1:]), [d.body["count"] for d in after]
    rounds = [d.body["round"] for d in after]
    assert rounds == list(range(rounds[0], rounds[0] + len(rounds)))
    for node_id, daemon in fleet.daemons.items():
        if node_id == old:
            continue
        measured = [int(r) for r in re.findall(r"for round (\d+) \(measurement", daemon.log())]
        assert measured == list(range(measured[0], measured[-1] + 1)), node_id


def test_counter_equals_measurements_taken(fleet: Fleet, receiver: Receiver) -> None:
    fleet.start_ready("1", "2", "3")
    receiver.wait_rounds(6)
    fleet.stop_all()
    taken = fleet.measurements()
    assert taken >= 18
    assert status(fleet)["counter"] == taken
    fleet.start_ready("1")
    fleet.daemons["1"].wait_log(r"measurement \d+ of this node", count=2)
    fleet.stop_all()
    assert status(fleet)["counter"] == fleet.measurements()

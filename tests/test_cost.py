"""What a node costs, as a user would notice it: an idle daemon sleeps, rounds keep to
their schedule, and the fleet's write load stays near one write per device-round.
The figures themselves live in `make bench`; these are generous guards."""

import os
import re
import signal
import time
from pathlib import Path

from kazoo.client import KazooClient

from zk_sensor.fleet.layout import Layout
from zk_sensor.testing.fleet import Daemon, Fleet, Receiver, status, wait_for

BUSY_LOOP_LIMIT = 0.10
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(daemon: Daemon) -> float:
    """User plus system time of the process, from /proc (fields 14 and 15)."""
    fields = Path(f"/proc/{daemon.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def test_an_idle_daemon_sleeps(fleet: Fleet, receiver: Receiver) -> None:
    fleet.period = 5.0
    daemons = fleet.start_ready("1", "2")
    receiver.wait_rounds(1, timeout=20)
    before = {d.node_id: cpu_seconds(d) for d in daemons}
    started = time.monotonic()
    time.sleep(10)
    elapsed = time.monotonic() - started
    shares = {d.node_id: (cpu_seconds(d) - before[d.node_id]) / elapsed for d in daemons}
    assert all(share < BUSY_LOOP_LIMIT for share in shares.values()), (
        f"a daemon at period 5 s used {shares} of a core: a busy loop")


def test_rounds_keep_a_fixed_schedule(fleet: Fleet, receiver: Receiver) -> None:
    """Round k closes at t0 + k x period: the leader's work must not stretch the period,
    which over 20 rounds would add up to far more than the bound."""
    fleet.start_ready("1", "2", "3")
    rounds = receiver.wait_rounds(22, timeout=40)[2:22]
    times = [d.body["time"] for d in rounds]
    assert [d.body["round"] for d in rounds] == list(range(rounds[0].body["round"],
                                                           rounds[0].body["round"] + 20))
    drift = [abs(t - (times[0] + k * fleet.period)) for k, t in enumerate(times)]
    assert max(drift) < 0.15, f"rounds drifted off their slots by up to {max(drift):.3f} s"


def test_the_counter_is_exact_at_one_write_per_measurement_even_after_sigkill(
    fleet: Fleet, receiver: Receiver, make_zk
) -> None:
    """Each reading carries its node's count and outlives the node: the counter stays
    exact after a node is killed and its session expires, and nothing else is written."""
    daemons = fleet.start_ready("1", "2", "3")
    receiver.wait_rounds(10, timeout=40)
    zk: KazooClient = make_zk(fleet.hosts)
    layout = Layout(fleet.namespace)
    daemons[2].signal(signal.SIGKILL)
    daemons[2].wait_exit()
    wait_for(lambda: not any(name.startswith("n_3_")
                             for name in zk.get_children(layout.election)),
             3 * fleet.session_timeout, "the killed node's session to expire")
    wait_for(lambda: any("[1 from nodes gone]" in d.log() for d in daemons[:2]), 10,
             "the leader to count the killed node's reading as from a node gone")
    fleet.stop_all()
    taken = fleet.measurements()
    assert status(fleet)["counter"] == taken, "the counter must equal the readings taken"
    mine = len(re.findall(r" measured \S+ for round", daemons[0].log()))
    writes = zk.get(layout.reading("1"))[1].version + 1
    assert writes == mine, f"{writes} writes of the reading for {mine} measurements"
    assert zk.exists(layout.counter_shard("1")) is None, "no counter shard is written"

"""A sensor never stalls its node: reads run on one reader thread with a deadline.

Unit tests drive the reader and the device's round logic with a sensor that blocks on
an Event and a ZooKeeper stand-in that records writes. The integration test runs real
daemons, one of them leading with a DS18B20 on a fake w1 sysfs whose `w1_slave` is
swapped for a FIFO: the driver's read then blocks in open(2), as on a wedged bus.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kazoo.exceptions import ConnectionLoss, NodeExistsError, NoNodeError

from zk_sensor.fleet.layout import Layout
from zk_sensor.fleet.readings import decode_reading, encode_reading
from zk_sensor.node.clock import Clock, clock_synchronized
from zk_sensor.node.device import Device
from zk_sensor.node.reader import CLOSE_WAIT, Answer, Reader, read_deadline
from zk_sensor.node.settings import build_settings
from zk_sensor.sensors import SensorError, open_sensor
from zk_sensor.testing.fleet import Daemon, Fleet, Receiver, status, wait_for

TIMEOUT = 1.0
PATH = Layout("/t").reading("n")


class BlockingSensor:
    """read() waits until the test lets one read through, like a bus that hangs."""

    name = "blocking"

    def __init__(self) -> None:
        self.gate = threading.Semaphore(0)
        self.values: queue.SimpleQueue[float | Exception] = queue.SimpleQueue()
        self.started = threading.Event()
        self.closed = False

    def release(self, value: float | Exception) -> None:
        self.values.put(value)
        self.gate.release()

    def read(self) -> float:
        self.started.set()
        self.gate.acquire()
        value = self.values.get()
        if isinstance(value, Exception):
            raise value
        return value

    def close(self) -> None:
        self.closed = True


class Stat:
    ephemeralOwner = 0  # kazoo's ZnodeStat field name


class FakeZk:
    """The calls Device makes, on a dict; `fail_writes` makes a write's outcome unknown."""

    def __init__(self) -> None:
        self.nodes: dict[str, bytes] = {}
        self.writes: list[bytes] = []
        self.fail_writes = False

    def get(self, path: str) -> tuple[bytes, Stat]:
        if path not in self.nodes:
            raise NoNodeError(path)
        return self.nodes[path], Stat()

    def exists(self, path: str) -> Stat | None:
        return Stat() if path in self.nodes else None

    def set(self, path: str, data: bytes) -> None:
        if path not in self.nodes:
            raise NoNodeError(path)
        self._write(path, data)

    def create(self, path: str, data: bytes, acl: object = None) -> None:
        if path in self.nodes:
            raise NodeExistsError(path)
        self._write(path, data)

    def _write(self, path: str, data: bytes) -> None:
        if self.fail_writes:
            raise ConnectionLoss("the reply was lost")
        self.nodes[path] = data
        self.writes.append(data)

    def reading(self) -> dict[str, Any]:
        return json.loads(self.nodes[PATH])


class Rig:
    """A Device with a real Reader on a BlockingSensor; answers reach the device only
    when the test hands them over, as the loop's event queue would."""

    def __init__(self, published: bytes | None = None) -> None:
        self.zk = FakeZk()
        if published is not None:
            self.zk.nodes[PATH] = published
        self.sensor = BlockingSensor()
        self.answers: queue.SimpleQueue[Answer] = queue.SimpleQueue()
        self.reader = Reader(self.sensor, self.answers.put)
        self.device = Device(self.zk, Layout("/t"), "n", self.reader,  # type: ignore[arg-type]
                             Clock(lambda: True))
        self.device.resume_count()

    def deliver(self) -> Answer:
        answer = self.answers.get(timeout=5)
        self.device.accept(answer)
        return answer

    def answer_now(self, round_number: int, value: float | Exception, now: float) -> bool:
        """Ask for the round, let the read through, hand the answer over, settle."""
        self.device.measure(round_number, now, TIMEOUT)
        self.sensor.release(value)
        self.deliver()
        return self.device.measure(round_number, now + 0.01, TIMEOUT)

    def close(self) -> None:
        for _ in range(8):
            self.sensor.release(0.0)
        self.reader.close()


@pytest.fixture
def rig() -> Any:
    made = Rig()
    yield made
    made.close()


def reader_threads() -> int:
    return sum(1 for thread in threading.enumerate() if thread.name == "sensor-reader")


def test_a_value_is_published_with_its_count_and_failures(rig: Rig) -> None:
    assert rig.answer_now(3, 80.5, now=time.monotonic())
    assert rig.zk.reading() | {"taken_at": 0} == {"value": 80.5, "taken_at": 0, "round": 3,
                                                   "count": 1, "failures": 0}
    assert rig.device.measured_round == 3 and rig.device.count == 1


def test_a_round_is_read_at_most_once(rig: Rig) -> None:
    now = time.monotonic()
    rig.answer_now(3, 80.5, now)
    rig.device.measure(3, now + 0.5, TIMEOUT)
    assert not rig.reader.busy and len(rig.zk.writes) == 1


def test_a_hung_read_fails_its_round_starts_no_second_read_and_its_late_value_is_dropped(
    rig: Rig,
) -> None:
    base = time.monotonic()
    rig.answer_now(1, 80.0, base)
    threads = reader_threads()
    rig.device.measure(2, base + 1, TIMEOUT)
    assert not rig.device.measure(2, base + 1 + TIMEOUT, TIMEOUT)
    assert rig.device.skipped == 1 and rig.device.measured_round == 2
    assert rig.zk.reading()["failures"] == 1 and rig.zk.reading()["value"] == 80.0
    for round_number in (3, 4, 5):
        opened = base + round_number
        rig.device.measure(round_number, opened, TIMEOUT)
        assert rig.device.wanted is not None and rig.device.wanted.ticket is None
        rig.device.measure(round_number, opened + TIMEOUT, TIMEOUT)
    assert reader_threads() == threads, "no thread is started while a read hangs"
    assert rig.device.skipped == 4 and rig.zk.reading()["failures"] == 4
    assert rig.zk.reading() | {"taken_at": 0} == {"value": 80.0, "taken_at": 0, "round": 1,
                                                   "count": 1, "failures": 4}
    rig.device.measure(6, base + 6, TIMEOUT)
    rig.sensor.release(99.0)
    rig.deliver()
    assert rig.device.answer is None, "the hung read's value belongs to round 2: dropped"
    rig.device.measure(6, base + 6.01, TIMEOUT)
    assert rig.reader.busy, "the reader is free again and reads round 6"
    rig.sensor.release(81.0)
    rig.deliver()
    assert rig.device.measure(6, base + 6.02, TIMEOUT)
    assert [json.loads(w)["value"] for w in rig.zk.writes] == [80.0] * 5 + [81.0]
    assert rig.zk.reading()["count"] == 2 and rig.zk.reading()["failures"] == 4


def test_an_answer_past_its_deadline_is_a_failed_read(rig: Rig) -> None:
    rig.answer_now(1, 80.0, time.monotonic())
    rig.device.measure(2, time.monotonic() - 2 * TIMEOUT, TIMEOUT)
    rig.sensor.release(99.0)
    rig.deliver()
    assert not rig.device.measure(2, time.monotonic(), TIMEOUT)
    assert rig.device.skipped == 1 and rig.zk.reading()["value"] == 80.0


def test_a_sensor_error_is_skipped_and_counted(rig: Rig) -> None:
    assert not rig.answer_now(1, SensorError("CRC check failed"), time.monotonic())
    assert rig.device.skipped == 1 and rig.device.measured_round == 1
    assert rig.zk.writes == [], "a node that never published has nothing to republish"
    assert rig.answer_now(2, 80.0, time.monotonic())
    assert rig.zk.reading()["failures"] == 1, "the next good reading carries the failures"


def test_a_driver_bug_is_a_failed_read_not_a_dead_reader(rig: Rig) -> None:
    assert not rig.answer_now(1, ZeroDivisionError("bug"), time.monotonic())
    assert rig.device.skipped == 1
    assert rig.answer_now(2, 80.0, time.monotonic())


def test_a_round_that_closes_before_its_reading_is_dropped_uncounted(rig: Rig) -> None:
    base = time.monotonic()
    rig.device.measure(1, base, TIMEOUT)
    rig.device.measure(2, base + 0.5, TIMEOUT)
    assert rig.device.skipped == 0 and rig.device.wanted is not None
    assert rig.device.wanted.round == 2 and rig.device.wanted.ticket is None
    rig.sensor.release(80.0)
    rig.deliver()
    rig.device.measure(2, base + 0.6, TIMEOUT)
    rig.sensor.release(81.0)
    rig.deliver()
    assert rig.device.measure(2, base + 0.7, TIMEOUT)
    assert [json.loads(w)["round"] for w in rig.zk.writes] == [2]


def test_a_failed_read_after_an_unknown_write_never_lowers_the_count(rig: Rig) -> None:
    rig.answer_now(1, 80.0, time.monotonic())
    rig.zk.fail_writes = True
    with pytest.raises(ConnectionLoss):
        rig.answer_now(2, 81.0, time.monotonic())
    rig.zk.fail_writes = False
    rig.answer_now(2, SensorError("CRC"), time.monotonic())
    assert len(rig.zk.writes) == 1, "the reading of round 2 may have landed: no republish"
    assert rig.answer_now(3, 82.0, time.monotonic())
    assert rig.zk.reading()["count"] == 2 and rig.zk.reading()["failures"] == 1


def test_a_restarted_node_resumes_its_failures_and_republishes_its_reading() -> None:
    made = Rig(published=encode_reading(80.0, 5.0, 7, 12, failures=3))
    try:
        assert made.device.count == 12 and made.device.failures == 3
        made.answer_now(8, SensorError("bus"), time.monotonic())
        assert made.zk.reading() == {"value": 80.0, "taken_at": 5.0, "round": 7, "count": 12,
                                     "failures": 4}
    finally:
        made.close()


def test_closing_leaves_a_hung_sensor_open_and_closes_an_idle_one() -> None:
    hung = BlockingSensor()
    reader = Reader(hung, lambda answer: None)
    reader.read(1, time.monotonic())
    assert hung.started.wait(2)
    started = time.monotonic()
    reader.close()
    assert time.monotonic() - started < CLOSE_WAIT + 0.5 and not hung.closed
    hung.release(0.0)
    idle = BlockingSensor()
    Reader(idle, lambda answer: None).close()
    assert idle.closed


def test_the_deadline_is_a_share_of_the_live_period() -> None:
    assert read_deadline(5.0) == 2.5 and read_deadline(0.5) == 0.25


def test_the_deadline_is_never_shorter_than_the_driver_s_read(tmp_path: Path) -> None:
    """A DS18B20 converts for 750 ms at 12 bits: half of a 1 s period would fail every
    read, even after `config set sampling_period 1` on a running fleet. Bounds around the
    driver keep its declaration."""
    device = tmp_path / "28-000000000002"
    device.mkdir()
    (device / "w1_slave").write_text(W1_SLAVE.format(23125))
    twelve_bits = ds18b20_reader(device, sensor_max=60.0)
    (device / "conv_time").write_text("94\n")
    nine_bits = ds18b20_reader(device)
    try:
        assert twelve_bits.deadline(1.0) == pytest.approx(0.8)
        assert twelve_bits.deadline(5.0) == 2.5
        assert nine_bits.deadline(0.2) == pytest.approx(0.144)
    finally:
        twelve_bits.close()
        nine_bits.close()


def ds18b20_reader(device: Path, **values: object) -> Reader:
    configured = build_settings({"node_id": "n", "sensor": "ds18b20",
                                 "w1_device": str(device), **values}, {}, None)
    return Reader(open_sensor(configured), lambda answer: None)


@settings(max_examples=400, deadline=None)
@given(failures=st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
       clock=st.none() | st.integers() | st.text(max_size=10))
def test_the_new_fields_decode_or_refuse_with_a_value_error(failures: Any, clock: Any) -> None:
    payload = {"value": 1.0, "taken_at": 2.0, "round": 3, "count": 4}
    for key, value in (("failures", failures), ("clock", clock)):
        if value is not None:
            payload[key] = value
    try:
        reading = decode_reading("n", json.dumps(payload).encode())
    except ValueError:
        return
    assert reading.failures >= 0 and reading.clock_synced == (clock != "unsynced")


def test_readings_of_earlier_releases_decode_with_no_failures_and_a_synced_clock() -> None:
    reading = decode_reading("n", b'{"value": 1, "taken_at": 2, "round": 3, "count": 4}')
    assert (reading.failures, reading.clock_synced) == (0, True)


# --- a real fleet whose leader's DS18B20 hangs ----------------------------------------

W1_SLAVE = ("72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n"
            "72 01 4b 46 7f ff 0e 10 57 t={}\n")


def threads_of(daemon: Daemon) -> int:
    return len(os.listdir(f"/proc/{daemon.process.pid}/task"))


def cpu_seconds(daemon: Daemon) -> float:
    fields = Path(f"/proc/{daemon.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def device_of(fleet: Fleet, node_id: str) -> dict[str, Any]:
    return next(d for d in status(fleet)["devices"] if d["node"] == node_id)


def hang(w1_slave: Path) -> None:
    """The next read blocks in open(2) until something writes into the FIFO."""
    fifo = w1_slave.with_name("w1_slave.fifo")
    os.mkfifo(fifo)
    os.replace(fifo, w1_slave)


def unhang(w1_slave: Path, millidegrees: int) -> None:
    """Answer the hung read with a value of its own, then give later reads a file."""
    good = w1_slave.with_name("w1_slave.good")
    good.write_text(W1_SLAVE.format(23125))
    with w1_slave.open("w") as fifo:
        os.replace(good, w1_slave)
        fifo.write(W1_SLAVE.format(millidegrees))


def test_a_hung_sensor_never_stalls_its_leader(fleet: Fleet, receiver: Receiver,
                                               tmp_path: Path) -> None:
    device = tmp_path / "28-000000000001"
    device.mkdir()
    w1_slave = device / "w1_slave"
    w1_slave.write_text(W1_SLAVE.format(23125))
    (device / "conv_time").write_text("94\n")  # 9 bits: fast enough for the fleet's 0.5 s
    notify_path = tmp_path / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    pings: list[float] = []

    def listen() -> None:
        """Read as systemd would: a full datagram queue would block the daemon's sends."""
        with contextlib.suppress(OSError):
            while message := notify.recv(4096):
                pings.extend(time.monotonic() for _ in range(message.count(b"WATCHDOG=1")))

    threading.Thread(target=listen, daemon=True).start()
    try:
        leader = fleet.start("1", "--sensor", "ds18b20", "--w1-device", str(device),
                             env={"NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "6000000"})
        leader.wait_log(r"ready: first reading published")
        leader.wait_log(r"I am the leader now")
        fleet.start_ready("2")
        receiver.wait_rounds(3, timeout=20)
        first = device_of(fleet, "1")
        assert first["value"] == 23.125 and first["failures"] == 0
        assert first["clock"] == ("synced" if clock_synchronized() else "unsynced")

        hang(w1_slave)
        leader.wait_log(r"reading for round \d+ skipped \(1 so far\): no answer from the sensor")
        threads, cpu, hung_at = threads_of(leader), cpu_seconds(leader), time.monotonic()
        time.sleep(7.0)
        fed = [at for at in pings if at > hung_at]
        assert len(fed) >= 2, "the watchdog is fed while the sensor hangs"
        assert threads_of(leader) == threads, "no thread was started while the read hangs"
        busy = (cpu_seconds(leader) - cpu) / (time.monotonic() - hung_at)
        assert busy < 0.10, f"the hung node used {busy:.0%} of a core: a busy loop"
        during = receiver.wait_rounds(10, timeout=10, after=time.time() - 7.0)
        assert all(d.body["count"] == 1 for d in during), "only node 2's readings count"
        rounds = sorted(d.body["round"] for d in during)
        assert rounds == list(range(rounds[0], rounds[0] + len(rounds))), "rounds kept closing"
        stuck = device_of(fleet, "1")
        assert stuck["value"] == 23.125 and stuck["failures"] >= 10
        warned = re.findall(r"WARNING .*reading for round \d+ skipped", leader.log())
        assert len(warned) == 1, "one warning per hang"

        unhang(w1_slave, 99999)
        leader.wait_log(r"the sensor answered after \d+\.\d s, too late for round \d+: its "
                        r"reading is discarded")
        wait_for(lambda: device_of(fleet, "1")["round"] > stuck["round"], 10,
                 "the node to publish readings again")
        back = device_of(fleet, "1")
        assert back["value"] == 23.125, "the hung read's 99.999 was never published"
        assert back["failures"] >= stuck["failures"]
        assert " measured 99.999" not in leader.log()
    finally:
        notify.shutdown(socket.SHUT_RDWR)
        notify.close()

"""The clock: how a node tells a synchronised wall clock, and how it marks the readings,
rounds and releases it timed before NTP set it."""

from __future__ import annotations

import ctypes
import json
import logging
import queue
import time
from pathlib import Path
from typing import Any

import pytest
from kazoo.exceptions import NoNodeError

from zk_sensor.fleet.aggregate import aggregate
from zk_sensor.fleet.barrier import BarrierState, decode_barrier, encode_barrier, next_round
from zk_sensor.fleet.layout import Layout
from zk_sensor.fleet.outbox import decode_pending, encode_pending
from zk_sensor.fleet.readings import Reading, decode_reading, encode_reading
from zk_sensor.fleet.rounds import slowest_device
from zk_sensor.node import clock
from zk_sensor.node.clock import Clock, clock_synchronized, kernel_synchronized
from zk_sensor.node.device import Device
from zk_sensor.node.reader import Answer, Reader


def test_this_machine_answers_with_a_bool() -> None:
    """Whatever the machine (a synchronised host, a container, a VM without NTP)."""
    assert isinstance(clock_synchronized(), bool)
    assert kernel_synchronized() in (True, False, None)


def kernel_reporting(maxerror: int, result: int = 0) -> Any:
    """A stand-in for libc's adjtimex that fills in the struct as the kernel would."""

    def adjtimex(timex: Any) -> int:
        timex._obj.maxerror = maxerror
        return result

    return adjtimex


@pytest.mark.parametrize(("maxerror", "synced"), [(16_000_000, False), (15_999_999, True),
                                                  (50_000, True)])
def test_synchronised_means_a_maximum_error_below_16_s(monkeypatch: pytest.MonkeyPatch,
                                                       maxerror: int, synced: bool) -> None:
    monkeypatch.setattr(clock, "ADJTIMEX", kernel_reporting(maxerror))
    assert kernel_synchronized() is synced


def test_a_refused_adjtimex_falls_back_to_timesyncds_flag(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    monkeypatch.setattr(clock, "ADJTIMEX", kernel_reporting(0, result=-1))
    monkeypatch.setattr(clock, "TIMESYNCD_FLAG", tmp_path / "synchronized")
    assert kernel_synchronized() is None and clock_synchronized() is False
    (tmp_path / "synchronized").touch()
    assert clock_synchronized() is True


def test_the_struct_is_the_size_glibc_uses() -> None:
    """208 bytes with 64-bit longs, 128 with 32-bit ones (a 32-bit Raspberry Pi OS)."""
    assert ctypes.sizeof(clock._Timex) == (208 if ctypes.sizeof(ctypes.c_long) == 8 else 128)


def test_one_line_per_change(caplog: pytest.LogCaptureFixture) -> None:
    sequence = iter([False, False, True, True, False, True])
    watch = Clock(lambda: next(sequence))
    with caplog.at_level(logging.INFO, logger="zk_sensor"):
        seen = [watch.synced() for _ in range(6)]
    assert seen == [False, False, True, True, False, True]
    assert [(r.levelname, r.getMessage().split(":")[0]) for r in caplog.records] == [
        ("WARNING", "the wall clock is not synchronised"),
        ("INFO", "the wall clock is synchronised now"),
        ("WARNING", "the wall clock is not synchronised any more"),
        ("INFO", "the wall clock is synchronised now"),
    ]


def test_a_clock_synchronised_from_the_start_logs_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="zk_sensor"):
        assert Clock(lambda: True).synced()
    assert caplog.records == []


def test_the_mark_round_trips_and_is_absent_on_a_synchronised_reading() -> None:
    unsynced = encode_reading(80.0, 1.0, 2, 3, clock_synced=False)
    assert json.loads(unsynced)["clock"] == "unsynced"
    assert not decode_reading("n", unsynced).clock_synced
    assert "clock" not in json.loads(encode_reading(80.0, 1.0, 2, 3))


class OneZnode:
    """Just what publishing a first reading needs."""

    def __init__(self) -> None:
        self.data: bytes | None = None

    def get(self, path: str) -> tuple[bytes, None]:
        raise NoNodeError(path)

    def create(self, path: str, data: bytes, acl: object = None) -> None:
        self.data = data


class Instant:
    name = "instant"

    def read(self) -> float:
        return 21.5

    def close(self) -> None:
        pass


@pytest.mark.parametrize("synced", [True, False])
def test_a_node_marks_its_reading_with_what_the_detector_says(synced: bool) -> None:
    zk = OneZnode()
    answers_posted: queue.SimpleQueue[Answer] = queue.SimpleQueue()
    reader = Reader(Instant(), answers_posted.put)
    device = Device(zk, Layout("/t"), "n", reader, Clock(lambda: synced))  # type: ignore[arg-type]
    try:
        device.resume_count()
        now = time.monotonic()
        device.measure(1, now, 1.0)
        device.accept(answers_posted.get(timeout=5))
        assert device.measure(1, now, 1.0)
    finally:
        reader.close()
    assert zk.data is not None
    assert decode_reading("n", zk.data).clock_synced is synced


@pytest.mark.parametrize("synced", [True, False])
def test_a_leader_marks_the_round_and_its_release_with_its_clock(synced: bool) -> None:
    """What travels in the outbox to the collector and in the barrier to every node."""
    result = aggregate([20.0, 22.0], round_number=3, epoch=1, leader="a", now=5.0,
                       clock_synced=synced)
    assert result is not None
    assert ("clock" in result.as_dict()) is not synced
    assert decode_pending(encode_pending(result)).clock_synced is synced
    released = next_round(BarrierState(round=3), epoch=1, leader="a", now=6.0, last=result,
                          clock_synced=synced)
    payload = json.loads(encode_barrier(released))
    assert payload.get("clock", "synced") == ("synced" if synced else "unsynced")
    assert payload["last"].get("clock", "synced") == payload.get("clock", "synced")
    decoded = decode_barrier(encode_barrier(released))
    assert decoded is not None and decoded.clock_synced is synced


def test_the_slowest_device_is_timed_on_zookeepers_clock_not_the_nodes() -> None:
    """A node on a wrong clock (taken_at far off) counts by when its reading landed."""
    on_time = Reading("a", 1.0, 100.25, 3, stored_at=500.25)
    late_on_a_wrong_clock = Reading("b", 1.0, 4000.0, 3, clock_synced=False, stored_at=500.5)
    assert slowest_device([on_time, late_on_a_wrong_clock], released_stored_at=500.0) == 0.5
    assert slowest_device([on_time], released_stored_at=0.0) == 0.0
    assert slowest_device([], released_stored_at=500.0) == 0.0

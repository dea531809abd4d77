"""The node's one sensor thread: reads run off the loop, so a wedged bus cannot stall it.

A DS18B20 read takes 750 ms when the 1-Wire bus is healthy and never returns when it is
wedged; a read made by the loop itself would then stop the rounds, the lease renewals
and the watchdog feeds with it. The loop hands a read to this thread and carries on; the
thread only reads the sensor and posts the answer (never ZooKeeper: every call stays in
the loop). There is one thread per node for its whole life, never one per read: a read
that hangs keeps its thread, and no other read starts until it returns, so a hung driver
costs one stuck thread, not one more every round.
"""

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from zk_sensor.sensors import Sensor, SensorError, take_reading
from zk_sensor.sensors.base import READ_SHARE, min_read_time, read_deadline

__all__ = ["READ_SHARE", "Answer", "Reader", "read_deadline"]

log = logging.getLogger("zk_sensor")

# At shutdown, how long an ordinary read may take to finish before the node exits
# without closing the sensor under it.
CLOSE_WAIT = 1.0


@dataclass(frozen=True)
class Answer:
    """What one read came to: a value, or why there is none."""

    ticket: int
    round: int
    value: float | None
    error: str | None
    started_at: float
    finished_at: float

    @property
    def took(self) -> float:
        return self.finished_at - self.started_at


class Reader:
    """`read`, `busy`, `finished` and `close` belong to the loop's thread; the worker
    thread touches only the job queue and the sensor."""

    def __init__(self, sensor: Sensor, post: Callable[[Answer], None]) -> None:
        self.sensor = sensor
        self.post = post
        self.jobs: queue.SimpleQueue[tuple[int, int] | None] = queue.SimpleQueue()
        self.tickets = itertools.count(1)
        self.busy_since: float | None = None
        self.min_read_time = min_read_time(sensor)
        self.thread = threading.Thread(target=self._work, name="sensor-reader", daemon=True)
        self.thread.start()

    @property
    def busy(self) -> bool:
        return self.busy_since is not None

    def busy_for(self, now: float) -> float:
        return now - self.busy_since if self.busy_since is not None else 0.0

    def deadline(self, period: float) -> float:
        """This sensor's reading deadline at that sampling period (sensors/base.py)."""
        return read_deadline(period, self.min_read_time)

    def read(self, round_number: int, now: float) -> int:
        """Start a read (only while not busy); its answer comes back through `post`
        carrying the ticket returned here."""
        ticket = next(self.tickets)
        self.busy_since = now
        self.jobs.put((ticket, round_number))
        return ticket

    def finished(self) -> None:
        """The loop received the answer of the read in flight: the thread is free."""
        self.busy_since = None

    def _work(self) -> None:
        while (job := self.jobs.get()) is not None:
            ticket, round_number = job
            started = time.monotonic()
            try:
                value, error = take_reading(self.sensor), None
            except SensorError as failure:
                value, error = None, str(failure)
            except Exception as failure:  # a driver bug must not kill the node's only reader
                value, error = None, f"{type(failure).__name__}: {failure}"
            self.post(Answer(ticket, round_number, value, error, started, time.monotonic()))

    def close(self) -> None:
        """Stop the thread and close the sensor, unless a read is stuck in the driver:
        closing a device under a thread that is inside it can crash the process, and
        the thread (a daemon thread) does not keep the process from exiting."""
        self.jobs.put(None)
        self.thread.join(CLOSE_WAIT)
        if self.thread.is_alive():
            log.warning("the sensor's read has not returned; exiting without closing it")
            return
        self.sensor.close()

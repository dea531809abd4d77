"""What the other threads tell the daemon's loop, one small type per kind of news.

Kazoo's threads (the connection listener, watches), the courier and the sensor's reader
never act on what they learn: they post one of these on the mailbox and wake the loop,
which takes them in order and decides (daemon.py). A type per event, rather than a tag and
loose arguments, lets the loop `match` on it and mypy check every handler against what
was posted.
"""

import queue
from collections.abc import Iterator
from dataclasses import dataclass

from zk_sensor.fleet.outbox import Outcome
from zk_sensor.node.reader import Answer
from zk_sensor.waker import Waker
from zk_sensor.zk.interface import ConnectionState


@dataclass(frozen=True)
class ConnectionChanged:
    """Kazoo's connection listener: the session is suspended, lost or connected again."""

    state: ConnectionState


@dataclass(frozen=True)
class ElectionChanged:
    """The candidate ahead of this node's is gone: the line must be looked at again."""


@dataclass(frozen=True)
class ConfigChanged:
    """A live config znode changed (None: deleted)."""

    key: str
    data: bytes | None


@dataclass(frozen=True)
class BarrierChanged:
    """The barrier's watch fired: a round was released, or the znode came or went."""


@dataclass(frozen=True)
class DevicesChanged:
    """The election folder's children changed: the leader's device list is stale."""


@dataclass(frozen=True)
class Delivered:
    """The courier's thread: the collector's answer for a round ("delivered", "rejected"
    or "fenced", as delivery.py reports it) and the detail for the log line."""

    round_number: int
    outcome: Outcome
    detail: str


@dataclass(frozen=True)
class ReadingDone:
    """The sensor's reader thread: a read came back, with its value or its failure."""

    answer: Answer


@dataclass(frozen=True)
class SwitchoverAsked:
    """The switchover znode's watch fired: an operator wrote or withdrew a request."""


Event = (ConnectionChanged | ElectionChanged | ConfigChanged | BarrierChanged
         | DevicesChanged | Delivered | ReadingDone | SwitchoverAsked)


class Mailbox:
    """The one way into the loop from another thread: posting only enqueues and wakes, so
    no callback ever blocks, calls ZooKeeper or touches the loop's state."""

    def __init__(self, waker: Waker) -> None:
        self.waker = waker
        self.queue: queue.SimpleQueue[Event] = queue.SimpleQueue()

    def post(self, event: Event) -> None:
        self.queue.put(event)
        self.waker.wake()

    # The callbacks handed to the other threads, in the shapes they call them with.

    def election_changed(self) -> None:
        self.post(ElectionChanged())

    def config_changed(self, key: str, data: bytes | None) -> None:
        self.post(ConfigChanged(key, data))

    def barrier_changed(self, _event: object) -> None:
        self.post(BarrierChanged())

    def devices_changed(self, _event: object) -> None:
        self.post(DevicesChanged())

    def switchover_asked(self, _event: object) -> None:
        self.post(SwitchoverAsked())

    def delivered(self, round_number: int, outcome: Outcome, detail: str) -> None:
        self.post(Delivered(round_number, outcome, detail))

    def reading_done(self, answer: Answer) -> None:
        self.post(ReadingDone(answer))

    def taken(self) -> Iterator[Event]:
        """The events posted so far, oldest first, each taken off the queue as it is
        yielded (from the loop's thread)."""
        while True:
            try:
                yield self.queue.get_nowait()
            except queue.Empty:
                return

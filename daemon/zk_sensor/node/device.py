"""A node's own part of each round: read the sensor, publish the reading with its count.

The reading znode is persistent and carries the node's whole count so far (counter.py):
the write that publishes a measurement is the write that counts it. Every write is an
absolute value, so after an unknown outcome the next write simply says it again.

The sensor is read off the loop (reader.py). A node asks for a reading of the open round
once, and the round is settled when the answer comes or its deadline passes, whichever
is first: a value is published; an error, an answer past the deadline or no answer at
all is a failed read, skipped and counted. An answer to a read whose round is over is
discarded. A failed read also republishes the last reading known to be on ZooKeeper,
unchanged but for the node's failure count, so a node whose every read fails shows
its failures rising and its reading ageing in `zk-sensorctl status`: still at most one
write per device-round, and the count (and so the counter) untouched.
"""

import contextlib
import dataclasses
import logging
import time

from zk_sensor.fleet.counter import own_count
from zk_sensor.fleet.layout import Layout
from zk_sensor.fleet.payloads import Garbage, Reading
from zk_sensor.node.clock import Clock
from zk_sensor.node.reader import Answer, Reader
from zk_sensor.zk.errors import NodeExistsError, NoNodeError
from zk_sensor.zk.interface import ACL, Zk

log = logging.getLogger("zk_sensor")


@dataclasses.dataclass
class Wanted:
    """The reading the node is waiting for: the round, its deadline (monotonic) and, once
    the reader took it, the read's ticket."""

    round: int
    deadline: float
    ticket: int | None = None


class Device:
    """This node as a device of the fleet, which it is whether or not it leads: its
    reading znode, its count and failures, and the one reading it waits for, kept apart
    from the leader's state so that losing office never touches the node's own count."""

    def __init__(self, zk: Zk, layout: Layout, node_id: str, reader: Reader,
                 clock: Clock | None = None) -> None:
        self.zk = zk
        self.layout = layout
        self.node_id = node_id
        self.reader = reader
        self.clock = clock or Clock()
        self.path = layout.reading(node_id)
        self.count: int | None = None
        self.measured_round: int | None = None
        self.published = False
        self.skipped = 0
        self.failures = 0
        self.last: Reading | None = None
        self.wanted: Wanted | None = None
        self.answer: Answer | None = None
        self.hang_reported = False
        # The ACL of the reading znode (acl.py: this node and the operator write it);
        # None: kazoo's default ACL.
        self.acl: list[ACL] | None = None

    def resume_count(self) -> None:
        """Once per process: where this node's count and failures stand, from its last
        reading (or an earlier release's shard)."""
        if self.count is None:
            self.last = self.own_reading()
            published = self.last.count if self.last else 0
            self.failures = self.last.failures if self.last else 0
            self.count = own_count(self.zk, self.layout, self.node_id, published)

    def own_reading(self) -> Reading | None:
        try:
            data, _ = self.zk.get(self.path)
        except NoNodeError:
            return None
        reading = Reading.decode(self.node_id, data)
        return None if isinstance(reading, Garbage) else reading

    def forget_session(self) -> None:
        """After a session loss: measure the open round again, re-check the znode."""
        self.measured_round = None
        self.published = False

    @property
    def deadline(self) -> float | None:
        """When the loop must wake to fail a read that has not answered (monotonic)."""
        return self.wanted.deadline if self.wanted is not None else None

    def accept(self, answer: Answer) -> None:
        """The reader's answer, taken off the loop's event queue: kept for the next step
        (which may publish it) if it is the one awaited, else discarded."""
        self.reader.finished()
        wanted = self.wanted
        if wanted is not None and wanted.ticket == answer.ticket:
            self.answer = answer
            return
        log.info("the sensor answered after %.1f s, too late for round %d: its reading "
                 "is discarded", answer.took, answer.round)

    def measure(self, open_round: int, now: float, timeout: float) -> bool:
        """Once per loop step: settle the awaited reading, then make sure the open round
        has one asked for. True when a reading was published."""
        published = self.settle(open_round, now)
        if self.wanted is None and open_round != self.measured_round:
            self.wanted = Wanted(open_round, now + timeout)
        wanted = self.wanted
        if wanted is not None and wanted.ticket is None and not self.reader.busy:
            wanted.ticket = self.reader.read(wanted.round, now)
            self.hang_reported = False
        return published

    def settle(self, open_round: int, now: float) -> bool:
        """Publish or fail the awaited reading once its answer or its deadline came; drop
        it, uncounted, if its round closed first (the node fell behind, not the sensor)."""
        wanted, answer = self.wanted, self.answer
        if wanted is None or (wanted.round == open_round and answer is None
                              and now < wanted.deadline):
            return False
        self.wanted = self.answer = None
        if wanted.round != open_round:
            log.debug("round %d closed before its reading came; reading round %d instead",
                      wanted.round, open_round)
        elif answer is None:
            self.skip_unanswered(wanted, now)
        elif answer.finished_at > wanted.deadline:
            self.skip(wanted.round, f"the sensor answered after {answer.took:.1f} s, past "
                                    "its deadline; the value is discarded")
        elif answer.value is None:
            self.skip(wanted.round, str(answer.error))
        else:
            self.record(wanted.round, answer.value, answer.finished_at)
            return True
        return False

    def skip_unanswered(self, wanted: Wanted, now: float) -> None:
        """The read is hung, or never started because the reader was stuck in an older
        one: warned once per hung read, then counted quietly until the sensor answers."""
        if wanted.ticket is None:
            reason = "the sensor was busy with an earlier read past this round's deadline"
        else:
            reason = f"no answer from the sensor within {self.reader.busy_for(now):.3g} s"
        self.skip(wanted.round, reason, quiet=self.hang_reported)
        self.hang_reported = True

    def record(self, round_number: int, value: float, finished_at: float) -> None:
        count = (self.count or 0) + 1
        taken_at = time.time() - (time.monotonic() - finished_at)
        reading = Reading(self.node_id, value, taken_at, round_number, count, self.failures,
                          self.clock.synced())
        self.last = None
        self.publish(reading.encode())
        self.last = reading
        self.measured_round = round_number
        self.count = count
        log.debug("measured %.3f for round %d (measurement %d of this node)",
                  value, round_number, count)

    def skip(self, round_number: int, reason: str, quiet: bool = False) -> None:
        """A failed read: counted, the round done for this node, and the failure count
        published on the last reading known to be on ZooKeeper (none after a write whose
        outcome is unknown: republishing an older one would lower the count)."""
        self.skipped += 1
        self.failures += 1
        self.measured_round = round_number
        log.log(logging.DEBUG if quiet else logging.WARNING,
                "reading for round %d skipped (%d so far): %s",
                round_number, self.skipped, reason)
        if self.last is not None:
            self.last = dataclasses.replace(self.last, failures=self.failures)
            self.publish(self.last.encode())

    def publish(self, payload: bytes) -> None:
        if self.published:
            try:
                self.zk.set(self.path, payload)
                return
            except NoNodeError:
                self.published = False
        try:
            self.zk.create(self.path, payload, acl=self.acl)
        except NodeExistsError:
            self.take_over_reading(payload)
        self.published = True

    def take_over_reading(self, payload: bytes) -> None:
        """Ours by name; an ephemeral one (written by an earlier release) would vanish with
        its session, taking the count with it: replace it with a persistent one."""
        stat = self.zk.exists(self.path)
        if stat is None or stat.ephemeralOwner == 0:
            self.zk.set(self.path, payload)
            return
        log.warning("replacing ephemeral reading znode %s (session 0x%x) with a persistent one",
                    self.path, stat.ephemeralOwner)
        with contextlib.suppress(NoNodeError):
            self.zk.delete(self.path, version=stat.version)
        self.zk.create(self.path, payload, acl=self.acl)

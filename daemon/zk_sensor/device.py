"""A node's own part of each round: read the sensor, publish the reading with its count.

The reading znode is persistent and carries the node's whole count so far (counter.py):
the write that publishes a measurement is the write that counts it. Every write is an
absolute value, so after an unknown outcome the next write simply says it again.
"""

import contextlib
import logging
import time

from kazoo.exceptions import NodeExistsError, NoNodeError

from .counter import own_count
from .layout import Layout
from .readings import decode_reading, encode_reading
from .sensors import Sensor, SensorError, take_reading
from .zk import Zk

log = logging.getLogger("zk_sensor")


class Device:
    def __init__(self, zk: Zk, layout: Layout, node_id: str, sensor: Sensor) -> None:
        self.zk = zk
        self.layout = layout
        self.node_id = node_id
        self.sensor = sensor
        self.path = layout.reading(node_id)
        self.count: int | None = None
        self.measured_round: int | None = None
        self.published = False
        self.skipped = 0

    def resume_count(self) -> None:
        """Once per process: where this node's count stands, from its last reading (or an
        earlier release's shard)."""
        if self.count is None:
            self.count = own_count(self.zk, self.layout, self.node_id, self.count_in_reading())

    def count_in_reading(self) -> int:
        try:
            data, _ = self.zk.get(self.path)
        except NoNodeError:
            return 0
        try:
            return decode_reading(self.node_id, data).count
        except ValueError:
            return 0

    def forget_session(self) -> None:
        """After a session loss: measure the open round again, re-check the znode."""
        self.measured_round = None
        self.published = False

    def due(self, round_number: int) -> bool:
        return round_number != self.measured_round

    def measure(self, round_number: int) -> bool:
        """True when a reading was published; a failed read is skipped and counted."""
        try:
            value = take_reading(self.sensor)
        except SensorError as error:
            self.skipped += 1
            log.warning("reading for round %d skipped (%d so far): %s",
                        round_number, self.skipped, error)
            self.measured_round = round_number
            return False
        count = (self.count or 0) + 1
        self.publish(encode_reading(value, time.time(), round_number, count))
        self.measured_round = round_number
        self.count = count
        log.debug("measured %.3f for round %d (measurement %d of this node)",
                  value, round_number, count)
        return True

    def publish(self, payload: bytes) -> None:
        if self.published:
            try:
                self.zk.set(self.path, payload)
                return
            except NoNodeError:
                self.published = False
        try:
            self.zk.create(self.path, payload)
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
        self.zk.create(self.path, payload)

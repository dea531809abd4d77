"""The zk-sensor daemon: one node of the fleet.

Everything that touches ZooKeeper runs in this module's single loop. Kazoo's threads
(connection listener, watches) only put an event on a queue and wake the loop, so no
callback ever blocks or calls ZooKeeper, and every decision about leadership is taken
in one place, in order.
"""

import argparse
import contextlib
import logging
import os
import queue
import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kazoo.client import KazooClient
from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError
from kazoo.protocol.states import KazooState
from kazoo.recipe.watchers import DataWatch
from kazoo.retry import KazooRetry

from . import outbox
from .aggregate import Aggregate, aggregate
from .barrier import BarrierState, add_release, decode_barrier, encode_barrier, next_round
from .config_watch import LiveConfig, watch_config
from .counter import ShardedCounter
from .delivery import Courier, one_line
from .election import Election, Office
from .layout import Layout
from .logs import setup_logging
from .outbox import OutboxStats, encode_stats
from .readings import Collection, Reading, collect_readings, decode_reading, encode_reading
from .schedule import RoundClock
from .sensors import Sensor, SensorError, open_sensor, take_reading
from .settings import Settings, SettingsError, add_arguments, build_settings
from .systemd import Systemd
from .waker import Waker
from .zk import ZK_ERRORS, Zk

if TYPE_CHECKING:
    from .metrics import MetricsServer

log = logging.getLogger("zk_sensor")

RETRY_AFTER_ERROR = 1.0
# The loop wakes for events and for its own deadlines (see next_wakeup); this is only a
# safety net, so an idle follower wakes once a round instead of once a second.
MAX_IDLE = 5.0
CONNECT_BACKOFF_MAX = 5.0


class Node:
    def __init__(self, settings: Settings, sensor: Sensor, systemd: Systemd) -> None:
        self.settings = settings
        self.sensor = sensor
        self.systemd = systemd
        self.node_id = settings.node_id
        self.layout = Layout(settings.namespace)
        self.client = KazooClient(
            hosts=settings.zookeeper,
            timeout=settings.session_timeout,
            connection_retry=KazooRetry(max_tries=-1, delay=0.1, max_delay=2.0),
            command_retry=KazooRetry(max_tries=3, deadline=settings.zk_deadline),
        )
        self.zk = Zk(self.client, settings.zk_deadline)
        self.config = LiveConfig(
            {"sampling_period": settings.sampling_period, "api_url": settings.api_url}
        )
        self.election = Election(self.zk, self.layout, self.node_id, self._wake_election)
        self.counter = ShardedCounter(self.zk, self.layout, self.node_id,
                                      settings.counter_flush_every)
        self.courier = Courier(settings.http_timeout, settings.namespace, settings.api_token,
                               may_deliver=self.delivery_epoch,
                               api_url=lambda: self.config.api_url,
                               report=self._on_delivery)

        self.events: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self.waker = Waker()
        self.stop_signal: int | None = None
        self.link_up = False
        self.watches: list[DataWatch] = []

        self.registered = False
        self.namespace_ready = False
        self.reading_published = False
        self.need_evaluate = False
        self.flush_counter_now = False
        self.retry_at = 0.0
        self.offline_since: float | None = time.monotonic()

        self.barrier: BarrierState | None = None
        self.barrier_version = -1
        self.barrier_changed_at = time.monotonic()
        self.barrier_warned = False
        self.need_barrier_read = True
        self.measured_round: int | None = None
        self.ready = False
        self.skipped_readings = 0

        self.office: Office | None = None
        self.lease_from = 0.0
        self.clock: RoundClock | None = None
        self.round_work = 0.0
        self.round_spread = 0.0
        self.devices: list[str] | None = None
        self.outbox: list[int] = []
        self.outbox_stats = OutboxStats()
        self.outcomes: list[tuple[int, str, str]] = []
        self.dropping = False
        self.rounds_led = 0
        self.delivered = 0
        self.refused = 0
        self.metrics: MetricsServer | None = None

    # Callbacks from kazoo's threads: record, enqueue, wake. Nothing else.

    def _post(self, *event: Any) -> None:
        self.events.put(event)
        self.waker.wake()

    def _on_connection(self, state: str) -> None:
        if state != KazooState.CONNECTED:
            self.link_up = False
        self._post("connection", state)

    def _wake_election(self) -> None:
        self._post("election")

    def _on_config(self, key: str, data: bytes | None) -> None:
        self._post("config", key, data)

    def _on_barrier_changed(self, _event: object) -> None:
        self._post("barrier")

    def _on_devices_changed(self, _event: object) -> None:
        self._post("devices")

    def _on_delivery(self, round_number: int, outcome: str, detail: str) -> None:
        """From the courier thread: the collector's answer for a round."""
        self._post("delivery", round_number, outcome, detail)

    def request_stop(self, signum: int, _frame: object) -> None:
        """Signal handler: no logging, no locks; the loop notices and acts."""
        self.stop_signal = signum
        self.waker.wake()

    @property
    def stopping(self) -> bool:
        return self.stop_signal is not None

    # Leadership as the loop sees it.

    @property
    def lease_length(self) -> float:
        """How long after its last confirmed contact with ZooKeeper a leader may still act.
        Half the session timeout: with the delivery timeout (checked below half at start),
        anything it does ends before the server could expire its session and elect another."""
        return self.settings.session_timeout / 2

    @property
    def leading(self) -> bool:
        return (self.office is not None and self.link_up
                and time.monotonic() - self.lease_from < self.lease_length)

    def delivery_epoch(self) -> int | None:
        """Asked by the courier before every attempt: our epoch, if we may deliver now."""
        office = self.office
        return office.epoch if office is not None and self.leading else None

    def renew_lease(self, sent_at: float) -> None:
        self.lease_from = max(self.lease_from, sent_at)

    def step_down(self, reason: str) -> None:
        if self.office is not None:
            log.warning("stepping down as leader (epoch %d): %s", self.office.epoch, reason)
        self.office = None
        self.devices = None
        self.outbox = []
        self.courier.clear()

    # The loop.

    def run(self) -> int:
        self.client.add_listener(self._on_connection)
        if not self.connect():
            self.shutdown()
            return 0
        self.start_metrics()
        self.watches = watch_config(self.client, self.layout, self._on_config)
        while not self.stopping:
            self.waker.wait(self.next_wakeup())
            self.drain_events()
            if not self.stopping:
                self.step()
            self.report()
        self.shutdown()
        return 0

    def start_metrics(self) -> None:
        if not self.settings.metrics_port:
            return
        from .metrics import MetricsServer

        self.metrics = MetricsServer(self.settings.metrics_host, self.settings.metrics_port,
                                     self.metric_samples)
        self.metrics.start()
        log.info("metrics on http://%s:%d/metrics", self.settings.metrics_host,
                 self.metrics.port)

    def metric_samples(self) -> list[tuple[str, str, str, float]]:
        """Plain attribute reads: safe from the metrics thread."""
        stats = self.outbox_stats
        return [
            ("zk_sensor_measurements_total", "counter", "Readings this node published.",
             self.counter.count),
            ("zk_sensor_readings_skipped_total", "counter", "Readings that failed or were "
             "not finite.", self.skipped_readings),
            ("zk_sensor_connected", "gauge", "1 while the ZooKeeper session is usable.",
             int(self.link_up)),
            ("zk_sensor_leader", "gauge", "1 while this node leads with a fresh lease.",
             int(self.leading)),
            ("zk_sensor_round", "gauge", "The round the barrier holds open.",
             self.barrier.round if self.barrier else -1),
            ("zk_sensor_rounds_led_total", "counter", "Rounds this node released as leader.",
             self.rounds_led),
            ("zk_sensor_deliveries_total", "counter", "Rounds the collector acknowledged.",
             self.delivered),
            ("zk_sensor_deliveries_refused_total", "counter", "Rounds the collector refused "
             "for good.", self.refused),
            ("zk_sensor_round_work_seconds", "gauge", "Collection and commit of the last "
             "round this node led.", self.round_work),
            ("zk_sensor_round_slowest_device_seconds", "gauge", "Release to the last reading "
             "of the last round this node led.", self.round_spread),
            ("zk_sensor_outbox_pending", "gauge", "Rounds waiting for the collector (leader).",
             len(self.outbox)),
            ("zk_sensor_outbox_dropped_total", "counter", "Rounds the fleet dropped from a "
             "full outbox (as last seen by this node as leader).", stats.dropped),
        ]

    def connect(self) -> bool:
        """Keep trying until connected or told to stop; a missing ensemble is not fatal."""
        backoff = 0.5
        while not self.stopping:
            try:
                self.client.start(timeout=self.settings.session_timeout)
            except ZK_ERRORS as error:
                log.warning("cannot reach ZooKeeper at %s: %s; retrying in %.1f s",
                            self.settings.zookeeper, one_line(error) or "timed out", backoff)
                self.waker.wait(backoff)
                backoff = min(backoff * 2, CONNECT_BACKOFF_MAX)
                continue
            self.link_up = True
            self.offline_since = None
            log.info("connected to ZooKeeper %s (session 0x%x, timeout %.1f s)",
                     self.settings.zookeeper, self.client.client_id[0],
                     self.settings.session_timeout)
            return True
        return False

    def next_wakeup(self) -> float:
        """Seconds the loop may sleep: only deadlines still ahead count, so a retry time
        that already passed never turns the wait into a busy loop."""
        now = time.monotonic()
        deadlines = [self.retry_at, self.barrier_changed_at + self.stalled_after]
        if self.systemd.next_feed_due is not None:
            deadlines.append(self.systemd.next_feed_due)
        if self.office is not None:
            deadlines.append(self.lease_from + self.lease_length / 3)
        if self.leading and self.clock is not None:
            deadlines.append(self.clock.next_close)
        ahead = [deadline - now for deadline in deadlines if deadline > now]
        return min([MAX_IDLE, *ahead])

    def drain_events(self) -> None:
        handlers: dict[str, Callable[..., None]] = {
            "connection": self.on_connection_event,
            "election": self.on_election_event,
            "config": self.on_config_event,
            "barrier": self.on_barrier_event,
            "devices": self.on_devices_event,
            "delivery": self.on_delivery_event,
        }
        while True:
            try:
                kind, *args = self.events.get_nowait()
            except queue.Empty:
                return
            handlers[kind](*args)

    def on_connection_event(self, state: str) -> None:
        if state == KazooState.SUSPENDED:
            if self.offline_since is None:
                self.offline_since = time.monotonic()
            log.warning("ZooKeeper connection suspended")
            self.step_down("connection suspended; leadership unknown until reconnected")
        elif state == KazooState.LOST:
            if self.offline_since is None:
                self.offline_since = time.monotonic()
            log.warning("ZooKeeper session lost; its ephemeral znodes are gone")
            self.step_down("session lost")
            self.flush_counter_now = True
            self.measured_round = None
            self.election.forget()
            self.registered = False
            self.reading_published = False
        elif state == KazooState.CONNECTED and self.client.connected:
            self.link_up = True
            if self.offline_since is not None:
                log.info("ZooKeeper connection back after %.1f s (session 0x%x)",
                         time.monotonic() - self.offline_since, self.client.client_id[0])
                self.offline_since = None
            self.need_evaluate = True
            self.need_barrier_read = True

    def on_election_event(self) -> None:
        self.need_evaluate = True

    def on_config_event(self, key: str, data: bytes | None) -> None:
        changed = self.config.apply(key, data)
        if changed and key == "sampling_period" and self.clock is not None:
            self.clock.retime(self.config.sampling_period, time.monotonic())

    def on_barrier_event(self) -> None:
        self.need_barrier_read = True

    def read_barrier(self) -> None:
        """Read the barrier and watch it again, from the loop: kazoo's DataWatch would do
        this read on kazoo's callback thread, one more thread hand-off per device-round."""
        try:
            data, stat = self.zk.get(self.layout.barrier, watch=self._on_barrier_changed)
        except NoNodeError:
            self.zk.exists(self.layout.barrier, watch=self._on_barrier_changed)
            self.need_barrier_read = False
            return
        self.need_barrier_read = False
        self.accept_barrier(data, stat.version)

    def accept_barrier(self, data: bytes | None, version: int) -> None:
        if version <= self.barrier_version:
            return
        state = decode_barrier(data)
        if state is None:
            log.error("barrier znode holds garbage (version %d); waiting for the leader", version)
            return
        self.barrier, self.barrier_version = state, version
        self.barrier_changed_at = time.monotonic()
        self.barrier_warned = False

    def on_devices_event(self) -> None:
        if self.leading:
            self.refresh_devices()

    def on_delivery_event(self, round_number: int, outcome: str, detail: str) -> None:
        if outcome == "delivered":
            self.delivered += 1
            log.info("delivered round %d (%s)", round_number, detail)
        else:
            self.refused += 1
            log.error("collector refused round %d for good: %s; dropping it", round_number,
                      detail)
        self.outcomes.append((round_number, outcome, detail))

    def step(self) -> None:
        if not self.link_up or time.monotonic() < self.retry_at:
            return
        try:
            self.step_unguarded()
        except ZK_ERRORS as error:
            log.warning("ZooKeeper call failed: %s; retrying in %.0f s",
                        one_line(error) or type(error).__name__, RETRY_AFTER_ERROR)
            self.retry_at = time.monotonic() + RETRY_AFTER_ERROR

    def step_unguarded(self) -> None:
        if not self.registered:
            self.register()
        if self.need_barrier_read:
            self.read_barrier()
        if self.need_evaluate:
            self.evaluate_leadership()
        if self.barrier is not None and (
            self.measured_round is None or self.barrier.round > self.measured_round
        ):
            self.measure(self.barrier.round)
        if self.counter.flush_due or (self.flush_counter_now and self.counter.unflushed):
            self.counter.flush()
            self.flush_counter_now = False
        if self.office is not None and self.link_up:
            self.confirm_office()
        if self.leading and self.devices is None:
            self.refresh_devices()
        if self.leading and self.outcomes:
            self.forget_answered_rounds()
        if self.leading and self.clock is not None and self.clock.due(time.monotonic()):
            self.run_round(self.clock)
        self.recheck_stalled_barrier()

    def register(self) -> None:
        """Stand as a candidate. The namespace is checked once per process: after a
        session expiry (which takes every node of a fleet at once) a node re-registers
        with a listing, a read per candidate of its own and one write."""
        if not self.namespace_ready:
            self.prepare_namespace()
        if self.counter.version is None:
            self.counter.load(self.count_in_own_reading())
        try:
            ghosts = self.election.register()
        except NoNodeError:
            self.namespace_ready = False
            raise
        if ghosts:
            log.warning("removed election candidates left by a previous session: %s",
                        ", ".join(ghosts))
        self.registered = True
        self.need_evaluate = True

    def prepare_namespace(self) -> None:
        for path in self.layout.persistent_dirs():
            self.zk.ensure_path(path)
        self.zk.create_if_missing(self.layout.epoch)
        self.zk.create_if_missing(self.layout.barrier, encode_barrier(BarrierState(round=0)))
        self.namespace_ready = True

    def count_in_own_reading(self) -> int:
        """The count a previous life of this node published, in case it died before
        storing it in its shard (its reading lives until its session expires)."""
        try:
            data, _ = self.zk.get(self.layout.reading(self.node_id))
        except NoNodeError:
            return 0
        try:
            return decode_reading(self.node_id, data).count
        except ValueError:
            return 0

    def evaluate_leadership(self) -> None:
        first_in_line = self.election.evaluate()
        if first_in_line and self.office is None:
            self.take_office()
        elif not first_in_line and self.office is not None:
            self.step_down("no longer first in line")
        self.need_evaluate = False

    def take_office(self) -> None:
        office = self.election.take_office(self.node_id)
        data, stat = self.zk.get(self.layout.barrier)
        self.accept_barrier(data, stat.version)
        released_wall = stat.mtime / 1000.0 + office.clock_offset
        period = self.config.sampling_period
        wait = min(period, max(0.0, released_wall + period - time.time()))
        inherited = outbox.load(self.zk, self.layout)
        self.office = office
        self.renew_lease(office.taken_at)
        self.clock = RoundClock(time.monotonic() + wait, period)
        self.outbox = [aggregate.round for aggregate in inherited.rounds]
        self.outbox_stats = inherited.stats
        answered = {round_number for round_number, _, _ in self.outcomes}
        self.courier.replace([a for a in inherited.rounds if a.round not in answered])
        round_number = self.barrier.round if self.barrier else 0
        log.info("I am the leader now (epoch %d): round %d closes in %.1f s",
                 office.epoch, round_number, wait)
        if inherited.rounds:
            log.warning("inherited %d undelivered rounds (%d..%d); delivering them first",
                        len(inherited.rounds), self.outbox[0], self.outbox[-1])
        for name in inherited.garbage:
            log.error("outbox entry %s is not a round; removing it", name)
            with contextlib.suppress(NoNodeError):
                self.zk.delete(f"{self.layout.outbox}/{name}")

    def confirm_office(self) -> None:
        """Renew the lease with a round trip, long before it lapses, and check on the way
        that nobody else took office (the epoch znode's version is ours)."""
        if time.monotonic() - self.lease_from < self.lease_length / 3:
            return
        sent_at = time.monotonic()
        stat = self.zk.exists(self.layout.epoch)
        if self.office is None:
            return
        if stat is None or stat.version != self.office.epoch:
            self.step_down(f"another leader took office (epoch {stat.version if stat else '?'})")
            self.need_evaluate = True
            return
        self.renew_lease(sent_at)

    def forget_answered_rounds(self) -> None:
        """Remove answered rounds from the outbox, fenced by our epoch; a rejection counts."""
        assert self.office is not None
        while self.outcomes:
            round_number, outcome, _ = self.outcomes[0]
            stats = self.outbox_stats
            transaction = self.client.transaction()
            transaction.check(self.layout.epoch, self.office.epoch)
            transaction.delete(self.layout.outbox_round(round_number))
            if outcome == "rejected":
                stats = OutboxStats(stats.dropped, stats.rejected + 1)
                transaction.set_data(self.layout.outbox, encode_stats(stats))
            results = self.zk.commit(transaction)
            if isinstance(results[0], BadVersionError):
                self.step_down("fenced off while clearing the outbox: the epoch moved")
                self.need_evaluate = True
                return
            if not any(isinstance(r, Exception) for r in results):
                self.outbox_stats = stats
            self.outcomes.pop(0)
            if round_number in self.outbox:
                self.outbox.remove(round_number)
            if self.dropping and outcome == "delivered":
                self.dropping = False
                log.warning("outbox drained below its limit; %d rounds dropped so far",
                            self.outbox_stats.dropped)

    def refresh_devices(self) -> None:
        devices = sorted(self.zk.children(self.layout.readings, watch=self._on_devices_changed))
        if devices != self.devices:
            log.info("connected devices (%d): %s%s", len(devices), ", ".join(devices),
                     describe_change(self.devices, devices))
        self.devices = devices

    def measure(self, round_number: int) -> None:
        try:
            value = take_reading(self.sensor)
        except SensorError as error:
            self.skipped_readings += 1
            log.warning("reading for round %d skipped (%d so far): %s",
                        round_number, self.skipped_readings, error)
            self.measured_round = round_number
            return
        self.publish(encode_reading(value, time.time(), round_number, self.counter.count + 1))
        self.measured_round = round_number
        self.counter.record_measurement()
        log.debug("measured %.3f for round %d (measurement %d of this node)",
                  value, round_number, self.counter.count)
        if not self.ready:
            self.ready = True
            self.systemd.ready()
            log.info("ready: first reading published (round %d)", round_number)

    def publish(self, payload: bytes) -> None:
        path = self.layout.reading(self.node_id)
        if self.reading_published:
            try:
                self.zk.set(path, payload)
                return
            except NoNodeError:
                self.reading_published = False
        try:
            self.zk.create(path, payload, ephemeral=True)
        except NodeExistsError:
            self.take_over_reading(path, payload)
        self.reading_published = True

    def take_over_reading(self, path: str, payload: bytes) -> None:
        """The znode is ours if our session owns it; otherwise it is a ghost of a previous
        life (or not ephemeral at all) and would vanish under us: replace it."""
        stat = self.zk.exists(path)
        if stat is not None and stat.ephemeralOwner == self.client.client_id[0]:
            self.zk.set(path, payload)
            return
        if stat is not None:
            log.warning("replacing reading znode %s owned by session 0x%x", path,
                        stat.ephemeralOwner)
            with contextlib.suppress(NoNodeError):
                self.zk.delete(path, version=stat.version)
        self.zk.create(path, payload, ephemeral=True)

    def run_round(self, clock: RoundClock) -> None:
        assert self.office is not None and self.barrier is not None
        office, current = self.office, self.barrier
        sent_at = time.monotonic()
        work_started = time.perf_counter()
        collection = collect_readings(self.zk, self.layout)
        readings = collection.for_round(current.round)
        result = aggregate(
            [reading.value for reading in readings],
            round_number=current.round, epoch=office.epoch, leader=self.node_id, now=time.time(),
        )
        released = next_round(
            current, epoch=office.epoch, leader=self.node_id, now=time.time(), last=result
        )
        transaction = self.client.transaction()
        transaction.check(self.layout.epoch, office.epoch)
        add_release(transaction, self.layout.barrier, released, self.barrier_version)
        dropped, stats = self.add_to_outbox(transaction, result)
        outcome = self.zk.commit(transaction)
        if any(isinstance(item, Exception) for item in outcome):
            self.step_down(f"round {current.round} fenced off: the epoch or the barrier moved")
            self.need_evaluate = True
            return
        self.renew_lease(sent_at)
        self.rounds_led += 1
        self.round_work = time.perf_counter() - work_started
        self.round_spread = slowest_device(readings, current.released_at)
        self.accept_barrier(encode_barrier(released), outcome[1].version)
        self.log_round(current.round, result, collection, len(collection.readings) - len(readings))
        missed = clock.advance(time.monotonic())
        if missed:
            log.warning("round %d took %.0f ms, past its slot: %d slot(s) of %.1f s skipped",
                        current.round, self.round_work * 1000, missed, clock.period)
        self.outbox_stats = stats
        if dropped is not None:
            self.note_drop(dropped)
        if result is not None:
            self.outbox.append(result.round)
            self.courier.add(result)

    def add_to_outbox(
        self, transaction: Any, result: Aggregate | None
    ) -> tuple[int | None, OutboxStats]:
        """Queue the round in the release transaction; when the outbox is full, drop its
        oldest round in the same transaction. Returns the dropped round and the counts
        that hold if the transaction commits."""
        stats = self.outbox_stats
        if result is None:
            return None, stats
        outbox.add_pending(transaction, self.layout, result)
        if len(self.outbox) < self.settings.outbox_limit:
            return None, stats
        oldest = self.outbox[0]
        stats = OutboxStats(stats.dropped + 1, stats.rejected)
        outbox.add_drop(transaction, self.layout, oldest, stats)
        return oldest, stats

    def note_drop(self, round_number: int) -> None:
        self.outbox.remove(round_number)
        self.courier.discard(round_number)
        if not self.dropping:
            self.dropping = True
            log.error("outbox full (%d rounds): dropping the oldest undelivered rounds, "
                      "starting with round %d", self.settings.outbox_limit, round_number)

    def log_round(self, round_number: int, result: Aggregate | None, collection: Collection,
                  late: int) -> None:
        """One line per round; `slowest` is the last device's delay after the release, and
        `leader` the collection and commit this round cost the leader."""
        notes = []
        if late:
            notes.append(f"{late} late")
        if collection.garbage:
            notes.append(f"{len(collection.garbage)} garbage skipped "
                         f"({', '.join(collection.garbage)})")
        if collection.vanished:
            notes.append(f"{len(collection.vanished)} vanished mid-read")
        suffix = f" [{'; '.join(notes)}]" if notes else ""
        timing = f"slowest {self.round_spread:.2f} s, leader {self.round_work * 1000:.0f} ms"
        if result is None:
            log.info("round %d: no readings; %s%s", round_number, timing, suffix)
            return
        log.info("round %d: mean %.2f over %d devices (min %.2f, max %.2f); %s%s",
                 round_number, result.mean, result.count, result.min, result.max, timing,
                 suffix)

    @property
    def stalled_after(self) -> float:
        return max(3 * self.config.sampling_period, 2 * self.settings.session_timeout)

    def recheck_stalled_barrier(self) -> None:
        """A device never trusts one watch forever: if no release came for a while, it
        reads the barrier itself, in case a watch was lost across a connection blip."""
        stalled_after = self.stalled_after
        if time.monotonic() - self.barrier_changed_at < stalled_after:
            return
        data, stat = self.zk.get(self.layout.barrier)
        self.barrier_changed_at = time.monotonic()
        if stat.version > self.barrier_version:
            self.accept_barrier(data, stat.version)
        elif not self.barrier_warned:
            self.barrier_warned = True
            log.warning("no round released for %.0f s; waiting for a leader", stalled_after)

    def healthy(self) -> bool:
        return self.offline_since is None or (
            time.monotonic() - self.offline_since < self.settings.offline_grace
        )

    def report(self) -> None:
        self.systemd.status(self.status_line())
        if self.healthy():
            self.systemd.feed_watchdog()

    def status_line(self) -> str:
        if not self.link_up:
            return "ZooKeeper unreachable; waiting to reconnect"
        round_number = self.barrier.round if self.barrier else "?"
        last = self.barrier.last if self.barrier else None
        mean = (f"last mean {last['mean']:.2f} over {last['count']} devices"
                if last else "no mean yet")
        if self.office is not None:
            devices = len(self.devices) if self.devices is not None else "?"
            return (f"leader (epoch {self.office.epoch}), {devices} devices, "
                    f"round {round_number}, {mean}")
        leader = self.barrier.leader if self.barrier and self.barrier.leader else None
        return (f"follower (leader: {'node ' + leader if leader else 'none yet'}), "
                f"round {round_number}, {mean}")

    def shutdown(self) -> None:
        self.systemd.stopping()
        if self.stop_signal is not None:
            log.info("received %s: stopping", signal.Signals(self.stop_signal).name)
        was_leader = self.office is not None
        self.office = None
        if self.client.connected:
            try:
                self.election.resign()
                if self.counter.unflushed:
                    self.counter.flush()
            except ZK_ERRORS as error:
                log.warning("could not resign cleanly: %s", one_line(error))
            if was_leader:
                log.info("gave up leadership")
        self.courier.stop(self.settings.http_timeout)
        if self.metrics is not None:
            self.metrics.stop()
        self.client.stop()
        self.client.close()
        self.sensor.close()
        self.waker.close()
        log.info("stopped; session closed")


def slowest_device(readings: list[Reading], released_at: float) -> float:
    """Seconds from a round's release to its last reading (wall clocks: the nodes' clocks
    are assumed synchronised); 0 when unknown."""
    if not readings or released_at <= 0:
        return 0.0
    return max(0.0, max(reading.taken_at for reading in readings) - released_at)


def describe_change(before: list[str] | None, after: list[str]) -> str:
    if before is None:
        return ""
    joined = [node for node in after if node not in before]
    left = [node for node in before if node not in after]
    parts = ([f"joined: {', '.join(joined)}"] if joined else []) + (
        [f"left: {', '.join(left)}"] if left else []
    )
    return f" ({'; '.join(parts)})" if parts else ""


def check_watchdog_budget(settings: Settings, systemd: Systemd) -> None:
    """One loop step makes at most three sequential ZooKeeper calls; each may take the
    full deadline, and the watchdog must still be fed in time."""
    interval = systemd.watchdog_interval
    if interval is not None and interval < 3 * settings.zk_deadline:
        raise SettingsError(
            f"WatchdogSec is too short: half of it ({interval:.1f} s) must cover three "
            f"ZooKeeper deadlines ({3 * settings.zk_deadline:.1f} s); lower zk_deadline or "
            "raise WatchdogSec"
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="zk-sensor", description="One sensor node of a ZooKeeper-coordinated fleet."
    )
    add_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cli = {key: value for key, value in vars(args).items() if key != "config"}
    systemd = Systemd()
    try:
        settings = build_settings(cli, os.environ, args.config)
        check_watchdog_budget(settings, systemd)
    except SettingsError as error:
        print(f"zk-sensor: {error}", file=sys.stderr)
        return 2
    setup_logging(f"node {settings.node_id}", settings.log_level)
    try:
        sensor = open_sensor(settings)
    except SensorError as error:
        log.error("%s", error)
        return 1
    node = Node(settings, sensor, systemd)
    signal.signal(signal.SIGTERM, node.request_stop)
    signal.signal(signal.SIGINT, node.request_stop)
    log.info("starting: sensor %s, ZooKeeper %s, namespace %s",
             sensor.name, settings.zookeeper, settings.namespace)
    return node.run()


if __name__ == "__main__":
    sys.exit(main())

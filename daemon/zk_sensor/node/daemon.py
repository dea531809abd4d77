"""The zk-sensor daemon: one node of the fleet.

Everything that touches ZooKeeper runs in this module's single loop. Kazoo's threads
(connection listener, watches) only put an event on a queue and wake the loop, so no
callback ever blocks or calls ZooKeeper, and every decision about leadership is taken
in one place, in order.
"""

import logging
import queue
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kazoo.client import KazooClient
from kazoo.exceptions import AuthFailedError, NoNodeError
from kazoo.protocol.states import KazooState
from kazoo.recipe.watchers import DataWatch
from kazoo.retry import KazooRetry

from zk_sensor.fleet.acl import InvalidMemberAcl, creation_acls
from zk_sensor.fleet.barrier import BarrierView
from zk_sensor.fleet.config_watch import LiveConfig, watch_config
from zk_sensor.fleet.coordination import prepare_namespace
from zk_sensor.fleet.election import Election
from zk_sensor.fleet.layout import Layout
from zk_sensor.fleet.lease import timing_problem
from zk_sensor.node.clock import Clock
from zk_sensor.node.delivery import Courier, one_line
from zk_sensor.node.device import Device
from zk_sensor.node.handover import Handover
from zk_sensor.node.leader import Leader
from zk_sensor.node.reader import Answer, Reader
from zk_sensor.node.settings import Settings
from zk_sensor.node.systemd import Systemd
from zk_sensor.sensors import Sensor
from zk_sensor.waker import Waker
from zk_sensor.zk.access import ZkAccess
from zk_sensor.zk.client import REFUSALS, ZK_ERRORS, AccessRefused, Zk
from zk_sensor.zk.handler import PollingHandler

if TYPE_CHECKING:
    from zk_sensor.node.metrics import MetricsServer

log = logging.getLogger("zk_sensor")

RETRY_AFTER_ERROR = 1.0
# The loop wakes for events and for its own deadlines (see next_wakeup); this is only a
# safety net, so an idle follower wakes once a round instead of once a second.
MAX_IDLE = 5.0
CONNECT_BACKOFF_MAX = 5.0
INVALID_ACL_RETRY = 30.0


class Node:
    def __init__(self, settings: Settings, sensor: Sensor, systemd: Systemd,
                 access: ZkAccess | None = None) -> None:
        self.settings = settings
        self.access = access or ZkAccess()
        self.sensor = sensor
        self.systemd = systemd
        self.node_id = settings.node_id
        self.layout = Layout(settings.namespace)
        self.handler = PollingHandler()
        self.client = KazooClient(
            hosts=settings.zookeeper,
            timeout=settings.session_timeout,
            connection_retry=KazooRetry(max_tries=-1, delay=0.1, max_delay=2.0),
            command_retry=KazooRetry(max_tries=3, deadline=settings.zk_deadline),
            **self.access.client_options(self.handler),
        )
        self.zk = Zk(self.client, settings.zk_deadline)
        self.config = LiveConfig(
            {"sampling_period": settings.sampling_period, "api_url": settings.api_url}
        )
        self.election = Election(self.zk, self.layout, self.node_id, self._wake_election)
        self.courier = Courier.from_settings(settings, may_deliver=self.delivery_epoch,
                                             api_url=lambda: self.config.api_url,
                                             report=self._on_delivery)
        wall_clock = Clock()
        self.device = Device(self.zk, self.layout, self.node_id,
                             Reader(sensor, self._on_reading), wall_clock)
        self.view = BarrierView()
        self.leader = Leader(self.zk, self.layout, self.node_id, settings.outbox_limit,
                             self.config, self.view, self.courier, settings.session_timeout,
                             self._on_devices_changed, wall_clock)
        self.handover = Handover(self.zk, self.layout, self.node_id, self.election,
                                 self.leader, settings.http_timeout, self._on_switchover)
        self.handler.run_inline(self._on_barrier_changed, self._on_devices_changed,
                                self._on_switchover, self.election.predecessor_gone)

        self.events: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self.waker = Waker()
        self.stop_signal: int | None = None
        self.exit_code = 0
        self.link_up = False
        self.session_timeout = settings.session_timeout
        self.watches: list[DataWatch] = []

        self.registered = False
        self.namespace_ready = False
        self.need_evaluate = False
        self.retry_at = 0.0
        self.offline_since: float | None = time.monotonic()

        self.need_barrier_read = True
        self.last_recheck = 0.0
        self.recheck_wait = 0.0
        self.ready = False
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

    def _on_switchover(self, _event: object) -> None:
        self._post("switchover")

    def _on_delivery(self, round_number: int, outcome: str, detail: str) -> None:
        """From the courier thread: the collector's answer for a round."""
        self._post("delivery", round_number, outcome, detail)

    def _on_reading(self, answer: Answer) -> None:
        """From the sensor's reader thread: a read came back (a value or its failure)."""
        self._post("reading", answer)

    def request_stop(self, signum: int, _frame: object) -> None:
        """Signal handler: no logging, no locks; the loop notices and acts."""
        self.stop_signal = signum
        self.waker.wake()

    @property
    def stopping(self) -> bool:
        return self.stop_signal is not None or self.exit_code != 0

    def give_up(self, exit_code: int) -> None:
        """Stop for a reason restarting cannot fix (the caller logged it)."""
        self.exit_code = exit_code
        self.waker.wake()

    @property
    def leading(self) -> bool:
        return self.link_up and self.leader.fresh(time.monotonic())

    def delivery_epoch(self) -> int | None:
        """Asked by the courier before every attempt: our epoch, if we may deliver now (not
        while a switchover waits out the attempt in flight)."""
        office = self.leader.office
        if office is None or not self.leading or self.handover.holds_deliveries:
            return None
        return office.epoch

    # The loop.

    def run(self) -> int:
        self.client.add_listener(self._on_connection)
        if not self.connect():
            self.shutdown()
            return self.exit_code
        self.start_metrics()
        try:
            self.watches = watch_config(self.client, self.layout, self._on_config)
        except REFUSALS as error:
            self.refused(AccessRefused(error), "reading the config")
        while not self.stopping:
            self.waker.wait(self.next_wakeup())
            self.drain_events()
            if not self.stopping:
                self.step()
            self.report()
        self.shutdown()
        return self.exit_code

    def start_metrics(self) -> None:
        if not self.settings.metrics_port:
            return
        from zk_sensor.node.metrics import MetricsServer, node_samples

        self.metrics = MetricsServer(self.settings.metrics_host, self.settings.metrics_port,
                                     lambda: node_samples(self))
        self.metrics.start()
        log.info("metrics on http://%s:%d/metrics", self.settings.metrics_host,
                 self.metrics.port)

    def connect(self) -> bool:
        """Keep trying until connected or told to stop; a missing ensemble is not fatal,
        a session timeout too short for the node's budgets is (exit 2)."""
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
            log.info("connected to ZooKeeper %s (session 0x%x, timeout %.1f s negotiated, "
                     "%.1f s asked)", self.settings.zookeeper, self.client.client_id[0],
                     self.zk.negotiated or 0.0, self.settings.session_timeout)
            return self.adopt_negotiated_timeout()
        return False

    def adopt_negotiated_timeout(self) -> bool:
        """The lease and the stall check follow the timeout the server granted."""
        negotiated = self.zk.negotiated or self.settings.session_timeout
        problem = timing_problem(negotiated, self.settings.zk_deadline,
                                 self.settings.http_timeout)
        if problem:
            log.error("%s; fix the settings or the server's min/maxSessionTimeout", problem)
            self.give_up(2)
            return False
        self.session_timeout = negotiated
        self.leader.lease.set_session_timeout(negotiated)
        return True

    def next_wakeup(self) -> float:
        """Seconds the loop may sleep: only deadlines still ahead count, so a retry time
        that already passed never turns the wait into a busy loop."""
        now = time.monotonic()
        deadlines = [self.retry_at, self.recheck_at()]
        if self.systemd.next_feed_due is not None:
            deadlines.append(self.systemd.next_feed_due)
        if self.leader.office is not None or self.need_evaluate:
            deadlines.extend(self.leader.deadlines())
        if self.device.deadline is not None:
            deadlines.append(self.device.deadline)
        deadlines.extend(self.handover.deadlines())
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
            "reading": self.on_reading_event,
            "switchover": self.on_switchover_event,
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
            self.leader.step_down("connection suspended; leadership unknown until reconnected")
        elif state == KazooState.LOST:
            if self.offline_since is None:
                self.offline_since = time.monotonic()
            log.warning("ZooKeeper session lost; its ephemeral znodes are gone")
            self.leader.step_down("session lost")
            self.device.forget_session()
            self.election.forget()
            self.registered = False
        elif state == KazooState.CONNECTED and self.client.connected:
            self.link_up = True
            if self.offline_since is not None:
                log.info("ZooKeeper connection back after %.1f s (session 0x%x)",
                         time.monotonic() - self.offline_since, self.client.client_id[0])
                self.offline_since = None
            if not self.adopt_negotiated_timeout():
                return
            self.need_evaluate = True
            self.need_barrier_read = True
            self.handover.need_read = True

    def on_election_event(self) -> None:
        self.need_evaluate = True

    def on_config_event(self, key: str, data: bytes | None) -> None:
        changed = self.config.apply(key, data)
        clock = self.leader.clock
        if changed and key == "sampling_period" and clock is not None:
            clock.retime(self.config.sampling_period, time.monotonic())

    def on_switchover_event(self) -> None:
        self.handover.need_read = True

    def on_barrier_event(self) -> None:
        self.need_barrier_read = True

    def read_barrier(self) -> bool:
        """Read the barrier and watch it again, from the loop: kazoo's DataWatch would do
        this read on kazoo's callback thread, one more thread hand-off per device-round.
        True if it moved."""
        try:
            data, stat = self.zk.get(self.layout.barrier, watch=self._on_barrier_changed)
        except NoNodeError:
            self.zk.exists(self.layout.barrier, watch=self._on_barrier_changed)
            self.need_barrier_read = False
            return False
        self.need_barrier_read = False
        return self.view.accept(data, stat)

    def on_devices_event(self) -> None:
        self.leader.devices_stale = True

    def on_delivery_event(self, round_number: int, outcome: str, detail: str) -> None:
        if self.leader.on_delivery(round_number, outcome, detail):
            self.need_evaluate = True

    def step(self) -> None:
        if not self.link_up or time.monotonic() < self.retry_at:
            return
        self.zk.begin_step(self.step_budget)
        try:
            self.step_unguarded()
        except NoNodeError as error:
            self.lost_namespace(error)
        except AccessRefused as error:
            self.refused(error, "taking part in the fleet")
        except InvalidMemberAcl as error:
            log.error("%s at %s; creating nothing until an operator runs "
                      "`zk-sensorctl acl apply`", error, self.layout.member_acl)
            self.retry_at = time.monotonic() + INVALID_ACL_RETRY
        except ZK_ERRORS as error:
            log.warning("ZooKeeper call failed: %s; retrying in %.0f s",
                        one_line(error) or type(error).__name__, RETRY_AFTER_ERROR)
            self.retry_at = time.monotonic() + RETRY_AFTER_ERROR
        finally:
            self.zk.begin_step(None)

    def refused(self, error: AccessRefused, doing: str) -> None:
        """ZooKeeper's ACLs refuse this identity: retrying cannot help, an operator must
        fix the credentials or the ACLs (`zk-sensorctl acl apply`)."""
        log.error("ZooKeeper refused %s (%s) %s: %s; check zk_auth_file and the fleet's "
                  "ACLs; exiting", self.access.describe(), error, doing,
                  "wrong or missing credentials" if self.access.credentials is None
                  or isinstance(error.cause, AuthFailedError) else
                  "not allowed for this identity")
        self.give_up(2)

    @property
    def step_budget(self) -> float:
        """What one step may spend waiting for ZooKeeper: within the watchdog interval
        (less one deadline for the rest of the step), or else within a session. The
        sensor is read off the loop (reader.py), so it needs no share of it."""
        interval = self.systemd.watchdog_interval
        if interval is None:
            return self.session_timeout
        return max(interval - self.settings.zk_deadline, self.settings.zk_deadline)

    def lost_namespace(self, error: Exception) -> None:
        """A folder or coordination znode vanished (a namespace deleted under the fleet):
        check the namespace and register again, from the next step on."""
        log.warning("a znode of the fleet is missing (%s); checking the namespace and "
                    "registering again", one_line(error) or type(error).__name__)
        self.namespace_ready = False
        self.registered = False
        self.device.published = False
        self.leader.need_reload = self.leader.office is not None
        self.retry_at = time.monotonic() + RETRY_AFTER_ERROR

    def step_unguarded(self) -> None:
        if not self.registered:
            self.register()
        if self.need_barrier_read:
            self.read_barrier()
        if self.handover.step_aside(time.monotonic()):
            self.need_evaluate = True
        if self.need_evaluate:
            self.evaluate_leadership()
        state = self.view.state
        if state is not None:
            self.measure(state.round)
        if self.leader.step(self.link_up):
            self.need_evaluate = True
        if self.handover.hand_over(time.monotonic(), self.leading):
            self.evaluate_leadership()
        self.recheck_stalled_barrier()

    def register(self) -> None:
        """Stand as a candidate. The namespace is checked once per process (and after a
        znode of it vanished): after a session expiry (which takes every node of a fleet
        at once) a node re-registers with a listing, a read per candidate of its own and
        one write."""
        if not self.namespace_ready:
            prepare_namespace(self.zk, self.layout)
            acls = creation_acls(self.zk, self.layout, self.access.credentials)
            self.client.default_acl = acls.shared
            self.device.acl = self.election.acl = acls.own
            self.namespace_ready = True
        self.device.resume_count()
        ghosts = self.election.register()
        if ghosts:
            log.warning("removed election candidates left by a previous session: %s",
                        ", ".join(ghosts))
        self.registered = True
        self.need_evaluate = True

    def evaluate_leadership(self) -> None:
        """First in line takes office (after a back-off if it just lost it); the election
        stays to be evaluated until that is settled."""
        first_in_line = self.election.evaluate()
        if not first_in_line:
            self.leader.step_down("no longer first in line")
            self.need_evaluate = False
            return
        if self.leader.office is None and self.election.candidate is not None:
            candidate = f"{self.layout.election}/{self.election.candidate}"
            self.need_evaluate = not self.leader.try_office(candidate)
            return
        self.need_evaluate = False

    def on_reading_event(self, answer: Answer) -> None:
        self.device.accept(answer)

    @property
    def read_timeout(self) -> float:
        return self.device.reader.deadline(self.config.sampling_period)

    def measure(self, round_number: int) -> None:
        """Settle the awaited reading and ask for the open round's (device.py); the read
        itself runs on the reader's thread, so this never waits for the sensor."""
        if (self.device.measure(round_number, time.monotonic(), self.read_timeout)
                and not self.ready):
            self.ready = True
            self.systemd.ready()
            log.info("ready: first reading published (round %d)", round_number)

    @property
    def stalled_after(self) -> float:
        """When a device warns that no round is being released: well past a leader's
        failover (a session expiry) and a few periods."""
        return max(3 * self.config.sampling_period, 2 * self.session_timeout)

    def recheck_at(self) -> float:
        """Three periods after the last release, then less and less often while stalled."""
        if self.view.changed_at > self.last_recheck:
            return self.view.changed_at + 3 * self.config.sampling_period
        return self.last_recheck + self.recheck_wait

    def recheck_stalled_barrier(self) -> None:
        """A device never trusts one watch forever: a notification can be lost (a server
        that dies between the change and the notice, a connection blip). With no release
        for three periods it reads the barrier and watches it again itself, backing off
        to `stalled_after` while nothing moves, and warns once when the fleet is stalled."""
        now = time.monotonic()
        if now < self.recheck_at():
            return
        moved = self.read_barrier()
        self.last_recheck = now
        if moved:
            return
        first = 3 * self.config.sampling_period
        self.recheck_wait = min(max(2 * self.recheck_wait, first), self.stalled_after)
        stalled_after = self.stalled_after
        if now - self.view.changed_at >= stalled_after and not self.view.stall_warned:
            self.view.stall_warned = True
            log.warning("no round released for %.0f s; waiting for a leader", stalled_after)

    def healthy(self) -> bool:
        return self.offline_since is None or (
            time.monotonic() - self.offline_since < self.settings.offline_grace
        )

    def report(self) -> None:
        """After every loop turn; the status line is only built for a systemd to read."""
        if self.systemd.enabled:
            self.systemd.status(self.status_line())
        if self.healthy():
            self.systemd.feed_watchdog()

    def status_line(self) -> str:
        if not self.link_up:
            return "ZooKeeper unreachable; waiting to reconnect"
        barrier = self.view.state
        round_number = barrier.round if barrier else "?"
        last = barrier.last if barrier else None
        mean = (f"last mean {last['mean']:.2f} over {last['count']} devices"
                if last else "no mean yet")
        office, devices = self.leader.office, self.leader.devices
        if office is not None:
            return (f"leader (epoch {office.epoch}), "
                    f"{len(devices) if devices is not None else '?'} devices, "
                    f"round {round_number}, {mean}")
        leader = barrier.leader if barrier and barrier.leader else None
        return (f"follower (leader: {'node ' + leader if leader else 'none yet'}), "
                f"round {round_number}, {mean}")

    def clear_answered_rounds(self) -> None:
        """Before a leader resigns, with its delivery in flight waited out: rounds the
        collector took are removed from the outbox, or the next leader sends them again."""
        self.drain_events()
        if self.leader.office is None:
            return
        try:
            self.leader.clean_outbox()
        except (*ZK_ERRORS, AccessRefused) as error:
            log.warning("could not clear the delivered rounds from the outbox (%s); the next "
                        "leader sends them again", one_line(error) or type(error).__name__)

    def shutdown(self) -> None:
        self.systemd.stopping()
        if self.stop_signal is not None:
            log.info("received %s: stopping", signal.Signals(self.stop_signal).name)
        was_leader = self.leader.office is not None
        self.courier.stop(self.settings.http_timeout)
        if was_leader and self.client.connected:
            self.clear_answered_rounds()
        self.leader.office = None
        if self.client.connected:
            try:
                self.election.resign()
            except (*ZK_ERRORS, AccessRefused) as error:
                log.warning("could not resign cleanly: %s",
                            one_line(error) or type(error).__name__)
            if was_leader:
                log.info("gave up leadership")
        if self.metrics is not None:
            self.metrics.stop()
        self.client.stop()
        self.client.close()
        self.device.reader.close()
        self.waker.close()
        log.info("stopped; session closed")

"""The zk-sensor daemon: one node of the fleet.

Everything that touches ZooKeeper runs in this module's single loop. Kazoo's threads
(connection listener, watches) only put an event on a queue and wake the loop, so no
callback ever blocks or calls ZooKeeper, and every decision about leadership is taken
in one place, in order.

Here: the loop, its events and its steps. The parts it drives, each in its module: the
events other threads post (events.py), the session and its granted timeout (session.py),
standing in the election (candidacy.py), the barrier's watch (barrier_watch.py), the
leader's steps (leader.py), switchovers (handover.py), the node's own readings
(device.py, reader.py), the delivery of rounds (delivery.py) and leaving (shutdown.py).
"""

import logging
import time
from typing import TYPE_CHECKING, assert_never

from zk_sensor.fleet.acl import InvalidMemberAcl
from zk_sensor.fleet.barrier import BarrierView
from zk_sensor.fleet.config_watch import LiveConfig, watch_config
from zk_sensor.fleet.election import Election
from zk_sensor.fleet.layout import Layout
from zk_sensor.node import events
from zk_sensor.node.barrier_watch import BarrierWatch
from zk_sensor.node.candidacy import Candidacy
from zk_sensor.node.clock import Clock
from zk_sensor.node.delivery import Courier, one_line
from zk_sensor.node.device import Device
from zk_sensor.node.handover import Handover
from zk_sensor.node.leader import Leader
from zk_sensor.node.reader import Reader
from zk_sensor.node.session import Session, adopt_granted_timeout, connection_changed
from zk_sensor.node.settings import Settings
from zk_sensor.node.shutdown import shut_down
from zk_sensor.node.status import status_line
from zk_sensor.node.systemd import Systemd
from zk_sensor.sensors import Sensor
from zk_sensor.waker import Waker
from zk_sensor.zk.access import ZkAccess
from zk_sensor.zk.client import KazooZk, new_client
from zk_sensor.zk.errors import (
    REFUSALS,
    ZK_ERRORS,
    AccessRefused,
    AuthFailedError,
    NoNodeError,
)
from zk_sensor.zk.handler import PollingHandler
from zk_sensor.zk.interface import ConnectionState

if TYPE_CHECKING:
    from zk_sensor.node.metrics import MetricsServer

log = logging.getLogger("zk_sensor")

RETRY_AFTER_ERROR = 1.0
# The loop wakes for events and for its own deadlines (see next_wakeup); this is only a
# safety net, so an idle follower wakes once a round instead of once a second.
MAX_IDLE = 5.0
INVALID_ACL_RETRY = 30.0


class Node:
    """One node of the fleet: the single thread that owns every decision (ZooKeeper calls,
    leadership, what to publish), so that no two of them can race. The parts it drives
    hold their own state; this is where they are wired together and called in order."""

    def __init__(self, settings: Settings, sensor: Sensor, systemd: Systemd,
                 access: ZkAccess | None = None) -> None:
        self.settings = settings
        self.access = access or ZkAccess()
        self.sensor = sensor
        self.systemd = systemd
        self.node_id = settings.node_id
        self.layout = Layout(settings.namespace)
        self.handler = PollingHandler()
        self.zk = KazooZk(new_client(settings.zookeeper, settings.session_timeout, self.access,
                                     self.handler, retry_deadline=settings.zk_deadline),
                          settings.zk_deadline)
        self.waker = Waker()
        self.mailbox = events.Mailbox(self.waker)
        self.session = Session(self.zk, settings)
        self.config = LiveConfig(
            {"sampling_period": settings.sampling_period, "api_url": settings.api_url}
        )
        self.election = Election(self.zk, self.layout, self.node_id, self.mailbox.election_changed)
        self.courier = Courier.from_settings(settings, may_deliver=self.delivery_epoch,
                                             api_url=lambda: self.config.api_url,
                                             report=self.mailbox.delivered)
        wall_clock = Clock()
        self.device = Device(self.zk, self.layout, self.node_id,
                             Reader(sensor, self.mailbox.reading_done), wall_clock)
        self.view = BarrierView()
        self.barrier = BarrierWatch(self.zk, self.layout, self.view, self.config,
                                    self.session, self.mailbox.barrier_changed)
        self.leader = Leader(self.zk, self.layout, self.node_id, settings.outbox_limit,
                             self.config, self.view, self.courier, settings.session_timeout,
                             self.mailbox.devices_changed, wall_clock)
        self.handover = Handover(self.zk, self.layout, self.node_id, self.election,
                                 self.leader, settings.http_timeout, self.mailbox.switchover_asked)
        self.candidacy = Candidacy(self.zk, self.layout, self.access, self.election,
                                   self.leader, self.device)
        self.handler.run_inline(self.mailbox.barrier_changed, self.mailbox.devices_changed,
                                self.mailbox.switchover_asked, self.election.predecessor_gone)

        self.stop_signal: int | None = None
        self.exit_code = 0
        self.watches: list[object] = []
        self.retry_at = 0.0
        self.ready = False
        self.metrics: MetricsServer | None = None

    # Callbacks from kazoo's threads, the courier's and the reader's: record, enqueue,
    # wake. Nothing else. All but this one are the mailbox's (events.py).

    def _on_connection(self, state: ConnectionState) -> None:
        if state != ConnectionState.CONNECTED:
            self.session.link_up = False
        self.mailbox.post(events.ConnectionChanged(state))

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
    def link_up(self) -> bool:
        """Whether the loop may call ZooKeeper now (read by the metrics thread too)."""
        return self.session.link_up

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
        self.zk.on_state(self._on_connection)
        if not (self.session.connect(self.waker, lambda: self.stopping)
                and self.adopt_negotiated_timeout()):
            self.shutdown()
            return self.exit_code
        self.start_metrics()
        try:
            self.watches = watch_config(self.zk, self.layout, self.mailbox.config_changed)
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

    def adopt_negotiated_timeout(self) -> bool:
        """Fit the settings to the session timeout the server granted (session.py)."""
        return adopt_granted_timeout(self)

    def start_metrics(self) -> None:
        """Only with a metrics_port: prometheus_client is imported then, not before."""
        if self.settings.metrics_port:
            from zk_sensor.node.metrics import serve_node_metrics

            self.metrics = serve_node_metrics(self)

    def next_wakeup(self) -> float:
        """Seconds the loop may sleep: only deadlines still ahead count, so a retry time
        that already passed never turns the wait into a busy loop."""
        now = time.monotonic()
        deadlines = [self.retry_at, self.barrier.recheck_at()]
        if self.systemd.next_feed_due is not None:
            deadlines.append(self.systemd.next_feed_due)
        if self.leader.office is not None or self.candidacy.need_evaluate:
            deadlines.extend(self.leader.deadlines())
        if self.device.deadline is not None:
            deadlines.append(self.device.deadline)
        deadlines.extend(self.handover.deadlines())
        ahead = [deadline - now for deadline in deadlines if deadline > now]
        return min([MAX_IDLE, *ahead])

    def drain_events(self) -> None:
        for event in self.mailbox.taken():
            self.handle(event)

    def handle(self, event: events.Event) -> None:
        """Most events only mark what the next step must read again."""
        match event:
            case events.ConnectionChanged(state):
                connection_changed(self, state)
            case events.ElectionChanged():
                self.candidacy.need_evaluate = True
            case events.ConfigChanged(key, data):
                self.on_config_changed(key, data)
            case events.BarrierChanged():
                self.barrier.need_read = True
            case events.DevicesChanged():
                self.leader.devices_stale = True
            case events.Delivered(round_number, outcome, detail):
                if self.leader.on_delivery(round_number, outcome, detail) is not None:
                    self.candidacy.need_evaluate = True
            case events.ReadingDone(answer):
                self.device.accept(answer)
            case events.SwitchoverAsked():
                self.handover.need_read = True
            case _:
                assert_never(event)

    def on_config_changed(self, key: str, data: bytes | None) -> None:
        changed = self.config.apply(key, data)
        clock = self.leader.clock
        if changed and key == "sampling_period" and clock is not None:
            clock.retime(self.config.sampling_period, time.monotonic())

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
            return self.session.timeout
        return max(interval - self.settings.zk_deadline, self.settings.zk_deadline)

    def lost_namespace(self, error: Exception) -> None:
        """A folder or coordination znode vanished (a namespace deleted under the fleet):
        check the namespace and register again, from the next step on."""
        log.warning("a znode of the fleet is missing (%s); checking the namespace and "
                    "registering again", one_line(error) or type(error).__name__)
        self.candidacy.namespace_lost()
        self.device.published = False
        self.leader.need_reload = self.leader.office is not None
        self.retry_at = time.monotonic() + RETRY_AFTER_ERROR

    def step_unguarded(self) -> None:
        candidacy = self.candidacy
        if not candidacy.registered:
            candidacy.register()
        if self.barrier.need_read:
            self.barrier.read()
        if self.handover.step_aside(time.monotonic()):
            candidacy.need_evaluate = True
        if candidacy.need_evaluate:
            candidacy.evaluate()
        state = self.view.state
        if state is not None:
            self.measure(state.round)
        if self.leader.step(self.link_up) is not None:
            candidacy.need_evaluate = True
        if self.handover.hand_over(time.monotonic(), self.leading):
            candidacy.evaluate()
        self.barrier.recheck_if_stalled()

    def measure(self, round_number: int) -> None:
        """Settle the awaited reading and ask for the open round's (device.py); the read
        itself runs on the reader's thread, so this never waits for the sensor."""
        read_timeout = self.device.reader.deadline(self.config.sampling_period)
        if self.device.measure(round_number, time.monotonic(), read_timeout) and not self.ready:
            self.ready = True
            self.systemd.ready()
            log.info("ready: first reading published (round %d)", round_number)

    def report(self) -> None:
        """After every loop turn; the status line is only built for a systemd to read."""
        if self.systemd.enabled:
            self.systemd.status(status_line(self.link_up, self.view, self.leader))
        if self.session.healthy(self.settings.offline_grace):
            self.systemd.feed_watchdog()

    def shutdown(self) -> None:
        """Leave the fleet (shutdown.py)."""
        shut_down(self)

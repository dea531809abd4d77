"""The node's ZooKeeper session as the loop sees it: connecting, being cut off, coming
back (what the node does about each), and the session timeout the server granted.

A missing ensemble is not fatal: the node keeps trying, backing off, until it connects or
is told to stop. The server may grant a session timeout other than the one asked for
(its min/maxSessionTimeout): the leader's lease, the stall check and the deadlines left
at their default follow the granted one (settings.py's `fitted_to`), and a deadline an
operator set that cannot fit it is a problem restarting cannot fix (exit 2).
"""

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from zk_sensor.fleet.lease import timing_problem
from zk_sensor.node.delivery import one_line
from zk_sensor.node.leader import Unseated
from zk_sensor.node.settings import Settings
from zk_sensor.waker import Waker
from zk_sensor.zk.client import KazooZk
from zk_sensor.zk.errors import ZK_ERRORS
from zk_sensor.zk.interface import ConnectionState

if TYPE_CHECKING:
    from zk_sensor.node.daemon import Node

log = logging.getLogger("zk_sensor")

CONNECT_BACKOFF_MAX = 5.0


class Session:
    """Whether the loop may call ZooKeeper now, since when it may not, and the timeout the
    server granted, which the lease, the stall check and the step budget are measured by.
    Kazoo's listener thread writes `link_up` (False only, the one thing it may record);
    everything else belongs to the loop."""

    def __init__(self, zk: KazooZk, settings: Settings) -> None:
        self.zk = zk
        self.address = settings.zookeeper
        self.asked = settings.session_timeout
        self.timeout = settings.session_timeout
        self.link_up = False
        self.offline_since: float | None = time.monotonic()

    def connect(self, waker: Waker, stopping: Callable[[], bool]) -> bool:
        """Keep trying until connected (True) or told to stop (False)."""
        backoff = 0.5
        while not stopping():
            try:
                self.zk.start(self.asked)
            except ZK_ERRORS as error:
                log.warning("cannot reach ZooKeeper at %s: %s; retrying in %.1f s",
                            self.address, one_line(error) or "timed out", backoff)
                waker.wait(backoff)
                backoff = min(backoff * 2, CONNECT_BACKOFF_MAX)
                continue
            self.link_up = True
            self.offline_since = None
            log.info("connected to ZooKeeper %s (session 0x%x, timeout %.1f s negotiated, "
                     "%.1f s asked)", self.address, self.zk.session_id or 0,
                     self.zk.negotiated or 0.0, self.asked)
            return True
        return False

    def cut_off(self) -> None:
        """Suspended or lost: offline from the first of them until connected again."""
        if self.offline_since is None:
            self.offline_since = time.monotonic()

    def back(self) -> None:
        """Connected again (the same session or a new one)."""
        self.link_up = True
        if self.offline_since is not None:
            log.info("ZooKeeper connection back after %.1f s (session 0x%x)",
                     time.monotonic() - self.offline_since, self.zk.session_id or 0)
            self.offline_since = None

    def healthy(self, offline_grace: float) -> bool:
        """Connected, or cut off for less than the grace the watchdog gives."""
        return self.offline_since is None or (
            time.monotonic() - self.offline_since < offline_grace)

    def fit(self, settings: Settings) -> Settings | None:
        """`settings` with the defaults fitted to the granted timeout (the same object when
        nothing had to change), or None when a deadline set cannot fit it (logged)."""
        negotiated = self.zk.negotiated or self.asked
        fitted, note = settings.fitted_to(negotiated)
        problem = timing_problem(negotiated, fitted.zk_deadline, fitted.http_timeout)
        if problem:
            log.error("%s; fix the settings or the server's min/maxSessionTimeout", problem)
            return None
        self.timeout = negotiated
        if not note:
            return settings
        log.info("the server granted a session timeout of %.1f s; %s", negotiated, note)
        return fitted


def adopt_granted_timeout(node: "Node") -> bool:
    """The lease, the stall check and the call and delivery deadlines left at their
    default follow the timeout the server granted; a deadline an operator set that cannot
    fit it stops the node (exit 2)."""
    fitted = node.session.fit(node.settings)
    if fitted is None:
        node.give_up(2)
        return False
    if fitted is not node.settings:
        # What took the deadlines at construction, before any server was asked.
        node.zk.deadline = fitted.zk_deadline
        node.courier.follow_http_timeout(fitted.http_timeout)
        node.handover.follow_http_timeout(fitted.http_timeout)
        node.settings = fitted
    node.leader.lease.set_session_timeout(node.session.timeout)
    return True


def connection_changed(node: "Node", state: ConnectionState) -> None:
    """Suspended: leadership is unknown until the link is back, so the leader steps
    down. Lost: the session's ephemeral znodes are gone, the node's candidate with them,
    so it stands again and measures the open round again. Connected: everything watched
    may have changed meanwhile, so it is all read again."""
    if state == ConnectionState.SUSPENDED:
        node.session.cut_off()
        log.warning("ZooKeeper connection suspended")
        node.leader.step_down(Unseated.CONNECTION_SUSPENDED)
    elif state == ConnectionState.LOST:
        node.session.cut_off()
        log.warning("ZooKeeper session lost; its ephemeral znodes are gone")
        node.leader.step_down(Unseated.SESSION_LOST)
        node.device.forget_session()
        node.election.forget()
        node.candidacy.session_lost()
    elif state == ConnectionState.CONNECTED and node.zk.connected:
        node.session.back()
        if not adopt_granted_timeout(node):
            return
        node.candidacy.need_evaluate = True
        node.barrier.need_read = True
        node.handover.need_read = True

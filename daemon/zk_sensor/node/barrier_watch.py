"""How a node follows the barrier: a watch, read again from the loop, and a recheck of
its own for the notification that never came.

Kazoo's DataWatch would read the barrier on kazoo's callback thread, one more thread
hand-off per device-round; here the watch only posts an event and the loop reads the
barrier and sets the watch again. A device never trusts one watch forever: a notification
can be lost (a server that dies between the change and the notice, a connection blip).
With no release for three periods it reads the barrier and watches it again itself,
backing off to `stalled_after` while nothing moves, and warns once when the fleet is
stalled.
"""

import logging
import time
from collections.abc import Callable

from zk_sensor.fleet.barrier import BarrierView
from zk_sensor.fleet.config_watch import LiveConfig
from zk_sensor.fleet.layout import Layout
from zk_sensor.node.session import Session
from zk_sensor.zk.errors import NoNodeError
from zk_sensor.zk.interface import Zk

log = logging.getLogger("zk_sensor")


class BarrierWatch:
    """The node's watch on the barrier and its own recheck of it, kept with the barrier
    view they feed so the loop only says when (`need_read`, `recheck_at`)."""

    def __init__(self, zk: Zk, layout: Layout, view: BarrierView, config: LiveConfig,
                 session: Session, on_change: Callable[[object], None]) -> None:
        self.zk = zk
        self.layout = layout
        self.view = view
        self.config = config
        self.session = session
        self.on_change = on_change
        self.need_read = True
        self.last_recheck = 0.0
        self.recheck_wait = 0.0

    def read(self) -> bool:
        """Read the barrier and watch it again, from the loop. True if it moved."""
        try:
            data, stat = self.zk.get(self.layout.barrier, watch=self.on_change)
        except NoNodeError:
            self.zk.exists(self.layout.barrier, watch=self.on_change)
            self.need_read = False
            return False
        self.need_read = False
        return self.view.accept(data, stat)

    @property
    def stalled_after(self) -> float:
        """When a device warns that no round is being released: well past a leader's
        failover (a session expiry) and a few periods."""
        return max(3 * self.config.sampling_period, 2 * self.session.timeout)

    def recheck_at(self) -> float:
        """Three periods after the last release, then less and less often while stalled."""
        if self.view.changed_at > self.last_recheck:
            return self.view.changed_at + 3 * self.config.sampling_period
        return self.last_recheck + self.recheck_wait

    def recheck_if_stalled(self) -> None:
        """Read the barrier again once `recheck_at` passed; back off while it has not
        moved, and warn once when it has not for `stalled_after`."""
        now = time.monotonic()
        if now < self.recheck_at():
            return
        moved = self.read()
        self.last_recheck = now
        if moved:
            return
        first = 3 * self.config.sampling_period
        self.recheck_wait = min(max(2 * self.recheck_wait, first), self.stalled_after)
        stalled_after = self.stalled_after
        if now - self.view.changed_at >= stalled_after and not self.view.stall_warned:
            self.view.stall_warned = True
            log.warning("no round released for %.0f s; waiting for a leader", stalled_after)

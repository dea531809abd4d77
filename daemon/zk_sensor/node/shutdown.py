"""How a node leaves the fleet when told to stop (a signal) or when it gives up.

The order matters. The courier stops first, its attempt in flight waited out (at most
http_timeout), so that a leader can then remove from the outbox the rounds the collector
took: left there, the next leader would send them again. Only then does the node resign
(its candidate goes, and the next in line takes office at once rather than after a
session expiry), and close the session, which takes its ephemeral znodes with it. The
sensor is closed last, unless a read is stuck in its driver (reader.py).
"""

import logging
import signal
from typing import TYPE_CHECKING

from zk_sensor.node.delivery import one_line
from zk_sensor.zk.errors import UNKNOWN_OR_REFUSED

if TYPE_CHECKING:
    from zk_sensor.node.daemon import Node

log = logging.getLogger("zk_sensor")


def shut_down(node: "Node") -> None:
    node.systemd.stopping()
    if node.stop_signal is not None:
        log.info("received %s: stopping", signal.Signals(node.stop_signal).name)
    was_leader = node.leader.office is not None
    node.courier.stop(node.settings.http_timeout)
    if was_leader and node.zk.connected:
        clear_answered_rounds(node)
    node.leader.office = None
    if node.zk.connected:
        try:
            node.election.resign()
        except UNKNOWN_OR_REFUSED as error:
            log.warning("could not resign cleanly: %s", one_line(error) or type(error).__name__)
        if was_leader:
            log.info("gave up leadership")
    if node.metrics is not None:
        node.metrics.stop()
    node.zk.close()
    node.device.reader.close()
    node.waker.close()
    log.info("stopped; session closed")


def clear_answered_rounds(node: "Node") -> None:
    """Before a leader resigns, with its delivery in flight waited out: rounds the
    collector took (their answers still on the mailbox) are removed from the outbox."""
    node.drain_events()
    if node.leader.office is None:
        return
    try:
        node.leader.clean_outbox()
    except UNKNOWN_OR_REFUSED as error:
        log.warning("could not clear the delivered rounds from the outbox (%s); the next "
                    "leader sends them again", one_line(error) or type(error).__name__)

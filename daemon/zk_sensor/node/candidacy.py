"""A node's candidacy: standing in the election's line, and taking office once first.

A node stands once per session: a session loss takes its candidate znode with it, and a
namespace deleted under the fleet takes everything, so either makes it register again
(the namespace is checked, and the node's ACLs worked out, once per process and again
after it vanished). Whether it is first in line is looked at again whenever something may
have moved the line: its predecessor left, it stood again (a switchover), a step ended
its office, the connection came back.
"""

import logging

from zk_sensor.fleet.acl import creation_acls
from zk_sensor.fleet.coordination import prepare_namespace
from zk_sensor.fleet.election import Election
from zk_sensor.fleet.layout import Layout
from zk_sensor.node.device import Device
from zk_sensor.node.leader import Leader, Unseated
from zk_sensor.zk.access import ZkAccess
from zk_sensor.zk.client import KazooZk

log = logging.getLogger("zk_sensor")


class Candidacy:
    """What the loop must redo about the election, and doing it: kept out of the loop so
    that its three flags (registered, namespace ready, line to evaluate) are set and
    cleared in one place."""

    def __init__(self, zk: KazooZk, layout: Layout, access: ZkAccess, election: Election,
                 leader: Leader, device: Device) -> None:
        self.zk = zk
        self.layout = layout
        self.access = access
        self.election = election
        self.leader = leader
        self.device = device
        self.registered = False
        self.namespace_ready = False
        self.need_evaluate = False

    def session_lost(self) -> None:
        """The candidate znode went with the session: stand again from the next step."""
        self.registered = False

    def namespace_lost(self) -> None:
        """A znode of the fleet vanished: check the namespace, then stand again."""
        self.namespace_ready = False
        self.registered = False

    def register(self) -> None:
        """Stand as a candidate. After a session expiry (which takes every node of a fleet
        at once) a node re-registers with a listing, a read per candidate of its own and
        one write."""
        if not self.namespace_ready:
            prepare_namespace(self.zk, self.layout)
            acls = creation_acls(self.zk, self.layout, self.access.credentials)
            self.zk.set_default_acl(acls.shared)
            self.device.acl = self.election.acl = acls.own
            self.namespace_ready = True
        self.device.resume_count()
        ghosts = self.election.register()
        if ghosts:
            log.warning("removed election candidates left by a previous session: %s",
                        ", ".join(ghosts))
        self.registered = True
        self.need_evaluate = True

    def evaluate(self) -> None:
        """First in line takes office (after a back-off if it just lost it); the election
        stays to be evaluated until that is settled."""
        first_in_line = self.election.evaluate()
        if not first_in_line:
            self.leader.step_down(Unseated.NOT_FIRST_IN_LINE)
            self.need_evaluate = False
            return
        if self.leader.office is None and self.election.candidate is not None:
            candidate = f"{self.layout.election}/{self.election.candidate}"
            self.need_evaluate = not self.leader.try_office(candidate)
            return
        self.need_evaluate = False

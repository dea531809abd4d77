"""A node's part in a switchover (switchover.py), run by the daemon's loop.

The request's watch only posts an event; the loop reads the request, and each node works
out its own part (`part_of`): a node standing ahead of the target stands again at the back
of the line; the leader does so last, between rounds. Most nodes decide from the request
alone (their candidate is behind the target's), so a request costs the fleet one read per
node, plus a few for the handful of nodes ahead of the target.

Between rounds means: the last release's outcome is known (an unknown one is resolved by
re-reading first), and the outbox is empty, so the next leader inherits no round that is
being delivered (it would deliver it again). A collector that answers empties the outbox
within moments of each release. One that does not is given no new attempt once the
switchover has waited DRAIN_WAIT (the courier asks before each), the attempt it may be
making is waited out (http_timeout), and the next leader inherits the pending rounds whole.

Every write here has three outcomes. Standing again creates the new candidate before the
old one goes (election.py), and until that is known to be done the node keeps tidying
its candidates and re-checking its part, so it never leaves an orphan candidate in line.
A request not carried out within PATIENCE of this node reading it is given up.
"""

import logging
from collections.abc import Callable

from zk_sensor.fleet.election import Election, node_of, sequence_of
from zk_sensor.fleet.layout import Layout
from zk_sensor.fleet.payloads import EpochRecord, Garbage, Request, epoch_holder
from zk_sensor.fleet.switchover import (
    Part,
    ahead_of_target,
    part_of,
    target_candidate,
    target_text,
)
from zk_sensor.node.leader import Leader
from zk_sensor.zk.errors import AccessRefused, NoNodeError
from zk_sensor.zk.interface import Zk

log = logging.getLogger("zk_sensor")

PATIENCE = 10.0
DRAIN_WAIT = 0.5
HOLD_MARGIN = 0.25


class Handover:
    """This node's part in the switchover request it last read, until it is settled."""

    def __init__(self, zk: Zk, layout: Layout, node_id: str, election: Election,
                 leader: Leader, http_timeout: float, on_change: Callable[[object], None]) -> None:
        self.zk = zk
        self.layout = layout
        self.node_id = node_id
        self.election = election
        self.leader = leader
        self.hold_for = http_timeout + HOLD_MARGIN
        self.on_change = on_change
        self.request: Request | None = None
        self.request_zxid = 0
        self.seen_at = 0.0
        self.settled = True
        self.need_read = True
        self.holding_since: float | None = None

    @property
    def holds_deliveries(self) -> bool:
        """Asked from the courier's thread before each attempt."""
        return self.holding_since is not None

    def deadlines(self) -> list[float]:
        if self.settled:
            return []
        due = [self.seen_at + PATIENCE]
        if self.leader.office is not None:
            due.append(self.seen_at + DRAIN_WAIT)
            if self.holding_since is not None:
                due.append(self.holding_since + self.hold_for)
        return due

    def read(self, now: float) -> None:
        """Read the request and watch it again. A re-read of the same write (after a
        reconnect) keeps what this node has done about it."""
        try:
            data, stat = self.zk.get(self.layout.switchover, watch=self.on_change)
            written = stat.mzxid
        except NoNodeError:
            self.zk.exists(self.layout.switchover, watch=self.on_change)
            data, written = b"", 0
        except AccessRefused as error:
            log.error("cannot read %s (%s): switchover requests will not reach this node; "
                      "an operator should run `zk-sensorctl acl apply`",
                      self.layout.switchover, error)
            data, written = b"", -1
        self.need_read = False
        if written == self.request_zxid:
            return
        self.request_zxid, self.seen_at, self.holding_since = written, now, None
        request = Request.decode(data)
        if isinstance(request, Garbage):
            log.error("switchover request ignored: %s holds garbage (%s)",
                      self.layout.switchover, request)
            request = None
        self.request = request
        self.settled = self.request is None

    def step_aside(self, now: float) -> bool:
        """Not in office: stand again if this node stands ahead of the target. True when
        the election must be evaluated (this node moved, or has candidates to tidy)."""
        if self.need_read:
            self.read(now)
        moved = False
        if not self.settled and self.leader.office is None and not self.expired(now):
            moved = self.move_if_ahead()
        return moved or self.election.untidy

    def move_if_ahead(self) -> bool:
        request = self.request
        assert request is not None
        held_it = self.leader.last_epoch == request.epoch
        if not held_it and not ahead_of_target(request, self.election.candidate):
            self.settled = True
            return False
        epoch, holder = self.read_epoch()
        part = part_of(request, epoch, holder, self.line(), self.node_id)
        if part is Part.STAND_AGAIN:
            log.info("standing again at the back of the line: switchover to %s requested by "
                     "%s", target_text(request), request.by)
            self.election.stand_again()
            return True
        self.settled = part is not Part.WAIT
        return False

    def follow_http_timeout(self, http_timeout: float) -> None:
        """The delivery deadline changed (fitted to the session the server granted): the
        attempt in flight a switchover waits out is that long now."""
        self.hold_for = http_timeout + HOLD_MARGIN

    def hand_over(self, now: float, leading: bool) -> bool:
        """In office: hand over between rounds. True once this node stood again."""
        office = self.leader.office
        if self.settled or office is None:
            self.holding_since = None
            return False
        request = self.request
        assert request is not None
        if self.expired(now):
            return False
        if request.epoch != office.epoch:
            log.info("switchover request for epoch %d ignored: this office is epoch %d",
                     request.epoch, office.epoch)
            self.settled = True
            return False
        line = self.line()
        part = part_of(request, office.epoch, self.node_id, line, self.node_id)
        if part is Part.NONE:
            log.warning("switchover to %s ignored: no candidate to hand over to",
                        target_text(request))
            self.settled = True
            return False
        if part is Part.WAIT or not (leading and self.leader.between_rounds()
                                     and self.deliveries_quiet(now)):
            return False
        target = node_of(target_candidate(request, self.node_id, line) or "")
        self.leader.step_down(f"handing over to node {target}, switchover requested by "
                              f"{request.by}", failed=False)
        self.holding_since = None
        self.election.stand_again()
        return True

    def deliveries_quiet(self, now: float) -> bool:
        outbox = self.leader.outbox
        if not outbox.pending and not outbox.answered:
            return True
        if now < self.seen_at + DRAIN_WAIT:
            return False
        if self.holding_since is None:
            self.holding_since = now
            log.info("switchover: the collector is slow; no new delivery attempt, the one "
                     "in flight is waited out (%.1f s), then the next leader inherits the %d "
                     "pending rounds", self.hold_for, len(outbox.pending))
        return not outbox.answered and now >= self.holding_since + self.hold_for

    def expired(self, now: float) -> bool:
        if now - self.seen_at <= PATIENCE:
            return False
        assert self.request is not None
        log.warning("switchover to %s requested by %s not carried out within %.0f s; "
                    "giving it up", target_text(self.request), self.request.by, PATIENCE)
        self.settled = True
        self.holding_since = None
        return True

    def read_epoch(self) -> tuple[int | None, str | None]:
        """The epoch number (None: gone or garbage) and its holder, read on its own: an
        epoch znode whose number is garbage may still name its holder."""
        found = self.zk.get_many([self.layout.epoch])[self.layout.epoch]
        if found is None:
            return None, None
        data, stat = found
        record = EpochRecord.decode(data, stat.version)
        epoch = None if isinstance(record, Garbage) else record.epoch
        return epoch, epoch_holder(data)

    def line(self) -> list[str]:
        names = self.zk.children(self.layout.election)
        return sorted((name for name in names if node_of(name) is not None), key=sequence_of)

"""Switchover: the operator asks the leader to hand over, to a chosen node or to the next
in line, between two rounds, so no round is lost or closed twice.

The request is the data of the persistent znode `switchover` (empty between requests),
which only the operator may write (it carries the config's ACL):
`{"epoch": E, "to": ID or null, "candidate": ID's candidate znode or null, "by": ...}`.

- Fenced by epoch: only the leader of epoch E acts on it. Its successor takes office with
  a higher epoch, so the request is inert from then on, whoever reads it later; it cannot
  be carried out twice, even if the CLI dies before clearing it.
- The line moves, nobody is pushed: whoever stands ahead of the target stands again at the
  back of the line (a new candidate znode, then the old one goes), the leader last. The
  target is then first in line and takes office the usual way (office.py: a new epoch,
  fenced). Without `--to`, the target is whoever stands right behind the leader.
- Between rounds: the leader hands over only once its last release's outcome is known and
  its outbox is empty, so the new leader inherits nothing that is being delivered (handover.py).

`part_of` says what one node does about a request; the daemon (handover.py) and the tests
share it. `cmd_switchover` is `zk-sensorctl switchover`.
"""

import argparse
import contextlib
import socket
import sys
import time
from dataclasses import dataclass
from enum import Enum

from zk_sensor.fleet.election import node_of, sequence_of
from zk_sensor.fleet.layout import Layout
from zk_sensor.fleet.payloads import EpochRecord, Garbage, epoch_holder
from zk_sensor.fleet.payloads import Request as Request  # imported from here
from zk_sensor.zk.errors import ZK_ERRORS, BadVersionError, NoNodeError
from zk_sensor.zk.interface import Zk

POLL = 0.05


class InvalidRequest(ValueError):
    """The switchover znode holds something no CLI wrote."""


def encode_request(request: Request) -> bytes:
    return request.encode()


def decode_request(data: bytes | None) -> Request | None:
    """None for no request (empty); raises InvalidRequest for garbage: the older contract
    node/handover.py relies on; `Request.decode` returns Garbage instead."""
    request = Request.decode(data)
    if isinstance(request, Garbage):
        raise InvalidRequest(request.reason)
    return request


def target_text(request: Request) -> str:
    """For log lines and messages."""
    return f"node {request.to}" if request.to else "the next in line"


class Part(Enum):
    """What one node does about a request."""
    INERT = "inert"            # another epoch: not this fleet's leader's request any more
    NONE = "none"              # not ahead of the target, or no target: nothing to do
    WAIT = "wait"              # the leader: others still stand between it and the target
    STAND_AGAIN = "stand again"


def target_candidate(request: Request, holder: str | None, line: list[str]) -> str | None:
    """The target's candidate znode: the one the CLI named, or the first not the leader's."""
    if request.candidate is not None:
        return request.candidate if request.candidate in line else None
    return next((name for name in line if node_of(name) != holder), None)


def part_of(request: Request, epoch: int | None, holder: str | None, line: list[str],
            me: str) -> Part:
    """`line`: candidate znode names in election order; `epoch` and `holder`: the epoch
    znode's. Everyone ahead of the target stands again, the holder last, so the target
    ends up first in line and nobody else can take office meanwhile."""
    if request.epoch != epoch:
        return Part.INERT
    target = target_candidate(request, holder, line)
    if target is None or node_of(target) == me:
        return Part.NONE
    ahead = {node_of(name) for name in line[:line.index(target)]}
    if me not in ahead:
        return Part.NONE
    if me == holder and ahead != {me}:
        return Part.WAIT
    return Part.STAND_AGAIN


def ahead_of_target(request: Request, candidate: str | None) -> bool:
    """Without a listing: may this node (its candidate znode) stand ahead of the target?"""
    if request.candidate is None or candidate is None:
        return False
    return sequence_of(candidate) < sequence_of(request.candidate)


# The CLI.

@dataclass(frozen=True)
class Leadership:
    """Who leads as the CLI sees it: the epoch znode's number and holder (None when
    missing or garbage) and the candidates in election order; compared before and after
    a request to tell whether the switchover happened."""

    epoch: int | None
    holder: str | None
    line: list[str]

    @property
    def leader(self) -> str | None:
        """As `status` says: first in line and holding the epoch."""
        first = node_of(self.line[0]) if self.line else None
        return first if first is not None and first == self.holder else None


def read_leadership(zk: Zk, layout: Layout) -> Leadership:
    found = zk.get_many([layout.epoch])[layout.epoch]
    line = sorted((name for name in zk.children_or_none(layout.election)
                   if node_of(name) is not None), key=sequence_of)
    if found is None:
        return Leadership(None, None, line)
    record = EpochRecord.decode(found[0], found[1].version)
    epoch = None if isinstance(record, Garbage) else record.epoch
    return Leadership(epoch, epoch_holder(found[0]), line)


def plan_request(now: Leadership, to: str | None, by: str) -> Request:
    """The request to write; ValueError (the one line to print) when it must be refused."""
    leader = now.leader
    if leader is None or now.epoch is None:
        raise ValueError("no leader to hand over from")
    if to == leader:
        raise ValueError(f"node {to} is the leader already")
    if to is None:
        if not any(node_of(name) != leader for name in now.line):
            raise ValueError(f"node {leader} is the only candidate: nobody to hand over to")
        return Request(now.epoch, None, None, by)
    candidate = next((name for name in now.line if node_of(name) == to), None)
    if candidate is None:
        raise ValueError(f"node {to} is not a live candidate "
                         f"(candidates: {', '.join(live_in_line(now.line))})")
    return Request(now.epoch, to, candidate, by)


def live_in_line(line: list[str]) -> list[str]:
    nodes: list[str] = []
    for name in line:
        node = node_of(name)
        if node is not None and node not in nodes:
            nodes.append(node)
    return nodes


def write_request(zk: Zk, layout: Layout, data: bytes) -> None:
    """A missing znode (a fleet never under `acl apply`) is created with the config
    folder's ACL, as `config set` does. An unknown outcome is no error: the request may
    have landed, and the epoch znode will tell whether it was carried out."""
    with contextlib.suppress(*ZK_ERRORS):
        if zk.exists(layout.switchover) is None:
            zk.create(layout.switchover, data, acl=zk.get_acls(layout.config)[0])
        else:
            zk.set(layout.switchover, data)


def withdraw_request(zk: Zk, layout: Layout, data: bytes) -> None:
    """Clear the znode if it still holds our request (by version: not one written since).
    Best effort: a request left behind is inert once the epoch moves, and nodes give one
    up after a while anyway."""
    with contextlib.suppress(BadVersionError, NoNodeError, *ZK_ERRORS):
        current, stat = zk.get(layout.switchover)
        if current == data:
            zk.set(layout.switchover, b"", version=stat.version)


def handed_over(before: Leadership, after: Leadership, to: str | None) -> bool:
    if after.leader is None or after.epoch is None or before.epoch is None:
        return False
    if to is not None:
        return after.leader == to
    return after.epoch > before.epoch and after.leader != before.leader


def wait_for_handover(zk: Zk, layout: Layout, before: Leadership, to: str | None,
                      deadline: float) -> tuple[bool, Leadership]:
    """Whether it happened before the deadline, and the leadership last seen (polled: a
    CLI may poll)."""
    while True:
        now = read_leadership(zk, layout)
        if handed_over(before, now, to):
            return True, now
        if time.monotonic() >= deadline:
            return False, now
        time.sleep(POLL)


def requester(args: argparse.Namespace) -> str:
    """Who asked, for the nodes' log lines: the ZooKeeper identity and the host."""
    credentials = args.access.credentials
    return f"{credentials.user if credentials else 'anonymous'}@{socket.gethostname()}"


def cmd_switchover(zk: Zk, layout: Layout, args: argparse.Namespace) -> int:
    before = read_leadership(zk, layout)
    try:
        request = plan_request(before, args.to, requester(args))
    except ValueError as error:
        print(f"zk-sensorctl: switchover refused: {error}", file=sys.stderr)
        return 2
    data = encode_request(request)
    started = time.monotonic()
    write_request(zk, layout, data)
    done, after = wait_for_handover(zk, layout, before, args.to, started + args.wait)
    elapsed = time.monotonic() - started
    withdraw_request(zk, layout, data)
    if not done:
        leads = f"node {after.leader}" if after.leader else "nobody"
        print(f"zk-sensorctl: switchover to {target_text(request)} not done within "
              f"{args.wait:g} s: {leads} leads (epoch {after.epoch}); request withdrawn",
              file=sys.stderr)
        return 1
    print(f"switched over: node {before.leader} (epoch {before.epoch}) -> node "
          f"{after.leader} (epoch {after.epoch}) in {elapsed:.1f} s")
    return 0

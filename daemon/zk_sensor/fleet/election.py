"""Leader election: ephemeral sequential candidates, each watching only its predecessor.

Why not kazoo's Election recipe: it runs the leader's work inside a blocking call on a
lock, which cannot step down the instant the connection is suspended. Here the daemon's
loop asks `evaluate()` whenever a watch or a connection change says something moved,
and leadership is a fact the loop re-checks rather than a function it is stuck inside.

Each candidate watches the one just before it, so a join or leave wakes one node, not
the whole fleet (no herd). A candidate's name carries its node id (`n_<id>_<sequence>`),
so a node finds the candidates of its own earlier lives from one listing, without reading
every candidate: a mass reconnect of N nodes costs O(N) reads, not O(N^2).

Taking office (office.py) bumps the epoch in the same transaction that checks our
candidate znode still exists: the epoch only grows, and it fences every later act of
this leader.

A switchover (switchover.py) moves a node to the back of the line: it stands again with a
new candidate before its old one goes, so it never stops being a live candidate.
"""

import contextlib
import logging
from collections.abc import Callable

from zk_sensor.fleet.layout import Layout
from zk_sensor.zk.errors import NoNodeError, NotEmptyError
from zk_sensor.zk.interface import ACL, Zk

PREFIX = "n_"
log = logging.getLogger("zk_sensor")
UNNUMBERED = 10**10


def sequence_number(name: str) -> int | None:
    """The sequence ZooKeeper appended to a sequential znode's name (ten digits, with a
    sign once its counter wraps past 2**31), or None for a name it did not number: any
    fleet credential can create one, and `int` alone would take `²` or 5,000 digits."""
    sequence = name.rsplit("_", 1)[-1]
    digits = sequence.removeprefix("-")
    if not (digits.isascii() and digits.isdigit() and len(digits) <= 10):
        return None
    return int(sequence)


def sequence_of(name: str) -> int:
    """The sort key of the line: a name ZooKeeper did not number sorts after every
    candidate rather than crash the sort, so it never stands ahead of one."""
    number = sequence_number(name)
    return UNNUMBERED if number is None else number


def node_of(name: str) -> str | None:
    """The node id in a candidate's name, or None for a name we did not write."""
    if not name.startswith(PREFIX) or "_" not in name[len(PREFIX):]:
        return None
    node = name[len(PREFIX):].rsplit("_", 1)[0]
    return node if node and sequence_number(name) is not None else None


def live_nodes(names: list[str]) -> list[str]:
    return sorted({node for node in map(node_of, names) if node is not None})


def candidate_prefix(node_id: str) -> str:
    return f"{PREFIX}{node_id}_"


def is_candidate_of(name: str, node_id: str) -> bool:
    return node_of(name) == node_id


class Election:
    """This node's place in the line of candidates: it stands (`register`), learns whether
    it is first (`evaluate`, watching only its predecessor), stands again at the back for a
    switchover and resigns. Leadership is a fact the daemon's loop re-checks, not a call
    it is stuck inside (kazoo's recipe), so a suspended connection can step down at once."""

    def __init__(
        self, zk: Zk, layout: Layout, node_id: str, on_change: Callable[[], None]
    ) -> None:
        self.zk = zk
        self.layout = layout
        self.node_id = node_id
        self.on_change = on_change
        self.candidate: str | None = None
        self.untidy = False
        # The ACL of our candidates (acl.py: this node and the operator write them);
        # None: kazoo's default ACL.
        self.acl: list[ACL] | None = None
        # Znodes in the line that are no candidates: persistent, so no session holds them
        # (any fleet credential can create one named to stand first, and nobody would
        # ever lead); skipped once seen, and removed where ZooKeeper lets us.
        self.impostors: set[str] = set()

    def predecessor_gone(self, _event: object) -> None:
        """A watch callback: runs on kazoo's connection thread (kazoo_handler.py)."""
        self.on_change()

    def register(self) -> list[str]:
        """Stand as a candidate; returns the ghost candidates removed on the way.

        One listing finds the candidates named after us. One held by this very session is
        a create whose reply was lost (a timeout: the outcome was unknown, and it landed):
        it is adopted, not duplicated, so no orphan ever stands first in line for nobody.
        One held by another session is a previous life of ours, restarted within the
        session timeout: left alone it would lead in our name until its session expires,
        and nobody would act, so it is removed.
        """
        session_id = self.zk.session_id
        ours = sorted((name for name in self.zk.children(self.layout.election)
                       if is_candidate_of(name, self.node_id)), key=sequence_of)
        self.candidate = None
        ghosts = []
        for name in ours:
            path = f"{self.layout.election}/{name}"
            stat = self.zk.exists(path)
            if stat is None:
                continue
            if stat.ephemeralOwner == session_id and self.candidate is None:
                self.candidate = name
                continue
            if not stat.ephemeralOwner:
                self.set_aside(name)
                continue
            with contextlib.suppress(NoNodeError):
                self.zk.delete(path, version=stat.version)
                if stat.ephemeralOwner != session_id:
                    ghosts.append(path)
        if self.candidate is None:
            path = self.zk.create(
                f"{self.layout.election}/{candidate_prefix(self.node_id)}",
                self.node_id.encode(), ephemeral=True, sequence=True, acl=self.acl,
            )
            self.candidate = path.rsplit("/", 1)[-1]
        self.untidy = False
        return ghosts

    def stand_again(self) -> None:
        """Stand again at the back of the line. After an unknown outcome the candidates
        of ours are not known: `untidy` stays set until `tidy` has removed all but the one
        we stand with, so no orphan of ours is ever left standing ahead of us."""
        self.untidy = True
        path = self.zk.create(
            f"{self.layout.election}/{candidate_prefix(self.node_id)}",
            self.node_id.encode(), ephemeral=True, sequence=True, acl=self.acl,
        )
        self.candidate = path.rsplit("/", 1)[-1]
        self.tidy(self.zk.children(self.layout.election))

    def tidy(self, names: list[str]) -> list[str]:
        """Remove every candidate named after us but ours; returns the names left."""
        left = []
        for name in names:
            if name in self.impostors:
                continue
            if is_candidate_of(name, self.node_id) and name != self.candidate:
                try:
                    self.zk.delete(f"{self.layout.election}/{name}")
                except NoNodeError:
                    pass
                except NotEmptyError:
                    self.set_aside(name)
            else:
                left.append(name)
        self.untidy = False
        return left

    def evaluate(self) -> bool:
        """True if we are first in line; otherwise watch our predecessor and return False."""
        if self.candidate is None:
            self.register()
        names = self.line()
        if self.candidate not in names:
            self.candidate = None
            self.register()
            names = self.line()
        if self.untidy:
            names = self.tidy(names)
        assert self.candidate is not None, "register() names this node's candidate"
        position = names.index(self.candidate)
        while position > 0:
            predecessor = f"{self.layout.election}/{names[position - 1]}"
            stat = self.zk.exists(predecessor, watch=self.predecessor_gone)
            if stat is None:
                self.on_change()
            elif stat.ephemeralOwner == 0:
                self.set_aside(names.pop(position - 1))
                position -= 1
                continue
            return False
        return True

    def line(self) -> list[str]:
        names = self.zk.children(self.layout.election)
        return sorted((name for name in names if name not in self.impostors), key=sequence_of)

    def set_aside(self, name: str) -> None:
        """A persistent znode in the line: no candidate, whatever its name says (even ours:
        anyone with the fleet's credential may create one, and a child pins it)."""
        self.impostors.add(name)
        log.warning("election: %s is persistent, no candidate: skipping it and removing it",
                    name)
        with contextlib.suppress(NoNodeError, NotEmptyError):
            self.zk.delete(f"{self.layout.election}/{name}")

    def resign(self) -> None:
        if self.candidate is None:
            return
        with contextlib.suppress(NoNodeError):
            self.zk.delete(f"{self.layout.election}/{self.candidate}")
        self.candidate = None

    def forget(self) -> None:
        """After a session loss our candidate znode is gone with the session."""
        self.candidate = None


def current_leader(zk: Zk, layout: Layout) -> str | None:
    names = sorted(zk.children_or_none(layout.election), key=sequence_of)
    for name in names:
        try:
            data, _ = zk.get(f"{layout.election}/{name}")
        except NoNodeError:
            continue
        return data.decode(errors="replace")
    return None


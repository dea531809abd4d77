"""A fleet of nodes on one MemoryEnsemble, driven step by step as the daemon's loop
drives them (node/daemon.py): register, evaluate the election, take office, the leader's
steps. Each node has its own session; its courier only records what it was handed."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from zk_sensor.fleet.barrier import BarrierView
from zk_sensor.fleet.config_watch import LiveConfig
from zk_sensor.fleet.coordination import prepare_namespace
from zk_sensor.fleet.election import Election
from zk_sensor.fleet.layout import Layout
from zk_sensor.node.clock import Clock
from zk_sensor.node.leader import Leader
from zk_sensor.testing.memory import MemoryEnsemble, MemoryZk
from zk_sensor.zk.errors import NoNodeError


@dataclass
class FakeCourier:
    """What the leader hands over for delivery: `pending` as the courier would hold it,
    `added` every round handed over as newly released (a round added twice would be
    closed twice)."""
    pending: dict[int, Any] = field(default_factory=dict)
    added: list[int] = field(default_factory=list)

    def replace(self, rounds: list[Any]) -> None:
        self.pending = {aggregate.round: aggregate for aggregate in rounds}

    def add(self, aggregate: Any) -> None:
        self.pending[aggregate.round] = aggregate
        self.added.append(aggregate.round)

    def discard(self, round_number: int) -> None:
        self.pending.pop(round_number, None)

    def clear(self) -> None:
        self.replace([])

    def stop(self, timeout: float) -> None:
        return None


class MemNode:
    def __init__(self, ensemble: MemoryEnsemble, layout: Layout, node_id: str,
                 period: float = 1.0, outbox_limit: int = 100) -> None:
        self.node_id = node_id
        self.layout = layout
        self.zk: MemoryZk = ensemble.client()
        self.election_wakeups = 0
        self.device_wakeups = 0
        self.election = Election(self.zk, layout, node_id, self._wake)
        self.view = BarrierView()
        self.config = LiveConfig({"sampling_period": period,
                                  "api_url": "http://127.0.0.1:9/api/rounds"})
        self.courier = FakeCourier()
        self.leader = Leader(self.zk, layout, node_id, outbox_limit, self.config, self.view,
                             self.courier, ensemble.session_timeout,  # type: ignore[arg-type]
                             self._devices, Clock(lambda: True))
        self.count = 0

    def _wake(self) -> None:
        self.election_wakeups += 1

    def _devices(self, _event: object) -> None:
        self.device_wakeups += 1

    def register(self) -> list[str]:
        prepare_namespace(self.zk, self.layout)
        return self.election.register()

    def evaluate(self) -> bool:
        """What the daemon's Candidacy.evaluate does, without its back-off wait: True in
        office."""
        if not self.election.evaluate():
            self.leader.step_down("no longer first in line")
            return False
        if self.leader.office is None and self.election.candidate is not None:
            self.leader.next_attempt = 0.0
            return self.leader.try_office(f"{self.layout.election}/{self.election.candidate}")
        return True

    def step(self) -> str | None:
        return self.leader.step(True)

    def lead(self) -> None:
        """Register, take office and load the fleet's state (the first step in office)."""
        self.register()
        assert self.evaluate(), f"node {self.node_id} did not take office"
        assert self.step() is None
        assert self.leader.clock is not None

    def due(self) -> None:
        assert self.leader.clock is not None
        self.leader.clock.next_close = time.monotonic() - 0.001

    def close(self) -> str | None:
        """Make the round due and take one leader step."""
        self.due()
        return self.step()

    def measure(self, value: float, round_number: int | None = None) -> None:
        """Publish a reading for the open round (or `round_number`), as device.py does."""
        if round_number is None:
            round_number = barrier_round(self.zk, self.layout)
        self.count += 1
        data = reading(value, round_number, self.count)
        path = self.layout.reading(self.node_id)
        if self.zk.exists(path) is None:
            self.zk.create(path, data)
        else:
            self.zk.set(path, data)


class MemFleet:
    def __init__(self, ensemble: MemoryEnsemble, layout: Layout) -> None:
        self.ensemble = ensemble
        self.layout = layout
        self.nodes: dict[str, MemNode] = {}

    def node(self, node_id: str, **kwargs: float | int) -> MemNode:
        node = MemNode(self.ensemble, self.layout, node_id, **kwargs)  # type: ignore[arg-type]
        self.nodes[node_id] = node
        return node

    def leaders(self) -> list[str]:
        return [node_id for node_id, node in self.nodes.items() if node.leader.office]


# The znodes' contents as JSON, read here rather than through the fleet's decoders: the
# tests assert what is stored, whatever the code that reads it back looks like.

def payload(zk: MemoryZk, path: str) -> dict[str, Any]:
    """A znode's JSON object; AssertionError for garbage."""
    try:
        value = json.loads(zk.get(path)[0])
    except (ValueError, RecursionError):
        value = None
    assert isinstance(value, dict), f"{path} holds garbage"
    return value


def reading(value: float, round_number: int, count: int, taken_at: float | None = None,
            ) -> bytes:
    """A reading as a device writes it."""
    return json.dumps({"value": value, "taken_at": time.time() if taken_at is None
                       else taken_at, "round": round_number, "count": count,
                       "failures": 0}).encode()


def epoch_json(epoch: int, leader: str) -> bytes:
    return json.dumps({"epoch": epoch, "leader": leader}).encode()


def barrier_json(round_number: int, epoch: int = 1) -> bytes:
    return json.dumps({"round": round_number, "epoch": epoch, "leader": "x",
                       "released_at": 0.0, "last": None}).encode()


def barrier_round(zk: MemoryZk, layout: Layout) -> int:
    round_number = payload(zk, layout.barrier)["round"]
    assert isinstance(round_number, int)
    return round_number


def outbox_rounds(zk: MemoryZk, layout: Layout) -> list[int]:
    """The rounds pending in the outbox, by their payload."""
    return sorted(payload(zk, f"{layout.outbox}/{name}")["round"]
                  for name in zk.children(layout.outbox))


def outbox_stats(zk: MemoryZk, layout: Layout) -> dict[str, int]:
    return payload(zk, layout.outbox)


def outbox_released(zk: MemoryZk, layout: Layout) -> int:
    return int(outbox_stats(zk, layout)["released"])


def epoch_of(zk: MemoryZk, layout: Layout) -> int:
    return int(payload(zk, layout.epoch)["epoch"])


def epoch_holder_of(zk: MemoryZk, layout: Layout) -> str:
    return str(payload(zk, layout.epoch)["leader"])


def is_incarnation(data: bytes) -> bool:
    return re.fullmatch(rb"[A-Za-z0-9_-]{1,64}", data) is not None


def exists(zk: MemoryZk, path: str) -> bool:
    try:
        zk.get(path)
    except NoNodeError:
        return False
    return True

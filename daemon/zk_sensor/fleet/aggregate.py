"""The round's aggregate: what the leader computes from the readings and delivers.

Its `time` is the leader's wall clock at the close; a leader whose clock NTP has not yet
synchronised (clock.py) marks it `"clock": "unsynced"`, as nodes mark their readings, and
the collector then stores the round without a measurement time rather than a wrong one.
"""

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Aggregate:
    round: int
    epoch: int
    leader: str
    mean: float
    count: int
    min: float
    max: float
    time: float
    incarnation: str = ""
    clock_synced: bool = True

    def as_dict(self) -> dict[str, float | int | str]:
        payload: dict[str, float | int | str] = asdict(self)
        del payload["clock_synced"]
        if not self.clock_synced:
            payload["clock"] = "unsynced"
        return payload


def aggregate(
    values: Sequence[float], *, round_number: int, epoch: int, leader: str, now: float,
    incarnation: str = "", clock_synced: bool = True,
) -> Aggregate | None:
    """None when nobody measured: an empty round has no mean and is not delivered."""
    finite = [value for value in values if math.isfinite(value)]
    if not finite:
        return None
    return Aggregate(
        round=round_number,
        epoch=epoch,
        leader=leader,
        mean=math.fsum(finite) / len(finite),
        count=len(finite),
        min=min(finite),
        max=max(finite),
        time=now,
        incarnation=incarnation,
        clock_synced=clock_synced,
    )

"""The round's aggregate: what the leader computes from the readings and delivers."""

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

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def aggregate(
    values: Sequence[float], *, round_number: int, epoch: int, leader: str, now: float,
    incarnation: str = "",
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
    )

"""The round's aggregate: what the leader computes from the readings and delivers.

The model and its wire format are payloads/outbox.py's `Aggregate` (re-exported here for
node/ and the tests). Its `time` is the leader's wall clock at the close; a leader whose
clock NTP has not yet synchronised (clock.py) marks it `"clock": "unsynced"`, as nodes
mark their readings, and the collector then stores the round without a measurement time
rather than a wrong one.
"""

import math
from collections.abc import Sequence

from zk_sensor.fleet.payloads.outbox import Aggregate as Aggregate  # imported from here


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

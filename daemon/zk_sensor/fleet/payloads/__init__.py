"""Every znode payload of the fleet, one frozen model each, with its wire format.

Each model has `encode(self) -> bytes` and a classmethod `decode(data, ...)` that is
total: for bytes that are none we wrote it returns `Garbage(reason)`, never raises, so
every caller sees garbage in the type and decides what it means there (repair, skip,
refuse, list it). The bounds (size, nesting, number length) are codec.py's.

- coordination: `BarrierState` (barrier), `EpochRecord` (epoch), `Incarnation`
- readings: `Reading` (readings/<node>)
- outbox: `Aggregate` (outbox/<round>), `OutboxStats` (the outbox znode's counts)
- operator: `Request` (switchover), `Revoked` (revoked), `MemberAcl` (member-acl)

Decoders with the older contracts (None, or an exception, for garbage) stay in the
modules that use the payloads (barrier.py, coordination.py, readings.py, ...) for the
callers outside fleet/ that still use them.
"""

from zk_sensor.fleet.payloads.coordination import (
    BarrierState,
    EpochRecord,
    Incarnation,
    epoch_holder,
)
from zk_sensor.fleet.payloads.garbage import Garbage, or_none
from zk_sensor.fleet.payloads.operator import MemberAcl, Request, Revoked
from zk_sensor.fleet.payloads.outbox import Aggregate, OutboxStats
from zk_sensor.fleet.payloads.readings import Reading, encode_reading

__all__ = [
    "Aggregate",
    "BarrierState",
    "EpochRecord",
    "Garbage",
    "Incarnation",
    "MemberAcl",
    "OutboxStats",
    "Reading",
    "Request",
    "Revoked",
    "encode_reading",
    "epoch_holder",
    "or_none",
]

"""What every payload decoder returns for bytes it cannot read: a value, never an
exception.

Any fleet credential can write anything into a znode, so garbage is an ordinary outcome
of reading one, and each caller decides what it means there: the leader repairs the
barrier, the epoch or the outbox, skips a reading, removes an outbox entry; a node
refuses to create znodes under a garbage member ACL; `status` lists it. `reason` is the
one line that says what was wrong (codec.py's `Undecodable` message, or the model's own).
"""

from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Garbage:
    """A payload that is none we wrote, with the one-line reason; returned in place of
    the model by every `decode`, so a caller cannot forget it the way it can forget an
    exception (mypy sees the union)."""

    reason: str

    def __str__(self) -> str:
        return self.reason


def or_none(decoded: T | Garbage) -> T | None:
    """For callers to whom garbage and absence mean the same (the value, or None)."""
    return None if isinstance(decoded, Garbage) else decoded

"""What a ZooKeeper call can end in, for everything above zk/.

kazoo's own exception classes are re-exported rather than wrapped: the `Zk` wrapper hands
out transaction results as kazoo builds them (an exception instance per failed
operation), and translating every one of them would cost a copy per result for no
difference a caller could act on. What callers must tell apart:
- done: the call returned;
- failed: one of the named errors below (the server answered: no node, bad version...);
- unknown: `ZK_ERRORS` (a timeout or a lost connection: the write may have been applied),
  which every call site handles by being idempotent or by stepping down and re-reading;
- refused: `AccessRefused`, deliberately outside `ZK_ERRORS` (retrying cannot help).
"""

from kazoo.exceptions import (
    AuthFailedError,
    BadVersionError,
    KazooException,
    NoAuthError,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
    RolledBackError,
    RuntimeInconsistency,
)
from kazoo.handlers.threading import KazooTimeoutError

__all__ = [
    "REFUSALS",
    "UNKNOWN_OR_REFUSED",
    "ZK_ERRORS",
    "AccessRefused",
    "AuthFailedError",
    "BadVersionError",
    "NoAuthError",
    "NoNodeError",
    "NodeExistsError",
    "NotConnected",
    "NotEmptyError",
    "StepBudgetSpent",
    "ZkError",
    "first_failure",
]

# The root of every error the server or the connection reports.
ZkError = KazooException
ZK_ERRORS: tuple[type[Exception], ...] = (KazooException, KazooTimeoutError)
REFUSALS = (NoAuthError, AuthFailedError)


class StepBudgetSpent(KazooTimeoutError):
    """Raised before sending: the call was never made."""


class NotConnected(KazooTimeoutError):
    """No session now: not worth a request that would wait out its deadline."""


class AccessRefused(Exception):
    """ZooKeeper refused this identity (NoAuth, or its credentials). Deliberately not a
    KazooException: every handler of failed or unknown outcomes catches those, and a
    refusal is neither: retrying cannot help, an operator must fix credentials or ACLs."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(type(cause).__name__)
        self.cause = cause


# For the callers that give up on either: a report, a best-effort clean-up.
UNKNOWN_OR_REFUSED: tuple[type[Exception], ...] = (*ZK_ERRORS, AccessRefused)


def first_failure(results: list[object]) -> Exception | None:
    """The operation that made a transaction fail; the others only report the rollback."""
    failures = [item for item in results if isinstance(item, Exception)]
    causes = [item for item in failures
              if not isinstance(item, RolledBackError | RuntimeInconsistency)]
    if causes:
        return causes[0]
    return failures[0] if failures else None

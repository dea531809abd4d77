"""How the daemon's loop sleeps and is woken: an eventfd.

Both kazoo's threads and signal handlers must wake the loop. A threading.Event cannot be
set from a signal handler safely: the handler runs on the main thread, possibly while
that thread holds the Event's own lock inside wait() or clear(), and then deadlocks.
Writing to a non-blocking eventfd is safe from anywhere. The loop waits with poll, not
select, so it also works where file descriptors go past 1024 (a swarm of nodes in one
process).
"""

import contextlib
import math
import os
import select
import signal
from types import FrameType


class Waker:
    """How the loop sleeps and is woken: an eventfd, which a signal handler may write
    (a lock or a threading.Event could deadlock it there)."""
    def __init__(self) -> None:
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.poller = select.poll()
        self.poller.register(self.fd, select.POLLIN)

    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.eventfd_write(self.fd, 1)

    def wait(self, timeout: float) -> None:
        """Sleep until woken or `timeout` passes, and forget every pending wake-up."""
        if self.poller.poll(max(0, math.ceil(timeout * 1000))):
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(self.fd)

    def close(self) -> None:
        os.close(self.fd)


class SignalStop:
    """Until SIGINT or SIGTERM, for a command that waits between pieces of work (`status
    --watch`, the ZooKeeper exporter). The handler only records the signal and wakes the
    waker: raised as KeyboardInterrupt inside a kazoo call it could leave the client
    unable to close, and an Event set from it could deadlock on the Event's own lock."""

    def __init__(self) -> None:
        self.waker = Waker()
        self.received: list[int] = []
        self.previous = {signum: signal.signal(signum, self._on_signal)
                         for signum in (signal.SIGINT, signal.SIGTERM)}

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.received.append(signum)
        self.waker.wake()

    @property
    def stopped(self) -> bool:
        return bool(self.received)

    def wait(self, timeout: float) -> None:
        self.waker.wait(timeout)

    def close(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.waker.close()

    def __enter__(self) -> "SignalStop":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

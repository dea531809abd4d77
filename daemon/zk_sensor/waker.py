"""How the daemon's loop sleeps and is woken: a self-pipe.

Both kazoo's threads and signal handlers must wake the loop. A threading.Event cannot be
set from a signal handler safely: the handler runs on the main thread, possibly while
that thread holds the Event's own lock inside wait() or clear(), and then deadlocks.
Writing one byte to a non-blocking pipe is safe from anywhere.
"""

import contextlib
import os
import select


class Waker:
    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self.write_fd, False)

    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self.write_fd, b"\0")

    def wait(self, timeout: float) -> None:
        """Sleep until woken or `timeout` passes, and forget every pending wake-up."""
        readable, _, _ = select.select([self.read_fd], [], [], max(0.0, timeout))
        if readable:
            with contextlib.suppress(BlockingIOError):
                while os.read(self.read_fd, 4096):
                    pass

    def close(self) -> None:
        os.close(self.read_fd)
        os.close(self.write_fd)

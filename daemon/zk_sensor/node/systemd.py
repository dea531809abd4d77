"""systemd integration: READY, STATUS, STOPPING and the watchdog; silent outside systemd."""

import os
import time

from sdnotify import SystemdNotifier


class Systemd:
    """What the node tells systemd, with every message dropped when no systemd listens
    (NOTIFY_SOCKET unset): the loop calls it unconditionally, in a unit or in a test."""

    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self.notifier = SystemdNotifier() if self.enabled else None
        self.watchdog_interval = watchdog_interval(os.environ, os.getpid())
        self.last_fed = 0.0
        self.last_status = ""

    def _send(self, message: str) -> None:
        if self.notifier is not None:
            self.notifier.notify(message)

    def ready(self) -> None:
        self._send("READY=1")

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def status(self, text: str) -> None:
        if text != self.last_status:
            self.last_status = text
            self._send(f"STATUS={text}")

    @property
    def next_feed_due(self) -> float | None:
        """When the loop must next wake to feed the watchdog (monotonic), if there is one."""
        if self.watchdog_interval is None:
            return None
        return self.last_fed + self.watchdog_interval

    def feed_watchdog(self) -> None:
        """At most once per half watchdog period, as systemd recommends."""
        if self.watchdog_interval is None:
            return
        now = time.monotonic()
        if now - self.last_fed >= self.watchdog_interval:
            self.last_fed = now
            self._send("WATCHDOG=1")


def watchdog_interval(env: dict[str, str] | os._Environ[str], pid: int) -> float | None:
    """Half of WATCHDOG_USEC, or None when there is no watchdog meant for this process."""
    usec = env.get("WATCHDOG_USEC")
    if not usec or not env.get("NOTIFY_SOCKET"):
        return None
    owner = env.get("WATCHDOG_PID")
    if owner and owner != str(pid):
        return None
    try:
        return int(usec) / 2_000_000
    except ValueError:
        return None

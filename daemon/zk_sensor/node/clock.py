"""Whether this node's wall clock can be trusted yet.

A Raspberry Pi has no real-time clock: it boots with the time it last saved (or 1970)
and jumps when NTP synchronises it, possibly minutes after the daemon started. Rounds do
not care (the barrier paces them, the leader's schedule runs on the monotonic clock),
but a wall-clock time written before the jump is wrong by whatever the jump was. So a
node keeps publishing and marks every time it takes from an unsynchronised clock: its
readings' `taken_at` and, as leader, the round's `time` and the barrier's `released_at`.

The kernel knows: every NTP client (systemd-timesyncd, chrony, ntpd) keeps its
`maxerror` below 16 s while it disciplines the clock, and the kernel raises it to 16 s
at boot and whenever nobody has for hours. That is systemd's own test (`timedatectl`'s
"System clock synchronized"), read with adjtimex(2), which any user may call to read.
STA_UNSYNC is not used, as systemd does not use it: an NTP client may keep it set
while synchronised, to keep the kernel from writing the hardware clock. Where a sandbox
refuses adjtimex even for reading (systemd's ProtectClock=yes does), the flag file
systemd-timesyncd touches on each synchronisation is the fallback; it says nothing for
other NTP clients, so there the clock stays "not known to be synchronised".
"""

import ctypes
import logging
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("zk_sensor")

# NTP_PHASE_LIMIT in the kernel: the maximum error of a clock nobody disciplines.
UNSYNCED_MAXERROR_US = 16_000_000
TIMESYNCD_FLAG = Path("/run/systemd/timesync/synchronized")
ADJTIMEX = getattr(ctypes.CDLL(None, use_errno=True), "adjtimex", None)


class _Timeval(ctypes.Structure):
    """struct timeval, the `time` member of struct timex: declared only so that the
    fields after it sit where the kernel writes them."""

    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    """struct timex as glibc's `adjtimex` symbol takes it (longs, on 32-bit Pis too),
    with the kernel's trailing padding so nothing is written past it."""

    _fields_ = [
        ("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
        ("constant", ctypes.c_long), ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long), ("time", _Timeval), ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long), ("jitter", ctypes.c_long), ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long), ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long), ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int),
        ("padding", ctypes.c_int * 11),
    ]


def kernel_synchronized() -> bool | None:
    """The kernel's answer (modes 0: read only), or None where adjtimex is refused."""
    if ADJTIMEX is None:
        return None
    timex = _Timex()
    if ADJTIMEX(ctypes.byref(timex)) < 0:
        return None
    return bool(timex.maxerror < UNSYNCED_MAXERROR_US)


def clock_synchronized() -> bool:
    kernel = kernel_synchronized()
    return TIMESYNCD_FLAG.exists() if kernel is None else kernel


class Clock:
    """Asks at every use (one system call, a few microseconds) rather than caching, since
    synchronisation comes and, after hours without NTP, goes; logs each change once."""

    def __init__(self, detector: Callable[[], bool] = clock_synchronized) -> None:
        self.detector = detector
        self.known: bool | None = None

    def synced(self) -> bool:
        synced = self.detector()
        if synced != self.known:
            self.report(synced)
            self.known = synced
        return synced

    def report(self, synced: bool) -> None:
        if not synced:
            log.warning("the wall clock is not synchronised%s: readings and rounds are "
                        "published marked \"clock\": \"unsynced\" until it is",
                        "" if self.known is None else " any more")
        elif self.known is not None:
            log.info("the wall clock is synchronised now: readings and rounds carry trusted "
                     "times")

"""How much of the request threads one client may take.

cheroot serves each request on a worker thread that blocks on the client's socket, with a
timeout per read: a client trickling a byte every few seconds would hold its worker for
ever, and a handful of them every worker, `/healthz` included. The Guard bounds each
request in time (REQUEST_DEADLINE, whatever the client does) and each source address in
workers (at most `per_source` at once), so slow clients from one host cannot starve the
others, and slow clients from many hosts hold a worker for seconds, not for ever.
"""

import contextlib
import socket
import threading
import time
from collections import Counter

from cheroot.server import HTTPConnection

from zk_sensor.collector.auth import RefusalLog

# Seconds one request may hold a worker in all (handshake, headers, body, answer): a
# client trickling a byte every few seconds is cut off here, not at each silence.
REQUEST_DEADLINE = 10.0
# What a client over its share gets, without a byte of its request read.
BUSY_BODY = b'{"error":"too many requests in progress from this address"}'
BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        b"Retry-After: 1\r\nConnection: close\r\nContent-Length: "
        + str(len(BUSY_BODY)).encode() + b"\r\n\r\n" + BUSY_BODY)


class Guard:
    """Deadlines and shares of the workers; `watch` runs on a thread of its own."""

    def __init__(self, per_source: int, deadline: float = REQUEST_DEADLINE) -> None:
        self.per_source = per_source
        self.deadline = deadline
        self.lock = threading.Lock()
        self.busy: Counter[str] = Counter()
        self.ends: dict[HTTPConnection, float] = {}
        self.refusals = RefusalLog()
        self.stopping = threading.Event()
        # Set when a request starts with none in progress (the watcher had no deadline).
        self.arrived = threading.Event()
        self.watcher = threading.Thread(target=self.watch, name="request-deadline",
                                        daemon=True)

    def enter(self, conn: HTTPConnection) -> bool:
        source = str(conn.remote_addr or "?")
        with self.lock:
            if self.busy[source] >= self.per_source:
                crowded = True
            else:
                crowded = False
                self.busy[source] += 1
                idle = not self.ends
                self.ends[conn] = time.monotonic() + self.deadline
                if idle:
                    self.arrived.set()
        if crowded:
            self.refusals.note(source, f"503 to {source}: it already "
                               f"holds {self.per_source} request threads")
        return not crowded

    def leave(self, conn: HTTPConnection) -> None:
        source = str(conn.remote_addr or "?")
        with self.lock:
            self.ends.pop(conn, None)
            self.busy[source] -= 1
            if self.busy[source] <= 0:
                del self.busy[source]

    def watch(self) -> None:
        """Sleeps until the nearest deadline, or until a request arrives when none is in
        progress: an idle collector does not wake up."""
        while not self.stopping.is_set():
            self.arrived.clear()
            now = time.monotonic()
            with self.lock:
                late = [conn for conn, ends in self.ends.items() if ends <= now]
                for conn in late:
                    del self.ends[conn]
                nearest = min(self.ends.values(), default=None)
            for conn in late:
                self.cut(conn)
            self.arrived.wait(None if nearest is None else max(0.0, nearest - now))

    def stop(self) -> None:
        self.stopping.set()
        self.arrived.set()

    def cut(self, conn: HTTPConnection) -> None:
        """Shutting the socket down wakes the worker blocked on it (the base class's
        shutdown, also under TLS: the worker owns the TLS state, this only ends the TCP)."""
        self.refusals.note(str(conn.remote_addr or "?"), f"cut a request from "
                           f"{conn.remote_addr}: not done in {self.deadline:.0f} s")
        with contextlib.suppress(OSError):
            socket.socket.shutdown(conn.socket, socket.SHUT_RDWR)

"""Free TCP ports on loopback, for every server the tests, the demo and the benchmarks
start (ZooKeeper, the proxy, PostgreSQL, zk-collector on a fixed port) and for addresses
where nothing may listen."""

from __future__ import annotations

import socket
import threading

LOOPBACK = "127.0.0.1"

# Ports handed out by this process, so two servers never get the same one even
# though each probe socket is closed before the server binds the port.
_handed_out_ports: set[int] = set()
_ports_lock = threading.Lock()


def free_ports(count: int) -> list[int]:
    """Return `count` distinct free TCP ports on 127.0.0.1.

    The kernel picks each port (bind to port 0).  All probe sockets stay open
    until every port is chosen, so one call never returns duplicates, and a
    process-wide record keeps later calls from reusing a port already given to
    another server (e.g. a stopped one that will be restarted on it).
    """
    probes: list[socket.socket] = []
    ports: list[int] = []
    try:
        with _ports_lock:
            while len(ports) < count:
                probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                probes.append(probe)
                probe.bind((LOOPBACK, 0))
                port = probe.getsockname()[1]
                if port not in _handed_out_ports:
                    _handed_out_ports.add(port)
                    ports.append(port)
    finally:
        for probe in probes:
            probe.close()
    return ports


def free_port() -> int:
    """One free TCP port on 127.0.0.1 (see `free_ports`): nothing listens there now."""
    (port,) = free_ports(1)
    return port


__all__ = ["LOOPBACK", "free_port", "free_ports"]

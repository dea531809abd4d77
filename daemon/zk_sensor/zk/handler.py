"""The kazoo handler the daemon runs on: kazoo's threading handler, cheaper per round.

Two changes, both to how kazoo's connection thread hands work on, none to what it sends:

- It waits for its socket with one poll(2). kazoo (2.11) builds an epoll selector for
  every wait of its connection loop and closes it again: about thirteen a round on a
  follower (a turn of the loop, and two more for every message it reads), each an
  epoll_create1, epoll_ctl, epoll_wait and close plus a selector object's Python. poll(2)
  asks the same question about the same descriptors in one system call and, like epoll,
  has no limit on descriptor numbers (why kazoo left select(2)).
- The watch callbacks the node names (`run_inline`) run on the connection thread itself
  instead of being queued for kazoo's callback thread, which would only wake to pass them
  on: each of them only enqueues an event for the loop and wakes it, never blocks and
  never calls ZooKeeper (which, from that thread, would wait for itself). Watches of
  kazoo's own recipes (the config's DataWatch reads in its callback) still go the queued
  way, as do callbacks the node did not name.

Both handlers here also trust, over TLS, the fleet's CA alone: kazoo loads the system's
CAs beside the one it is given, so any public CA could vouch for a ZooKeeper server.
"""

import errno
import os
import select
import socket
import ssl
from collections.abc import Callable
from typing import Any

from kazoo.handlers.threading import SequentialThreadingHandler

READABLE = select.POLLIN | select.POLLPRI | select.POLLHUP | select.POLLERR
WRITABLE = select.POLLOUT | select.POLLERR


class FleetCaHandler(SequentialThreadingHandler):
    """kazoo's threading handler whose TLS connections trust only the CA they are given."""

    def create_connection(self, address: tuple[str, int], hostname: str | None = None,
                          timeout: float | None = None, use_ssl: bool = False,
                          ca: str | None = None, certfile: str | None = None,
                          keyfile: str | None = None, keyfile_password: str | None = None,
                          verify_certs: bool = True, check_hostname: bool = False,
                          **options: Any) -> socket.socket:
        if not use_ssl:
            plain: socket.socket = super().create_connection(
                address, hostname=hostname, timeout=timeout, **options)
            return plain
        if not ca or not verify_certs:
            raise ssl.SSLError("TLS to ZooKeeper needs a CA file and verified certificates")
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
        context.check_hostname = check_hostname
        if certfile and keyfile:
            context.load_cert_chain(certfile, keyfile, keyfile_password)
        return tls_connection(context, address, hostname, timeout)


def tls_connection(context: ssl.SSLContext, address: tuple[str, int], hostname: str | None,
                   timeout: float | None) -> socket.socket:
    """Connected and handshaken within `timeout`, with kazoo's socket options."""
    raw = socket.create_connection(address, timeout)
    try:
        conn = context.wrap_socket(raw, server_hostname=hostname)
    except BaseException:
        raw.close()
        raise
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    return conn


class PollingHandler(FleetCaHandler):
    """kazoo's threading handler, waiting with poll_select and running named watch
    callbacks inline."""

    def __init__(self) -> None:
        super().__init__()
        self.inline: set[Callable[..., Any]] = set()

    def run_inline(self, *callbacks: Callable[..., Any]) -> None:
        self.inline.update(callbacks)

    def select(self, *args: Any, **kwargs: Any) -> tuple[list[Any], list[Any], list[Any]]:
        return poll_select(*args, **kwargs)

    def dispatch_callback(self, callback: Any) -> None:
        if callback.type == "watch" and callback.func in self.inline:
            callback.func(*callback.args)
        else:
            super().dispatch_callback(callback)


def poll_select(rlist: list[Any], wlist: list[Any], _xlist: list[Any],
                timeout: float | None = None) -> tuple[list[Any], list[Any], list[Any]]:
    """select(2)'s contract: the objects of `rlist` that are readable and of `wlist` that
    are writable, within `timeout` seconds (None: no limit). A closed descriptor is an
    OSError, which kazoo takes for a dropped connection."""
    if timeout is not None and timeout < 0:
        raise ValueError("timeout must be non-negative")
    poller = select.poll()
    for fd, mask in wanted_events(rlist, wlist).items():
        poller.register(fd, mask)
    ready = dict(poller.poll(None if timeout is None else timeout * 1000.0))
    if any(events & select.POLLNVAL for events in ready.values()):
        raise OSError(errno.EBADF, os.strerror(errno.EBADF))
    return ready_lists(rlist, wlist, ready)


def wanted_events(rlist: list[Any], wlist: list[Any]) -> dict[int, int]:
    """poll(2)'s event mask per descriptor."""
    masks: dict[int, int] = {}
    for objects, mask in ((rlist, select.POLLIN), (wlist, select.POLLOUT)):
        for item in objects:
            fd = descriptor(item)
            masks[fd] = masks.get(fd, 0) | mask
    return masks


def ready_lists(rlist: list[Any], wlist: list[Any], ready: dict[int, int],
                ) -> tuple[list[Any], list[Any], list[Any]]:
    """poll(2)'s answer as select(2)'s: a hang-up or an error counts as readable, so the
    reader finds it."""
    def chosen(items: list[Any], wanted: int) -> list[Any]:
        return [item for item in items if ready.get(descriptor(item), 0) & wanted]

    return chosen(rlist, READABLE), chosen(wlist, WRITABLE), []


def descriptor(item: Any) -> int:
    fd = item if isinstance(item, int) else item.fileno()
    if fd < 0:
        raise OSError(errno.EBADF, os.strerror(errno.EBADF))
    return fd

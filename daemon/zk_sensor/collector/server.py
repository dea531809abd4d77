"""zk-collector's command line: settings, the store (SQLite, or PostgreSQL shared by several
collectors) and cheroot (CherryPy's production WSGI server, pure Python, so it runs the
same on a Pi as on a VM).

cheroot serves plain HTTP and, with `cert_file` and `key_file`, HTTPS only, through one
server path; waitress, used before, has no TLS at all.
"""

import contextlib
import logging
import os
import select
import signal
import socket
import ssl
import sys
import threading

from cheroot.server import HTTPConnection, HTTPRequest
from cheroot.ssl import Adapter
from cheroot.ssl.builtin import BuiltinSSLAdapter
from cheroot.wsgi import Server

from zk_sensor.collector.app import Collector
from zk_sensor.collector.auth import Gate
from zk_sensor.collector.backend import open_store
from zk_sensor.collector.guard import BUSY, Guard
from zk_sensor.collector.retention import Pruner, parse_retention
from zk_sensor.collector.settings import (
    TABLE,
    CollectorSettings,
    build_parser,
    build_settings,
    check_fence_files,
    describe_database,
    fleet_names,
    is_loopback,
    tls_context,
    write_credentials,
)
from zk_sensor.config.serving import split_listen
from zk_sensor.config.sources import SettingsError

__all__ = ["main"]
log = logging.getLogger("zk_collector")
# Seconds a connection may stay silent (a TLS handshake, a request, an idle keep-alive)
# before its worker thread gives it up.
CONNECTION_TIMEOUT = 10
# Request line and headers; the body's limit is the app's (parse.MAX_BODY).
MAX_HEADER_BYTES = 16 * 1024
# Seconds SIGTERM waits for requests in flight.
SHUTDOWN_TIMEOUT = 5


class LazyHandshake(BuiltinSSLAdapter):
    """Leaves the TLS handshake to the connection's worker thread.

    cheroot's own adapter shakes hands on its accept loop, so one client that connects
    and says nothing stalls every other connection for CONNECTION_TIMEOUT (cheroot issue
    748); here it holds one worker, as a silent plain-HTTP client does.
    """

    def __init__(self, context: ssl.SSLContext) -> None:
        # BuiltinSSLAdapter.__init__ would load the files again and shake hands with
        # itself over a socket pair to fill SSL_SERVER_* variables the app never reads.
        self.context = context

    def wrap(self, sock: socket.socket) -> tuple[ssl.SSLSocket, dict[str, str]]:
        wrapped = self.context.wrap_socket(sock, server_side=True,
                                           do_handshake_on_connect=False)
        return wrapped, {"wsgi.url_scheme": "https", "HTTPS": "on"}


class Request(HTTPRequest):
    """cheroot's request, closing the connection after an early answer."""
    def send_headers(self) -> None:
        """An answer given before the body was read (a refusal, a bad length) closes the
        connection: cheroot would otherwise first drain a body that may never come."""
        if getattr(self.rfile, "remaining", 0) != 0:
            self.close_connection = True
        super().send_headers()


class Connection(HTTPConnection):
    """Finishes a TLS handshake, in its worker thread, before the first request; each
    request within the server's Guard.

    cheroot hands a new connection to a worker at once, so a client that connects and
    says nothing would hold a worker until CONNECTION_TIMEOUT: such a connection is
    parked in cheroot's selector instead (as an idle keep-alive is) and comes back to a
    worker once it sends something, or is closed when it has been silent too long.
    """

    RequestHandlerClass = Request
    server: "CollectorServer"
    handshaken = False
    parked = False

    def communicate(self) -> bool:
        if not self.parked and not self.has_bytes():
            self.parked = True
            return True
        self.parked = True
        guard = self.server.guard
        if not guard.enter(self):
            self.answer_busy()
            return False
        try:
            return self.guarded_communicate()
        finally:
            guard.leave(self)

    def answer_busy(self) -> None:
        """A 503 the client retries after a second, rather than a bare close that an
        HTTP client takes for a stale keep-alive and resends at once. Plain HTTP only:
        before its handshake a TLS client can only be closed on."""
        if not isinstance(self.socket, ssl.SSLSocket):
            with contextlib.suppress(OSError):
                self.socket.send(BUSY)

    def has_bytes(self) -> bool:
        readable, _, _ = select.select([self.socket], [], [], 0)
        return bool(readable)

    def guarded_communicate(self) -> bool:
        if isinstance(self.socket, ssl.SSLSocket) and not self.handshaken:
            try:
                self.socket.do_handshake()
            except OSError as error:
                # Closing, not answering 400 to plain HTTP: a daemon pointed at http://
                # by mistake must retry its round, and it would drop one refused 400.
                log.warning("TLS handshake with %s failed: %s", self.remote_addr,
                            " ".join(str(error).split()) or type(error).__name__)
                return False
            self.handshaken = True
        # cheroot's stub leaves communicate() unannotated; it returns whether to go on.
        going_on: bool = super().communicate()  # type: ignore[no-untyped-call]
        return going_on


class CollectorServer(Server):
    """cheroot's server with the guard that limits what one client may hold, and its
    log lines in the journal's format."""
    ConnectionClass = Connection
    guard: Guard

    def error_log(self, msg: str = "", level: int = logging.INFO,
                  traceback: bool = False) -> None:
        """cheroot writes its complaints to stderr raw; the journal wants our format."""
        log.log(level, "%s", msg, exc_info=traceback)

    @classmethod
    def prepare_socket(cls, bind_addr: tuple[str, int] | str | bytes, family: int,
                       type: int, proto: int, nodelay: bool, ssl_adapter: Adapter | None,
                       reuse_port: bool = False) -> socket.socket:
        """SO_REUSEADDR on port 0 too (cheroot sets it only for a fixed port): the
        accepted connections inherit it, and a restart on the port the collector had must
        not fail while an old connection lingers in FIN_WAIT2 (a client's keep-alive end
        not yet closed), as when a collector started on port 0 is brought back."""
        sock: socket.socket = super().prepare_socket(bind_addr, family, type, proto,
                                                     nodelay, ssl_adapter, reuse_port)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        return sock


def build_server(app: Collector, host: str, port: int, threads: int,
                 tls: ssl.SSLContext | None) -> CollectorServer:
    server = CollectorServer((host, port), app, numthreads=threads, max=threads,
                             # cheroot's default backlog of 5 refuses a burst of clients
                             request_queue_size=socket.SOMAXCONN,
                             timeout=CONNECTION_TIMEOUT, shutdown_timeout=SHUTDOWN_TIMEOUT)
    server.max_request_header_size = MAX_HEADER_BYTES
    server.guard = Guard(per_source=max(2, threads // 2))
    if tls is not None:
        server.ssl_adapter = LazyHandshake(tls)
    return server


def build_app(settings: CollectorSettings, host: str) -> tuple[Collector, str]:
    """The WSGI app with its write rules, and how the start line describes them."""
    credentials = write_credentials(settings, host)
    seed_get = settings.seed_get_writes
    fleets = fleet_names(settings)
    check_fence_files(settings)
    gate = Gate(credentials, loopback_open=not credentials and is_loopback(host),
                seed_get_writes=seed_get)
    fence = None
    if settings.fence_zookeeper:
        from zk_sensor.collector.fence import ZkFence
        fence = ZkFence.connect(settings)
    writes = (f"need a bearer token ({', '.join(sorted(credentials))})" if credentials
              else "open" if is_loopback(host) else "open to anyone (insecure_open_writes)")
    if seed_get:
        writes += "; anonymous keyless GET /nuevo accepted"
    if fence is not None:
        writes += f"; fenced against ZooKeeper {settings.fence_zookeeper}"
    return Collector(open_store(settings.database, settings.db), gate=gate, fleets=fleets,
                     fence=fence), writes


def serve_until(server: CollectorServer, stopping: threading.Event) -> None:
    """cheroot serves on a thread of its own and SIGTERM only sets `stopping`: raised
    as an exception at whatever cheroot was doing, it could leave a worker without its
    shutdown request, and the stop waiting for it for ever."""
    serving = threading.Thread(target=server.serve, name="serve", daemon=True)
    serving.start()
    while serving.is_alive() and not stopping.wait(0.5):
        pass


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = build_settings(TABLE.from_args(args), os.environ, args.config)
        host, port = split_listen(settings.listen)
        tls = tls_context(settings)
        retention = parse_retention(settings.retention)
        database = describe_database(settings)
        if settings.threads < 1:
            raise SettingsError(f"threads {settings.threads} must be at least 1")
        app, writes = build_app(settings, host)
    except SettingsError as error:
        print(f"zk-collector: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)-7s zk-collector: %(message)s")
    pruner = Pruner(app.store, retention).start() if retention is not None else None
    server = build_server(app, host, port, settings.threads, tls)

    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stopping.set())
    try:
        server.prepare()
        server.guard.watcher.start()
        bound_host, bound_port = server.bind_addr
        log.info("serving on %s://%s:%s/ (database %s, writes %s)",
                 "https" if tls else "http", f"[{bound_host}]" if ":" in bound_host
                 else bound_host, bound_port, database, writes)
        serve_until(server, stopping)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        server.guard.stop()
        if pruner is not None:
            pruner.stop()
        if app.fence is not None:
            app.fence.close()
        app.store.close()
        log.info("stopped")
    return 0

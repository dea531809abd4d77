"""zk-collector's command line: settings, the store (SQLite, or PostgreSQL shared by several
collectors) and cheroot (CherryPy's production WSGI server, pure Python, so it runs the
same on a Pi as on a VM).

cheroot serves plain HTTP and, with `cert_file` and `key_file`, HTTPS only, through one
server path; waitress, used before, has no TLS at all.
"""

import argparse
import logging
import os
import signal
import socket
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from cheroot.server import HTTPConnection
from cheroot.ssl.builtin import BuiltinSSLAdapter
from cheroot.wsgi import Server

from ..sources import SettingsError, layered
from .app import Collector
from .backend import open_store
from .retention import Pruner, parse_retention

ENV_PREFIX = "ZK_COLLECTOR_"
log = logging.getLogger("zk_collector")
# Seconds a connection may stay silent (a TLS handshake, a request, an idle keep-alive)
# before its worker thread gives it up.
CONNECTION_TIMEOUT = 10
# Seconds SIGTERM waits for requests in flight.
SHUTDOWN_TIMEOUT = 5


@dataclass(frozen=True)
class CollectorSettings:
    listen: str = "127.0.0.1:8080"
    db: str = "zk-collector.sqlite3"
    database: str = ""
    token: str = ""
    token_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    threads: int = 4
    log_level: str = "info"
    retention: str = "365d"


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        raise SettingsError(f"listen {listen!r} must be HOST:PORT") from None
    if not host or not 0 <= number <= 65535:
        raise SettingsError(f"listen {listen!r} must be HOST:PORT")
    return host.strip("[]"), number


def read_token(settings: CollectorSettings) -> str | None:
    """A token file keeps the secret out of `ps` and out of the unit file."""
    if settings.token_file:
        try:
            token = Path(settings.token_file).read_text().strip()
        except OSError as error:
            raise SettingsError(f"cannot read token_file: {error}") from None
        if not token:
            raise SettingsError(f"token_file {settings.token_file} is empty")
        return token
    return settings.token or None


def describe_database(settings: CollectorSettings) -> str:
    """For the start line; a PostgreSQL URI checked first, so that a malformed one stops
    the collector with one line (its driver is imported only then)."""
    if not settings.database:
        return settings.db
    from .postgres import check_url
    try:
        return check_url(settings.database)
    except ValueError as error:
        raise SettingsError(str(error)) from None


def tls_context(settings: CollectorSettings) -> ssl.SSLContext | None:
    """Loaded before binding, so a missing, unreadable or mismatched file stops the
    collector with one line at start instead of failing every handshake later."""
    if bool(settings.cert_file) != bool(settings.key_file):
        raise SettingsError("cert_file and key_file go together: set both or neither")
    if not settings.cert_file:
        return None
    for name in ("cert_file", "key_file"):
        path = getattr(settings, name)
        try:
            Path(path).read_bytes()
        except OSError as error:
            raise SettingsError(f"cannot read {name} {path}: {error.strerror}") from None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(settings.cert_file, settings.key_file)
    except (OSError, ValueError) as error:
        raise SettingsError(f"cert_file {settings.cert_file} and key_file {settings.key_file} "
                            f"are not a PEM certificate and its key: {error}") from None
    return context


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


class Connection(HTTPConnection):
    """Finishes a TLS handshake, in its worker thread, before the first request."""

    handshaken = False

    def communicate(self) -> bool:
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
        return super().communicate()


class CollectorServer(Server):
    ConnectionClass = Connection

    def error_log(self, msg: str = "", level: int = logging.INFO,
                  traceback: bool = False) -> None:
        """cheroot writes its complaints to stderr raw; the journal wants our format."""
        log.log(level, "%s", msg, exc_info=traceback)

    @classmethod
    def prepare_socket(cls, bind_addr: Any, family: int, type: int, proto: int,
                       nodelay: bool, ssl_adapter: Any,
                       reuse_port: bool = False) -> socket.socket:
        """SO_REUSEADDR on port 0 too (cheroot sets it only for a fixed port): the
        accepted connections inherit it, and a restart on the port the collector had must
        not fail while an old connection lingers in FIN_WAIT2 (a client's keep-alive end
        not yet closed), as when a collector started on port 0 is brought back."""
        sock = super().prepare_socket(bind_addr, family, type, proto, nodelay, ssl_adapter,
                                      reuse_port)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        return sock


def build_server(app: Collector, host: str, port: int, threads: int,
                 tls: ssl.SSLContext | None) -> CollectorServer:
    server = CollectorServer((host, port), app, numthreads=threads, max=threads,
                             # cheroot's default backlog of 5 refuses a burst of clients
                             request_queue_size=socket.SOMAXCONN,
                             timeout=CONNECTION_TIMEOUT, shutdown_timeout=SHUTDOWN_TIMEOUT)
    if tls is not None:
        server.ssl_adapter = LazyHandshake(tls)
    return server


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="zk-collector", description="Receives, keeps and shows the fleet's aggregates.")
    parser.add_argument("--config", help="TOML file of settings (also ZK_COLLECTOR_CONFIG)")
    parser.add_argument("--listen", help="HOST:PORT (default 127.0.0.1:8080)")
    parser.add_argument("--db", help="SQLite file (default ./zk-collector.sqlite3)")
    parser.add_argument("--database",
                        help="PostgreSQL URI (postgresql://user@host/dbname?passfile=FILE), "
                             "shared with other collectors; replaces --db")
    parser.add_argument("--token-file", dest="token_file",
                        help="file holding the bearer token that writes must carry")
    parser.add_argument("--cert-file", dest="cert_file",
                        help="TLS certificate (PEM, chain after it): serve HTTPS only")
    parser.add_argument("--key-file", dest="key_file",
                        help="the key of cert_file (PEM, mode 0600)")
    parser.add_argument("--threads", type=int, help="request threads (default 4)")
    parser.add_argument("--log-level", dest="log_level",
                        choices=("debug", "info", "warning", "error"))
    parser.add_argument("--retention",
                        help="how long rounds are kept: 365d, 12h, 30m, seconds, or forever "
                             "(default 365d)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cli = {key: value for key, value in vars(args).items() if key != "config"}
    try:
        settings = layered(CollectorSettings, ENV_PREFIX, cli, os.environ, args.config)
        host, port = split_listen(settings.listen)
        token = read_token(settings)
        tls = tls_context(settings)
        retention = parse_retention(settings.retention)
        database = describe_database(settings)
    except SettingsError as error:
        print(f"zk-collector: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)-7s zk-collector: %(message)s")
    store = open_store(settings.database, settings.db)
    pruner = Pruner(store, retention).start() if retention is not None else None
    server = build_server(Collector(store, token), host, port, settings.threads, tls)

    def stop(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        server.prepare()
        bound_host, bound_port = server.bind_addr
        log.info("serving on %s://%s:%s/ (database %s, writes %s)",
                 "https" if tls else "http", f"[{bound_host}]" if ":" in bound_host
                 else bound_host, bound_port, database,
                 "need a bearer token" if token else "open")
        server.serve()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.stop()
        if pruner is not None:
            pruner.stop()
        store.close()
        log.info("stopped")
    return 0

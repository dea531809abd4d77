"""zk-collector's command line: settings, the SQLite store and waitress (a production
WSGI server, pure Python, so it runs the same on a Pi as on a VM)."""

import argparse
import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from waitress.server import create_server

from ..sources import SettingsError, layered
from .app import Collector
from .store import Store

ENV_PREFIX = "ZK_COLLECTOR_"
log = logging.getLogger("zk_collector")


@dataclass(frozen=True)
class CollectorSettings:
    listen: str = "127.0.0.1:8080"
    db: str = "zk-collector.sqlite3"
    token: str = ""
    token_file: str = ""
    threads: int = 4
    log_level: str = "info"


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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="zk-collector", description="Receives, keeps and shows the fleet's aggregates.")
    parser.add_argument("--config", help="TOML file of settings (also ZK_COLLECTOR_CONFIG)")
    parser.add_argument("--listen", help="HOST:PORT (default 127.0.0.1:8080)")
    parser.add_argument("--db", help="SQLite file (default ./zk-collector.sqlite3)")
    parser.add_argument("--token-file", dest="token_file",
                        help="file holding the bearer token that writes must carry")
    parser.add_argument("--threads", type=int, help="request threads (default 4)")
    parser.add_argument("--log-level", dest="log_level",
                        choices=("debug", "info", "warning", "error"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cli = {key: value for key, value in vars(args).items() if key != "config"}
    try:
        settings = layered(CollectorSettings, ENV_PREFIX, cli, os.environ, args.config)
        host, port = split_listen(settings.listen)
        token = read_token(settings)
    except SettingsError as error:
        print(f"zk-collector: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)-7s zk-collector: %(message)s")
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    store = Store(Path(settings.db))
    server = create_server(Collector(store, token), host=host, port=port,
                           threads=settings.threads, ident="zk-collector")

    def stop(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    log.info("serving on http://%s:%s/ (database %s, writes %s)", host, server.effective_port,
             settings.db, "need a bearer token" if token else "open")
    try:
        server.run()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.close()
        store.close()
        log.info("stopped")
    return 0

"""zk-collector's settings: each a TOML key, a `--flag` and a ZK_COLLECTOR_ variable, all
checked before the collector listens, so a bad one stops it with one line (exit 2).

Writes are closed by default: with no credential (`token`, `token_file`, `tokens_file`)
the collector listens only on loopback, unless `insecure_open_writes` says otherwise.
"""

import argparse
import ipaddress
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zk_sensor.collector.auth import read_credentials
from zk_sensor.config.secrets import check_private, check_readable
from zk_sensor.config.sources import SettingsError, layered
from zk_sensor.config.table import Table, setting


@dataclass(frozen=True)
class CollectorSettings:
    """zk-collector's settings, each declared once (config/table.py): its TOML key,
    `ZK_COLLECTOR_` variable and flag come from the field."""
    listen: str = setting("127.0.0.1:8080", "HOST:PORT to serve on")
    db: str = setting("zk-collector.sqlite3", "SQLite file of the rounds")
    database: str = setting("", "PostgreSQL URI (postgresql://user@host/dbname?passfile=FILE), "
                                "shared with other collectors; replaces db")
    token: str = setting("", "bearer token that writes must carry", secret=True)
    token_file: str = setting("", "file (mode 0600) holding the bearer token that writes "
                                  "must carry")
    tokens_file: str = setting("", "file (mode 0600) of lines NAME TOKEN: one credential "
                                   "per node")
    insecure_open_writes: bool = setting(False, "accept writes without a token on a "
                                                "non-loopback address")
    seed_get_writes: bool = setting(False, "accept the seed's anonymous GET /nuevo?dato= "
                                           "writes (keyless only)")
    fleets: str = setting("", "comma-separated fleets (namespaces) whose rounds are accepted",
                          shown_default="any")
    fence_zookeeper: str = setting("", "ZooKeeper connection string: check each keyed round "
                                       "against the fleet's epoch and barrier (read-only)",
                                   shown_default="none, no fence")
    fence_zk_ca_file: str = setting("", "CA certificate (PEM) of the fence's ZooKeeper: "
                                        "turns on TLS to it")
    fence_zk_cert_file: str = setting("", "TLS client certificate (PEM) for the fence's "
                                          "ZooKeeper")
    fence_zk_key_file: str = setting("", "the key of fence_zk_cert_file (PEM, mode 0600)")
    cert_file: str = setting("", "TLS certificate (PEM, chain after it): serve HTTPS only")
    key_file: str = setting("", "the key of cert_file (PEM, mode 0600)")
    threads: int = setting(16, "request threads")
    log_level: str = setting("info", "what to log", choices=("debug", "info", "warning",
                                                              "error"))
    retention: str = setting("365d", "how long rounds are kept: 365d, 12h, 30m, seconds, or "
                                     "forever")


TABLE = Table(CollectorSettings, "ZK_COLLECTOR_")


def is_loopback(host: str) -> bool:
    """Only an address that is loopback for certain: a host name may resolve anywhere."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def write_credentials(settings: CollectorSettings, host: str) -> dict[str, str]:
    """The credentials by name; none only where that is safe or was asked for."""
    credentials = read_credentials(settings.token, settings.token_file, settings.tokens_file)
    if not credentials and not is_loopback(host) and not settings.insecure_open_writes:
        raise SettingsError(
            f"refusing to listen on {host} with open writes: set token_file or tokens_file "
            "(or insecure_open_writes = true to accept writes from anyone)")
    return credentials


def fleet_names(settings: CollectorSettings) -> frozenset[str]:
    names = frozenset(name.strip() for name in settings.fleets.split(",") if name.strip())
    if settings.fence_zookeeper and not names:
        raise SettingsError("fence_zookeeper needs fleets: the fleets (ZooKeeper namespaces, "
                            "e.g. /zk-sensor) whose rounds it checks")
    if any(not name.startswith("/") for name in names):
        raise SettingsError(f"fleets {settings.fleets!r}: each is a namespace such as /zk-sensor")
    return names


def check_fence_files(settings: CollectorSettings) -> None:
    if settings.fence_zk_ca_file:
        check_readable(settings.fence_zk_ca_file, "fence_zk_ca_file")
    if settings.fence_zk_cert_file:
        check_readable(settings.fence_zk_cert_file, "fence_zk_cert_file")
    if settings.fence_zk_key_file:
        check_private(Path(settings.fence_zk_key_file), "fence_zk_key_file")
    if bool(settings.fence_zk_cert_file) != bool(settings.fence_zk_key_file):
        raise SettingsError("fence_zk_cert_file and fence_zk_key_file go together")


def describe_database(settings: CollectorSettings) -> str:
    """For the start line; a PostgreSQL URI checked first, so that a malformed one stops
    the collector with one line (its driver is imported only then)."""
    if not settings.database:
        return settings.db
    from zk_sensor.collector.postgres import check_url
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


def build_parser() -> argparse.ArgumentParser:
    return TABLE.parser("zk-collector", "Receives, keeps and shows the fleet's aggregates.")


def build_settings(cli: Mapping[str, Any], env: Mapping[str, str],
                   config_file: str | None) -> CollectorSettings:
    return layered(TABLE, cli, env, config_file).settings

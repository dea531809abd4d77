"""zk-collector's settings: each a TOML key, a `--flag` and a ZK_COLLECTOR_ variable, all
checked before the collector listens, so a bad one stops it with one line (exit 2).

Writes are closed by default: with no credential (`token`, `token_file`, `tokens_file`)
the collector listens only on loopback, unless `insecure_open_writes` says otherwise.
"""

import argparse
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from zk_sensor.collector.auth import read_credentials
from zk_sensor.config.secrets import check_private, check_readable
from zk_sensor.config.sources import SettingsError

ENV_PREFIX = "ZK_COLLECTOR_"


@dataclass(frozen=True)
class CollectorSettings:
    listen: str = "127.0.0.1:8080"
    db: str = "zk-collector.sqlite3"
    database: str = ""
    token: str = ""
    token_file: str = ""
    tokens_file: str = ""
    insecure_open_writes: bool = False
    seed_get_writes: bool = False
    fleets: str = ""
    fence_zookeeper: str = ""
    fence_zk_ca_file: str = ""
    fence_zk_cert_file: str = ""
    fence_zk_key_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    threads: int = 16
    log_level: str = "info"
    retention: str = "365d"


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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="zk-collector", description="Receives, keeps and shows the fleet's aggregates.")
    add = parser.add_argument
    add("--config", help="TOML file of settings (also ZK_COLLECTOR_CONFIG)")
    add("--listen", help="HOST:PORT (default 127.0.0.1:8080)")
    add("--db", help="SQLite file (default ./zk-collector.sqlite3)")
    add("--database", help="PostgreSQL URI (postgresql://user@host/dbname?passfile=FILE), "
                           "shared with other collectors; replaces --db")
    add("--token-file", dest="token_file",
        help="file (mode 0600) holding the bearer token that writes must carry")
    add("--tokens-file", dest="tokens_file",
        help="file (mode 0600) of lines NAME TOKEN: one credential per node")
    add("--insecure-open-writes", dest="insecure_open_writes", action="store_const",
        const=True, help="accept writes without a token on a non-loopback address")
    add("--seed-get-writes", dest="seed_get_writes", action="store_const", const=True,
        help="accept the seed's anonymous GET /nuevo?dato= writes (keyless only)")
    add("--fleets", help="comma-separated fleets (namespaces) whose rounds are accepted")
    add("--fence-zookeeper", dest="fence_zookeeper",
        help="ZooKeeper connection string: check each keyed round against the fleet's "
             "epoch and barrier (read-only)")
    add("--fence-zk-ca-file", dest="fence_zk_ca_file", help="CA (PEM): TLS to ZooKeeper")
    add("--fence-zk-cert-file", dest="fence_zk_cert_file", help="TLS client certificate")
    add("--fence-zk-key-file", dest="fence_zk_key_file", help="its key (PEM, mode 0600)")
    add("--cert-file", dest="cert_file",
        help="TLS certificate (PEM, chain after it): serve HTTPS only")
    add("--key-file", dest="key_file", help="the key of cert_file (PEM, mode 0600)")
    add("--threads", type=int, help="request threads (default 16)")
    add("--log-level", dest="log_level", choices=("debug", "info", "warning", "error"))
    add("--retention", help="how long rounds are kept: 365d, 12h, 30m, seconds, or forever "
                            "(default 365d)")
    return parser.parse_args(argv)

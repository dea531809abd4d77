"""The ZooKeeper servers' own metrics for Prometheus, read from each server's `mntr`.

ZooKeeper has a Prometheus metrics provider, but in a jar of its own that Debian's
`zookeeper` package (3.8) does not ship, nor the Prometheus Java client it needs. Every
server answers the four-letter word `mntr` with its metrics, on its client port, over
TLS where that port is secure. So this exporter asks each server at every scrape and
answers in Prometheus's text format: one process beside Prometheus's other targets, no
Java agent, no new port on the servers.

Each `zk_NAME VALUE` line becomes `zookeeper_NAME{server="HOST:PORT"}` (untyped: mntr
does not say which are counters); `zk_server_state` becomes
`zookeeper_server_state{server, state}` = 1 and `zk_version` `zookeeper_info{server,
version}`; `zookeeper_up{server}` is 0 for a server that did not answer within the
deadline, whose other metrics are then absent.
"""

import argparse
import logging
import re
import socket
import ssl
import sys
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric, UnknownMetricFamily
from prometheus_client.registry import Collector

from zk_sensor.config.serving import split_listen
from zk_sensor.config.sources import SettingsError
from zk_sensor.ctl.cli import CONNECTION_SETTINGS, connection_settings, node_settings
from zk_sensor.node.settings import TABLE
from zk_sensor.waker import SignalStop
from zk_sensor.zk.access import ZkAccess, zk_access

log = logging.getLogger("zk_sensor")

# Seconds a server has to answer `mntr`; a scrape asks every server in turn.
DEADLINE = 2.0
DEFAULT_LISTEN = "127.0.0.1:9141"
MAX_REPLY = 1 << 20
# The main thread only waits for a signal; the waker wakes it at once.
IDLE_WAIT = 3600.0
# The mntr lines kept: a name Prometheus accepts once `zk_` becomes `zookeeper_`.
METRIC_NAME = re.compile(r"zk_[a-z0-9_]+")


def split_hosts(hosts: str) -> list[tuple[str, int]]:
    """The servers of a connection string (`h1:2281,h2:2281/chroot`)."""
    servers = []
    for part in hosts.split("/", 1)[0].split(","):
        host, _, port = part.strip().rpartition(":")
        if not host or not port.isdigit():
            raise SettingsError(f"zookeeper {hosts!r} must be HOST:PORT[,HOST:PORT...]")
        servers.append((host.strip("[]"), int(port)))
    return servers


def tls_context(access: ZkAccess) -> ssl.SSLContext | None:
    """The same trust as the fleet's clients: the CA, the client certificate, and the
    server's certificate checked against the host name."""
    if not access.tls:
        return None
    context = ssl.create_default_context(cafile=access.ca_file)
    if access.cert_file:
        context.load_cert_chain(access.cert_file, access.key_file or None)
    return context


def ask(server: tuple[str, int], word: str, context: ssl.SSLContext | None) -> str:
    """A four-letter word's reply: the server closes the connection when it is done."""
    with socket.create_connection(server, timeout=DEADLINE) as raw:
        sock = context.wrap_socket(raw, server_hostname=server[0]) if context else raw
        with sock:
            sock.sendall(word.encode())
            reply = bytearray()
            while len(reply) < MAX_REPLY and (chunk := sock.recv(65536)):
                reply += chunk
    return reply.decode(errors="replace")


def parse_mntr(reply: str) -> dict[str, str]:
    """`zk_NAME<TAB>VALUE` lines; anything else (a refusal: `mntr is not executed because
    it is not in the whitelist.`) raises ValueError."""
    found = {}
    for line in reply.splitlines():
        name, tab, value = line.partition("\t")
        if tab and METRIC_NAME.fullmatch(name):
            found[name[3:]] = value.strip()
    if "server_state" not in found:
        raise ValueError(" ".join(reply.split())[:200] or "an empty reply")
    return found


# One family per mntr key, made at the first server that reports it.
Families = dict[str, GaugeMetricFamily | UnknownMetricFamily]


def add_sample(families: Families, server: str, key: str, value: str) -> None:
    """One mntr line of one server into its family (made at its first server)."""
    if key == "server_state":
        family = families.setdefault(key, GaugeMetricFamily(
            "zookeeper_server_state", "The server's role: leader, follower, standalone...",
            labels=["server", "state"]))
        family.add_metric([server, value], 1)
        return
    if key == "version":
        family = families.setdefault(key, GaugeMetricFamily(
            "zookeeper_info", "The server's version.", labels=["server", "version"]))
        family.add_metric([server, value], 1)
        return
    try:
        number = float(value)
    except ValueError:
        return
    family = families.setdefault(key, UnknownMetricFamily(
        f"zookeeper_{key}", f"mntr's zk_{key}.", labels=["server"]))
    family.add_metric([server], number)


class MntrCollector(Collector):
    """Asks every server at each scrape: what Prometheus gets is never older than it."""

    def __init__(self, servers: list[tuple[str, int]], context: ssl.SSLContext | None) -> None:
        self.servers = servers
        self.context = context
        self.failing: set[str] = set()

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("zookeeper_up", "1 if the server answered mntr.",
                               labels=["server"])
        families: Families = {}
        for server in self.servers:
            name = f"{server[0]}:{server[1]}"
            metrics = self.read(server, name)
            up.add_metric([name], 0 if metrics is None else 1)
            for key, value in (metrics or {}).items():
                add_sample(families, name, key, value)
        yield up
        yield from families.values()

    def read(self, server: tuple[str, int], name: str) -> dict[str, str] | None:
        """The server's metrics, or None; logs when a server stops or starts answering."""
        try:
            metrics = parse_mntr(ask(server, "mntr", self.context))
        except (OSError, ValueError) as error:
            if name not in self.failing:
                log.warning("ZooKeeper %s: no metrics (%s)", name,
                            " ".join(str(error).split()) or type(error).__name__)
                self.failing.add(name)
            return None
        if name in self.failing:
            log.info("ZooKeeper %s answers again", name)
            self.failing.discard(name)
        return metrics


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zk-sensor-zookeeper-exporter",
        description="Serves the ZooKeeper servers' own metrics (mntr) to Prometheus. The "
        "servers and TLS files come, as for a node, from its TOML file (--config), then "
        "ZK_SENSOR_<NAME> environment variables, then the flags; zookeeper names the client "
        "ports, the secure ones with TLS.")
    parser.add_argument("-c", "--config", help="a node's or zk-sensorctl's TOML file: the "
                                               "servers and TLS files (also ZK_SENSOR_CONFIG; "
                                               "default: none)")
    TABLE.add_arguments(parser, [name for name in CONNECTION_SETTINGS if name != "namespace"])
    parser.add_argument("--listen", default=DEFAULT_LISTEN,
                        help=f"HOST:PORT of /metrics (default: {DEFAULT_LISTEN})")
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Settings as zk-sensorctl reads them (flags, ZK_SENSOR_*, -c FILE); mntr needs no
    ZooKeeper credentials, only the TLS files where the port is secure."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)-7s zk-sensor-zookeeper-exporter: "
                               "%(message)s")
    try:
        chosen = connection_settings(node_settings(args))
        servers = split_hosts(chosen["zookeeper"])
        context = tls_context(zk_access("", chosen["zk_ca_file"], chosen["zk_cert_file"],
                                        chosen["zk_key_file"]))
        host, port = split_listen(args.listen)
        registry = CollectorRegistry()
        registry.register(MntrCollector(servers, context))
        server, _ = start_http_server(port, host, registry)
    except (SettingsError, ssl.SSLError, OSError) as error:
        print(f"zk-sensor-zookeeper-exporter: {error}", file=sys.stderr)
        return 2
    log.info("serving the metrics of %d ZooKeeper server(s)%s on http://%s:%d/metrics",
             len(servers), " over TLS" if context else "", host, server.server_port)
    with SignalStop() as stop:
        while not stop.stopped:
            stop.wait(IDLE_WAIT)
    server.shutdown()
    log.info("stopped")
    return 0

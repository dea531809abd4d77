"""The daemon's local settings: defaults, then a TOML file, then ZK_SENSOR_* variables,
then the command line. Fleet-wide values (period, collector URL) live in ZooKeeper;
the local ones here are only the start-up defaults until ZooKeeper says otherwise.
"""

import argparse
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .sources import SettingsError, layered
from .validation import InvalidValue, parse_api_url, parse_node_id, parse_sampling_period

ENV_PREFIX = "ZK_SENSOR_"
SENSOR_DRIVERS = ("simulated", "mcp3008", "loadavg", "disk")


@dataclass(frozen=True)
class Settings:
    node_id: str = ""
    zookeeper: str = "127.0.0.1:2181"
    namespace: str = "/zk-sensor"
    sampling_period: float = 5.0
    api_url: str = "http://127.0.0.1:8080/nuevo"
    sensor: str = "simulated"
    sensor_channel: int = 0
    sensor_scale: float = 1.0
    sensor_offset: float = 0.0
    pin_factory: str = "lgpio"
    disk_path: str = "/"
    session_timeout: float = 10.0
    zk_deadline: float = 2.0
    http_timeout: float = 3.0
    api_token: str = ""
    outbox_limit: int = 1000
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 0
    offline_grace: float = 120.0
    log_level: str = "info"


FILE_ALIASES = {"id": "node_id"}


def _check(settings: Settings) -> Settings:
    try:
        node_id = parse_node_id(settings.node_id)
        parse_sampling_period(str(settings.sampling_period))
        parse_api_url(settings.api_url)
    except InvalidValue as error:
        raise SettingsError(str(error)) from None
    if settings.sensor not in SENSOR_DRIVERS:
        raise SettingsError(f"sensor {settings.sensor!r} is not one of {', '.join(SENSOR_DRIVERS)}")
    if not settings.namespace.startswith("/") or settings.namespace.endswith("/"):
        raise SettingsError(
            f"namespace {settings.namespace!r} must start with '/' and not end with it"
        )
    if not 1.0 <= settings.session_timeout <= 60.0:
        raise SettingsError(f"session_timeout {settings.session_timeout:g} s is outside 1..60 s")
    if not 0 < settings.zk_deadline <= settings.session_timeout / 3:
        raise SettingsError(
            f"zk_deadline {settings.zk_deadline:g} s must be positive and at most a third of "
            f"session_timeout ({settings.session_timeout:g} s), so a call gives up before the "
            "session can expire"
        )
    if not 0 < settings.http_timeout < settings.session_timeout / 2:
        raise SettingsError(
            f"http_timeout {settings.http_timeout:g} s must be positive and below half the "
            f"session_timeout ({settings.session_timeout:g} s): a leader acts for at most half "
            "a session after its last contact with ZooKeeper, and a delivery it starts must "
            "end before its session could expire"
        )
    if settings.outbox_limit < 1:
        raise SettingsError("outbox_limit must be at least 1")
    return dataclasses.replace(settings, node_id=node_id)


def build_settings(
    cli: Mapping[str, Any], env: Mapping[str, str], config_file: str | None
) -> Settings:
    """Merge every source, the command line winning, and check the result as a whole."""
    return _check(layered(Settings, ENV_PREFIX, cli, env, config_file, FILE_ALIASES))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML file of settings (also ZK_SENSOR_CONFIG)")
    parser.add_argument("--id", dest="node_id", help="this node's unique id")
    parser.add_argument("--zookeeper", help="connection string host:port,host:port,...")
    parser.add_argument("--namespace", help="root znode of the fleet (default /zk-sensor)")
    parser.add_argument("--sampling-period", dest="sampling_period", type=float,
                        help="seconds; used until /config/sampling_period is set")
    parser.add_argument("--api-url", dest="api_url",
                        help="collector URL; used until /config/api_url is set")
    parser.add_argument("--sensor", choices=SENSOR_DRIVERS, help="sensor driver")
    parser.add_argument("--sensor-channel", dest="sensor_channel", type=int,
                        help="MCP3008 channel 0-7")
    parser.add_argument("--sensor-scale", dest="sensor_scale", type=float,
                        help="MCP3008: reading = value(0..1) * scale + offset")
    parser.add_argument("--sensor-offset", dest="sensor_offset", type=float)
    parser.add_argument("--pin-factory", dest="pin_factory",
                        help="gpiozero pin factory for real hardware (lgpio, rpigpio, pigpio)")
    parser.add_argument("--disk-path", dest="disk_path", help="filesystem for the disk sensor")
    parser.add_argument("--session-timeout", dest="session_timeout", type=float)
    parser.add_argument("--zk-deadline", dest="zk_deadline", type=float,
                        help="seconds any single ZooKeeper call may take")
    parser.add_argument("--http-timeout", dest="http_timeout", type=float)
    parser.add_argument("--metrics-port", dest="metrics_port", type=int,
                        help="serve Prometheus metrics on this port (0: off)")
    parser.add_argument("--metrics-host", dest="metrics_host",
                        help="address for the metrics port (default 127.0.0.1)")
    parser.add_argument("--outbox-limit", dest="outbox_limit", type=int,
                        help="rounds kept for the collector before the oldest is dropped")
    parser.add_argument("--log-level", dest="log_level",
                        choices=("debug", "info", "warning", "error"))

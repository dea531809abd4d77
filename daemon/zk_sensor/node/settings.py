"""The daemon's local settings: defaults, then a TOML file, then ZK_SENSOR_* variables,
then the command line. Fleet-wide values (period, collector URL) live in ZooKeeper;
the local ones here are only the start-up defaults until ZooKeeper says otherwise.
"""

import argparse
import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from zk_sensor.config.sources import SettingsError, layered
from zk_sensor.fleet.validation import (
    InvalidValue,
    parse_api_url,
    parse_node_id,
    parse_origins,
    parse_sampling_period,
)
from zk_sensor.sensors.catalog import BUILTIN, check_sensor_settings
from zk_sensor.zk.access import add_access_arguments

ENV_PREFIX = "ZK_SENSOR_"
# Sensor settings sources.py leaves as text (it coerces to int and float only).
SENSOR_OPTIONAL_NUMBERS = ("sensor_vref", "sensor_min", "sensor_max")


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
    sensor_differential: bool = False
    sensor_vref: float | None = None
    sensor_pin: str = ""
    sensor_trigger_pin: str = ""
    sensor_echo_pin: str = ""
    sensor_file: str = "/sys/class/thermal/thermal_zone0/temp"
    w1_device: str = ""
    sensor_min: float | None = None
    sensor_max: float | None = None
    session_timeout: float = 10.0
    zk_deadline: float = 2.0
    http_timeout: float = 3.0
    api_token: str = field(default="", repr=False)
    api_token_origins: str = ""
    collector_ca_file: str = ""
    zk_auth_file: str = ""
    zk_ca_file: str = ""
    zk_cert_file: str = ""
    zk_key_file: str = ""
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
        parse_origins(settings.api_token_origins)
    except InvalidValue as error:
        raise SettingsError(str(error)) from None
    settings = _sensor_types(settings)
    check_sensor_settings(settings)
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
    if bool(settings.zk_cert_file) != bool(settings.zk_key_file):
        raise SettingsError("zk_cert_file and zk_key_file go together: set both or neither")
    if settings.zk_cert_file and not settings.zk_ca_file:
        raise SettingsError("zk_cert_file needs zk_ca_file: TLS to ZooKeeper is on only when "
                            "zk_ca_file names the CA that signed the servers' certificates")
    if settings.outbox_limit < 1:
        raise SettingsError("outbox_limit must be at least 1")
    return dataclasses.replace(settings, node_id=node_id)


def _sensor_types(settings: Settings) -> Settings:
    return dataclasses.replace(
        settings,
        **{name: _optional_number(name, getattr(settings, name))
           for name in SENSOR_OPTIONAL_NUMBERS},
    )


def _optional_number(name: str, raw: object) -> float | None:
    """Unset is None; an empty value (ZK_SENSOR_SENSOR_MIN=) unsets one from the file."""
    if raw is None or str(raw).strip() == "":
        return None
    try:
        value = float(str(raw))
    except ValueError:
        raise SettingsError(f"setting {name}={raw!r} is not a number") from None
    if not math.isfinite(value):
        raise SettingsError(f"setting {name}={raw!r} is not a finite number")
    return value


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
    parser.add_argument("--sensor",
                        help=f"sensor driver: {', '.join(BUILTIN)}, or a plug-in's name")
    parser.add_argument("--sensor-channel", dest="sensor_channel", type=int,
                        help="MCP3xxx input channel, 0 up to the chip's channels less one")
    parser.add_argument("--sensor-scale", dest="sensor_scale", type=float,
                        help="reading = value * scale + offset (all but simulated, loadavg, "
                             "disk)")
    parser.add_argument("--sensor-offset", dest="sensor_offset", type=float)
    parser.add_argument("--pin-factory", dest="pin_factory",
                        help="gpiozero pin factory for real hardware (lgpio, rpigpio, pigpio)")
    parser.add_argument("--disk-path", dest="disk_path", help="filesystem for the disk sensor")
    parser.add_argument("--sensor-differential", dest="sensor_differential",
                        action=argparse.BooleanOptionalAction,
                        help="MCP3xxx: read the channel against its pair instead of ground")
    parser.add_argument("--sensor-vref", dest="sensor_vref", type=float,
                        help="MCP3xxx: volts on VREF; the value read becomes the input's volts")
    parser.add_argument("--sensor-pin", dest="sensor_pin",
                        help="light: the LDR and capacitor's pin (17, GPIO17, BOARD11)")
    parser.add_argument("--sensor-trigger-pin", dest="sensor_trigger_pin",
                        help="distance: the HC-SR04's TRIG pin")
    parser.add_argument("--sensor-echo-pin", dest="sensor_echo_pin",
                        help="distance: the HC-SR04's ECHO pin (through a voltage divider)")
    parser.add_argument("--sensor-file", dest="sensor_file",
                        help="cpu_temperature: the thermal zone's sysfs file")
    parser.add_argument("--w1-device", dest="w1_device",
                        help="ds18b20: the sensor's directory, /sys/bus/w1/devices/28-...")
    parser.add_argument("--sensor-min", dest="sensor_min", type=float,
                        help="a reading below is refused as a failed reading")
    parser.add_argument("--sensor-max", dest="sensor_max", type=float,
                        help="a reading above is refused as a failed reading")
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
    add_access_arguments(parser)
    parser.add_argument("--collector-ca-file", dest="collector_ca_file",
                        help="CA certificate (PEM) of an https:// collector "
                             "(default: zk_ca_file, then the system's CAs)")
    parser.add_argument("--api-token-origins", dest="api_token_origins",
                        help="comma-separated scheme://host[:port] besides api_url's own "
                             "that may receive api_token")
    parser.add_argument("--log-level", dest="log_level",
                        choices=("debug", "info", "warning", "error"))

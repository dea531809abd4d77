"""The daemon's local settings: defaults, then a TOML file, then ZK_SENSOR_* variables,
then the command line. Fleet-wide values (period, collector URL) live in ZooKeeper;
the local ones here are only the start-up defaults until ZooKeeper says otherwise.

The call and delivery deadlines left at their default follow the session timeout (the
one asked for, then the one the server grants: a server with a short tickTime grants
less), so a node with default settings starts against any server; a value an operator
chose is kept, and refused when it cannot fit.
"""

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from zk_sensor.config.sources import SettingsError, layered
from zk_sensor.config.table import Table, optional_number, setting
from zk_sensor.fleet.validation import (
    InvalidValue,
    parse_api_url,
    parse_node_id,
    parse_origins,
    parse_sampling_period,
)
from zk_sensor.sensors.catalog import BUILTIN, check_sensor_settings

# A call gives up within a third of the session, so two more fit before the server
# expires it; a delivery within a third too, well inside the leader's lease (half).
SESSION_SHARES = {"zk_deadline": 1 / 3, "http_timeout": 1 / 3}
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class Settings:
    """The node's local settings, each declared once (config/table.py): its TOML key,
    `ZK_SENSOR_` variable and flag come from the field."""
    node_id: str = setting("", "this node's unique id: letters, digits, '.', '_', '-'",
                           flag="--id", aliases=("id",), shown_default="none, it is required")
    zookeeper: str = setting("127.0.0.1:2181",
                             "ZooKeeper connection string host:port,host:port,...")
    namespace: str = setting("/zk-sensor", "root znode of the fleet")
    sampling_period: float = setting(5.0, "seconds between readings; used until "
                                          "/config/sampling_period is set in ZooKeeper")
    api_url: str = setting("http://127.0.0.1:8080/nuevo",
                           "collector URL, or several separated by commas; used until "
                           "/config/api_url is set in ZooKeeper")
    sensor: str = setting("simulated", f"sensor driver: {', '.join(BUILTIN)}, or a "
                                       "plug-in's name")
    sensor_channel: int = setting(0, "MCP3xxx input channel, 0 up to the chip's channels "
                                     "less one")
    sensor_scale: float = setting(1.0, "reading = value * scale + offset (every driver but "
                                       "simulated, loadavg and disk)")
    sensor_offset: float = setting(0.0, "added to the scaled value (see sensor_scale)")
    pin_factory: str = setting("lgpio", "gpiozero pin factory for real hardware (lgpio, "
                                        "rpigpio, pigpio)")
    disk_path: str = setting("/", "filesystem of the disk sensor (percent used)")
    sensor_differential: bool = setting(False, "MCP3xxx: read the channel against its pair "
                                               "instead of ground")
    sensor_vref: float | None = setting(None, "MCP3xxx: volts on VREF; the value read "
                                              "becomes the input's volts",
                                        parse=optional_number)
    sensor_pin: str = setting("", "light: the LDR and capacitor's pin (17, GPIO17, BOARD11)")
    sensor_trigger_pin: str = setting("", "distance: the HC-SR04's TRIG pin")
    sensor_echo_pin: str = setting("", "distance: the HC-SR04's ECHO pin (through a "
                                       "voltage divider)")
    sensor_file: str = setting("/sys/class/thermal/thermal_zone0/temp",
                               "cpu_temperature: the thermal zone's sysfs file")
    w1_device: str = setting("", "ds18b20: the sensor's directory, /sys/bus/w1/devices/28-...")
    sensor_min: float | None = setting(None, "a reading below this (in the reading's unit) is "
                                             "refused as a failed reading",
                                       parse=optional_number)
    sensor_max: float | None = setting(None, "a reading above this (in the reading's unit) is "
                                             "refused as a failed reading",
                                       parse=optional_number)
    session_timeout: float = setting(10.0, "ZooKeeper session timeout asked for, seconds "
                                           "(1..60); the server may grant another, and the "
                                           "node's timing follows what it granted")
    zk_deadline: float = setting(2.0, "seconds any single ZooKeeper call may take, at most a "
                                      "third of the granted session timeout",
                                 shown_default="2, or a third of a shorter session timeout")
    http_timeout: float = setting(3.0, "seconds a delivery to the collector may take, below "
                                       "half the granted session timeout",
                                  shown_default="3, or a third of a shorter session timeout")
    api_token: str = setting("", "bearer token sent with every delivery", secret=True)
    api_token_origins: str = setting("", "comma-separated scheme://host[:port] besides "
                                         "api_url's own that may receive api_token")
    collector_ca_file: str = setting("", "CA certificate (PEM) of an https:// collector",
                                     shown_default="zk_ca_file, then the system's CAs")
    zk_auth_file: str = setting("", "file holding one line user:password for ZooKeeper "
                                    "(mode 0600)")
    zk_ca_file: str = setting("", "CA certificate (PEM) of the ZooKeeper servers: turns on "
                                  "TLS to ZooKeeper")
    zk_cert_file: str = setting("", "TLS client certificate (PEM) for ZooKeeper")
    zk_key_file: str = setting("", "the key of zk_cert_file (PEM, mode 0600)")
    outbox_limit: int = setting(1000, "rounds kept for the collector before the oldest is "
                                      "dropped")
    metrics_host: str = setting("127.0.0.1", "address for the metrics port")
    metrics_port: int = setting(0, "serve Prometheus metrics on this port (0: off)")
    offline_grace: float = setting(120.0, "seconds without ZooKeeper before the systemd "
                                          "watchdog stops being fed")
    log_level: str = setting("info", "what to log; debug also logs every measurement",
                             choices=LOG_LEVELS)
    # The session-bound settings left at their default, which fitted_to may cut.
    defaulted: frozenset[str] = field(default=frozenset(), repr=False)

    def fitted_to(self, session: float) -> tuple[Self, str]:
        """These settings with each session-bound default cut to its share of `session`
        (seconds), or back to the default when that fits; and what changed, for the log
        ("" when nothing did)."""
        fitted = dataclasses.replace(self, **{
            name: min(getattr(Settings, name), math.floor(session * share * 1000) / 1000)
            for name, share in SESSION_SHARES.items() if name in self.defaulted})
        changes = [f"{name} {getattr(fitted, name):g} s (was {getattr(self, name):g} s)"
                   for name in SESSION_SHARES if getattr(fitted, name) != getattr(self, name)]
        return fitted, "defaults follow it: " + ", ".join(changes) if changes else ""


TABLE = Table(Settings, "ZK_SENSOR_")


def _check(settings: Settings) -> Settings:
    try:
        node_id = parse_node_id(settings.node_id)
        parse_sampling_period(str(settings.sampling_period))
        parse_api_url(settings.api_url)
        parse_origins(settings.api_token_origins)
    except InvalidValue as error:
        raise SettingsError(str(error)) from None
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


def build_settings(
    cli: Mapping[str, Any], env: Mapping[str, str], config_file: str | None
) -> Settings:
    """Merge every source, the command line winning, fit the defaults to the session
    timeout asked for, and check the result as a whole."""
    merged = layered(TABLE, cli, env, config_file)
    settings = dataclasses.replace(
        merged.settings, defaulted=frozenset(SESSION_SHARES) - merged.explicit)
    return _check(settings.fitted_to(settings.session_timeout)[0])

"""Live fleet config: a DataWatch per key, validated before it takes effect.

The watch callbacks run on kazoo's thread, so they only hand the raw bytes to the
daemon's loop; `LiveConfig.apply` runs in the loop, validates, and either switches to
the new value or keeps the last good one with one clear error line.
"""

import logging
from collections.abc import Callable

from zk_sensor.fleet.layout import CONFIG_KEYS, Layout
from zk_sensor.fleet.validation import CONFIG_PARSERS, InvalidValue, format_config_value
from zk_sensor.zk.interface import Zk

log = logging.getLogger("zk_sensor")


class LiveConfig:
    """The fleet-wide config values in force on this node: the last good value of each
    key, or the node's own default while ZooKeeper holds none. Kept by the daemon's loop,
    so a bad value written behind the CLI's back (zkCli.sh) is refused with one line and
    never half applied."""

    def __init__(self, defaults: dict[str, float | str]) -> None:
        self.defaults = dict(defaults)
        self.values = dict(defaults)
        self.raw: dict[str, bytes | None] = {}

    @property
    def sampling_period(self) -> float:
        return float(self.values["sampling_period"])

    @property
    def api_url(self) -> str:
        return str(self.values["api_url"])

    def apply(self, key: str, data: bytes | None) -> bool:
        """True when the value in force changed."""
        if key in self.raw and self.raw[key] == data:
            return False
        self.raw[key] = data
        old = self.values[key]
        if data is None or not data.strip():
            new = self.defaults[key]
            log.info("config %s is not set in ZooKeeper; using the local default %s",
                     key, format_config_value(new))
        else:
            try:
                new = CONFIG_PARSERS[key](data.decode())
            except (InvalidValue, UnicodeDecodeError) as error:
                log.error("config refused: %s; keeping %s = %s",
                          error, key, format_config_value(old))
                return False
        self.values[key] = new
        if new != old:
            log.info("config %s = %s (was %s)", key, format_config_value(new),
                     format_config_value(old))
            return True
        return False


def watch_config(
    zk: Zk, layout: Layout, deliver: Callable[[str, bytes | None], None]
) -> list[object]:
    """One data watch per key; each change (and the first read) is handed to `deliver`."""

    def watcher(key: str) -> Callable[[bytes | None], None]:
        return lambda data: deliver(key, data)

    return [zk.watch_data(layout.config_key(key), watcher(key)) for key in CONFIG_KEYS]

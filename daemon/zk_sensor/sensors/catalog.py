"""The drivers by name, and the checks of their settings that need no hardware.

Importing this module imports no driver library: settings validation and
`--check-config` use it on every start, whatever the driver.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points

from zk_sensor.config.sources import SettingsError
from zk_sensor.sensors.base import SensorSettings, period_too_short
from zk_sensor.sensors.board import pin_factory_problem
from zk_sensor.sensors.w1 import missing_device, settings_min_read_time

PLUGIN_GROUP = "zk_sensor.sensors"

# The channels of each MCP3xxx chip gpiozero drives; a single-input chip takes no
# channel and has no single-ended/differential choice.
MCP3XXX_CHANNELS = {
    "mcp3001": 1, "mcp3002": 2, "mcp3004": 4, "mcp3008": 8,
    "mcp3201": 1, "mcp3202": 2, "mcp3204": 4, "mcp3208": 8,
    "mcp3301": 1, "mcp3302": 4, "mcp3304": 8,
}

# Built-in drivers as "module:factory" in this package: the contract of a plug-in's
# entry point, and nothing imported before the chosen one is opened.
BUILTIN = {
    "simulated": "simulated:open_simulated",
    **dict.fromkeys(MCP3XXX_CHANNELS, "mcp3xxx:open_mcp3xxx"),
    "loadavg": "internal:open_loadavg",
    "disk": "internal:open_disk",
    "cpu_temperature": "internal:open_cpu_temperature",
    "distance": "gpio:open_distance",
    "light": "gpio:open_light",
    "ds18b20": "w1:open_ds18b20",
}

# Settings a driver cannot do without (pins and files have no sensible default).
REQUIRED = {
    "distance": ("sensor_trigger_pin", "sensor_echo_pin"),
    "light": ("sensor_pin",),
    "ds18b20": ("w1_device",),
    "cpu_temperature": ("sensor_file",),
}

# Drivers on real pins, through the pin factory the settings name.
PIN_DRIVERS = (*MCP3XXX_CHANNELS, "distance", "light")
# The shortest read of a built-in driver (its own `min_read_time`), known before it opens.
MIN_READ_TIME: dict[str, Callable[[SensorSettings], float]] = {"ds18b20": settings_min_read_time}


def plugin_names() -> list[str]:
    """Names registered by installed packages; a built-in name wins over a plug-in's."""
    return sorted({entry.name for entry in entry_points(group=PLUGIN_GROUP)} - BUILTIN.keys())


def check_sensor_settings(settings: SensorSettings) -> None:
    """Refuse what can be judged without the hardware, so that the start and
    --check-config stop the same mistakes before any pin or file is touched."""
    _check_name(settings.sensor)
    missing = [name for name in REQUIRED.get(settings.sensor, ()) if not getattr(settings, name)]
    if missing:
        raise SettingsError(f"sensor {settings.sensor} needs {' and '.join(missing)}")
    if settings.sensor in MCP3XXX_CHANNELS:
        _check_mcp3xxx(settings)
    if settings.sensor == "distance" and settings.sensor_trigger_pin == settings.sensor_echo_pin:
        raise SettingsError("sensor_trigger_pin and sensor_echo_pin must be different pins")
    least = MIN_READ_TIME.get(settings.sensor)
    if least is not None:
        _refuse(period_too_short(settings.sensor, settings.sampling_period, least(settings)))
    if settings.sensor in PIN_DRIVERS:
        _refuse(pin_factory_problem(settings.pin_factory, settings.sensor))
    low, high = settings.sensor_min, settings.sensor_max
    if low is not None and high is not None and not low < high:
        raise SettingsError(f"sensor_min {low:g} must be below sensor_max {high:g}")


def _check_name(name: str) -> None:
    if name in BUILTIN:
        return
    plugins = plugin_names()
    if name not in plugins:
        known = ", ".join(BUILTIN) + (f"; plug-ins: {', '.join(plugins)}" if plugins else "")
        raise SettingsError(f"sensor {name!r} is not a known driver (known: {known})")


def _check_mcp3xxx(settings: SensorSettings) -> None:
    chip, channel = settings.sensor, settings.sensor_channel
    channels = MCP3XXX_CHANNELS[chip]
    if channels == 1 and (channel or settings.sensor_differential):
        raise SettingsError(
            f"{chip} has a single input: leave sensor_channel and sensor_differential unset")
    if not 0 <= channel < channels:
        raise SettingsError(f"sensor_channel {channel} does not exist on {chip}: "
                            f"it has channels 0..{channels - 1}")
    if settings.sensor_vref is not None and settings.sensor_vref <= 0:
        raise SettingsError(f"sensor_vref {settings.sensor_vref:g} must be positive: the "
                            f"voltage on the {chip}'s VREF pin")


def sensor_warnings(settings: SensorSettings) -> list[str]:
    """What --check-config reports without refusing: the node would start all the same."""
    problem = missing_device(settings) if settings.sensor == "ds18b20" else None
    return [problem] if problem else []


def _refuse(problem: str | None) -> None:
    if problem:
        raise SettingsError(problem)

"""Sensor drivers: built-in ones (one module per family) and plug-ins registered by
installed packages under the entry-point group `zk_sensor.sensors`.

Each driver's library is imported only when that driver is opened: gpiozero alone is
about a fifth of a node's resident memory, and a DS18B20 or plug-in node never needs it.
"""

from typing import TYPE_CHECKING

from zk_sensor.sensors.base import (
    Sensor,
    SensorError,
    SensorSettings,
    SensorUnavailable,
    take_reading,
)
from zk_sensor.sensors.loader import open_sensor, read_once

if TYPE_CHECKING:
    from zk_sensor.sensors.simulated import SIMULATED_HIGH, SIMULATED_LOW, SimulatedSensor

__all__ = [
    "SIMULATED_HIGH",
    "SIMULATED_LOW",
    "Sensor",
    "SensorError",
    "SensorSettings",
    "SensorUnavailable",
    "SimulatedSensor",
    "open_sensor",
    "read_once",
    "take_reading",
]

LAZY_FROM_SIMULATED = ("SimulatedSensor", "SIMULATED_LOW", "SIMULATED_HIGH")


def __getattr__(name: str) -> object:
    """The simulation's names, imported (with gpiozero) only when asked for."""
    if name in LAZY_FROM_SIMULATED:
        from zk_sensor.sensors import simulated

        return getattr(simulated, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

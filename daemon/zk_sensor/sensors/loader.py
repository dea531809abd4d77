"""Opening the configured driver, built-in or plug-in, and the operator's --read-once."""

from __future__ import annotations

import importlib
import queue
import threading
from collections.abc import Callable
from importlib.metadata import entry_points

from zk_sensor.sensors.base import (
    Sensor,
    SensorError,
    SensorSettings,
    SensorUnavailable,
    take_reading,
)
from zk_sensor.sensors.catalog import BUILTIN, PLUGIN_GROUP
from zk_sensor.sensors.transforms import Bounded
from zk_sensor.sensors.workdir import writable_directory

# Long enough for gpiozero's first smoothed value (an HC-SR04's nine echoes) and a
# 1-Wire conversion (750 ms), short enough for an operator waiting at a prompt.
READ_ONCE_DEADLINE = 10.0

# A built-in driver's `open_*` function, or a plug-in's entry point.
DriverFactory = Callable[[SensorSettings], Sensor]


def open_sensor(settings: SensorSettings) -> Sensor:
    sensor = _open_driver(settings)
    if settings.sensor_min is None and settings.sensor_max is None:
        return sensor
    return Bounded(sensor, settings.sensor_min, settings.sensor_max)


def _open_driver(settings: SensorSettings) -> Sensor:
    """A missing library or device becomes SensorUnavailable (exit 2): a plug-in signals
    them with ImportError and FileNotFoundError/PermissionError, like the built-ins."""
    name = settings.sensor
    try:
        return driver_factory(name)(settings)
    except SensorError:
        raise
    except ImportError as error:
        raise SensorUnavailable(f"sensor {name} needs the Python module "
                                f"{error.name or error}: install it into zk-sensor's "
                                "environment") from error
    except (FileNotFoundError, PermissionError) as error:
        raise SensorUnavailable(f"sensor {name} cannot use its device: {error}") from error
    except Exception as error:
        raise SensorError(f"cannot open sensor {name!r}: {error}") from error


def driver_factory(name: str) -> DriverFactory:
    """The factory of a built-in driver (imported only now) or of an installed plug-in."""
    target = BUILTIN.get(name)
    if target is not None:
        module, _, function = target.partition(":")
        builtin: DriverFactory = getattr(importlib.import_module(f"{__package__}.{module}"),
                                         function)
        return builtin
    for entry in entry_points(group=PLUGIN_GROUP, name=name):
        plugin: DriverFactory = entry.load()
        return plugin
    raise SensorUnavailable(f"no sensor driver named {name!r} is installed")


def read_once(settings: SensorSettings, deadline: float = READ_ONCE_DEADLINE) -> float:
    """The daemon's own way from settings to a reading, without ZooKeeper, from whatever
    directory the operator is in (workdir.py).

    The read runs in a daemon thread, so a driver stuck in it (an HC-SR04 that never
    echoes, a hung 1-Wire bus) cannot keep the operator's command from answering; such a
    sensor is left open for the process's exit to release.
    """
    with writable_directory():
        return _read_once(settings, deadline)


def _read_once(settings: SensorSettings, deadline: float) -> float:
    sensor = open_sensor(settings)
    outcome: queue.SimpleQueue[float | SensorError] = queue.SimpleQueue()

    def read() -> None:
        try:
            outcome.put(take_reading(sensor))
        except SensorError as error:
            outcome.put(error)

    threading.Thread(target=read, name="read-once", daemon=True).start()
    try:
        result = outcome.get(timeout=deadline)
    except queue.Empty:
        raise SensorError(f"{sensor.name} sensor gave no reading within {deadline:g} s") from None
    sensor.close()
    if isinstance(result, SensorError):
        raise result
    return result

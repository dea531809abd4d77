"""gpiozero's pin factory, always chosen explicitly.

gpiozero picks a pin factory by itself when none is given, probing for hardware and
warning when it falls back; a daemon must not depend on that guess. So each driver
installs the factory it chose as gpiozero's default before building any device (parts
of gpiozero, such as its software SPI bus, ignore a factory passed to a device): the
mock factory for the simulation and for gpiozero's internal devices (which use no
pins), the factory named by `pin_factory` for real hardware.
"""

import contextlib
import logging
import warnings
from collections.abc import Iterator
from importlib.metadata import entry_points

from gpiozero import Device
from gpiozero.pins import Factory
from gpiozero.pins.mock import MockPin

from zk_sensor.sensors.base import SensorUnavailable
from zk_sensor.sensors.workdir import current_directory, directory_writable

log = logging.getLogger("zk_sensor")

# Where each real factory's library comes from: (Raspberry Pi OS package, PyPI name).
PIN_FACTORY_LIBRARIES = {
    "lgpio": ("python3-lgpio", "lgpio"),
    "rpigpio": ("python3-rpi.gpio", "RPi.GPIO"),
    "pigpio": ("python3-pigpio", "pigpio"),
}


def use_pin_factory(factory: Factory) -> Factory:
    Device.pin_factory = factory
    return factory


def hardware_pin_factory(name: str, sensor: str) -> Factory:
    """The pin factory named in the settings, loaded the way gpiozero registers them."""
    entries = entry_points(group="gpiozero_pin_factories", name=name)
    if not entries:
        known = ", ".join(sorted(entry_points(group="gpiozero_pin_factories").names))
        raise SensorUnavailable(f"gpiozero has no pin factory named {name!r} (known: {known})")
    try:
        factory_class = next(iter(entries)).load()
    except ImportError as error:
        apt, pip = PIN_FACTORY_LIBRARIES.get(name, (None, error.name))
        where = f"apt install {apt} (the venv must see system packages) or " if apt else ""
        raise SensorUnavailable(f"sensor {sensor} needs the {name} pin factory: on Raspberry "
                                f"Pi OS {where}pip install {pip}") from error
    try:
        return use_pin_factory(factory_class())
    except Exception as error:
        raise SensorUnavailable(f"sensor {sensor}: the {name} pin factory cannot start "
                                f"({error}): {likely_cause(name)}") from error


def likely_cause(factory: str) -> str:
    """lgpio's own error does not say that it could not make its pipes."""
    if factory == "lgpio" and not directory_writable():
        return (f"lgpio makes its notification pipes in the working directory, and "
                f"{current_directory()} is not writable by this user")
    return "is this a Raspberry Pi, and is zk-sensor in its gpio group?"


@contextlib.contextmanager
def warnings_logged(sensor: str) -> Iterator[None]:
    """gpiozero reports its fallbacks (bit-banged SPI, imprecise echo timing) through
    the warnings module: two lines on stderr without the node's name. While a device is
    built they become one log line each."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for warning in caught:
        log.warning("sensor %s: %s", sensor, warning.message)


def forget_pin_history(factory: Factory) -> None:
    """gpiozero's mock pins record every state change (for test assertions): a
    bit-banged conversion is about fifty changes, 6 KB a reading, so a long-running node
    would grow without bound. Only the current state is kept."""
    for pin in getattr(factory, "pins", {}).values():
        if isinstance(pin, MockPin):
            pin.clear_states()

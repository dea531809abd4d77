"""DS18B20 1-Wire thermometers, read from the kernel's w1 sysfs (dtoverlay=w1-gpio).

Reading `w1_slave` makes the kernel run a conversion (about 750 ms) and gives two lines:

    72 01 4b 46 7f ff 0e 10 57 : crc=57 YES
    72 01 4b 46 7f ff 0e 10 57 t=23125

The driver keeps no file open between reads and starts no thread: each read opens,
reads and closes the file in the caller's thread. A read the kernel never finishes
(a broken bus) therefore holds only that thread, which the daemon's reading deadline
abandons; the file is closed as soon as the kernel returns, and a later read opens its
own, so a stuck read cannot pile up descriptors or threads inside the driver.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .base import SensorError, SensorUnavailable

if TYPE_CHECKING:
    from ..settings import Settings

# The scratchpad's value after power-on: what a sensor that has not converted (a
# brown-out on a parasite-powered bus) reports, never a measurement to trust.
POWER_ON_MILLIDEGREES = 85000


class Ds18b20:
    """The temperature in °C * scale + offset."""

    name = "ds18b20"

    def __init__(self, w1_slave: Path, scale: float, offset: float) -> None:
        self.w1_slave = w1_slave
        self.scale = scale
        self.offset = offset

    def read(self) -> float:
        return parse_w1_slave(self.w1_slave.read_text()) * self.scale + self.offset

    def close(self) -> None:
        """Nothing to release: no file stays open between reads."""


def parse_w1_slave(text: str) -> float:
    lines = text.splitlines()
    if len(lines) < 2 or not lines[0].rstrip().endswith("YES"):
        raise SensorError("CRC check failed (w1_slave does not say YES)")
    try:
        millidegrees = int(lines[1].rpartition("t=")[2])
    except ValueError:
        raise SensorError(f"no temperature in w1_slave line {lines[1]!r}") from None
    if millidegrees == POWER_ON_MILLIDEGREES:
        raise SensorError("85.0 °C is the DS18B20's power-on value, not a measurement")
    return millidegrees / 1000


def open_ds18b20(settings: Settings) -> Ds18b20:
    device = Path(settings.w1_device)
    if not device.is_dir():
        raise SensorUnavailable(f"w1_device {device} does not exist: is dtoverlay=w1-gpio in "
                                "/boot/firmware/config.txt?")
    w1_slave = device / "w1_slave"
    if not w1_slave.is_file():
        raise SensorUnavailable(f"w1_device {device} has no w1_slave file: is it a "
                                "DS18B20 (28-...)?")
    return Ds18b20(w1_slave, settings.sensor_scale, settings.sensor_offset)

"""DS18B20 1-Wire thermometers, read from the kernel's w1 sysfs (dtoverlay=w1-gpio).

Reading `w1_slave` makes the kernel run a conversion (about 750 ms) and gives two lines:

    72 01 4b 46 7f ff 0e 10 57 : crc=57 YES
    72 01 4b 46 7f ff 0e 10 57 t=23125

The driver keeps no file open between reads and starts no thread: each read opens,
reads and closes the file in the caller's thread. A read the kernel never finishes
(a broken bus) therefore holds only that thread, which the daemon's reading deadline
abandons; the file is closed as soon as the kernel returns, and a later read opens its
own, so a stuck read cannot pile up descriptors or threads inside the driver.

DS18B20s drop off the bus (a loose wire, a brown-out) and the kernel removes their
directory until they answer again, so a missing device is a failed reading, not a
missing driver: the node starts without it and reads every round until it is back.
"""

from __future__ import annotations

import logging
from pathlib import Path

from zk_sensor.sensors.base import SensorError, SensorSettings, SensorUnavailable
from zk_sensor.sensors.transforms import Calibration

log = logging.getLogger("zk_sensor")

# The scratchpad's value after power-on: what a sensor that has not converted (a
# brown-out on a parasite-powered bus) reports, never a measurement to trust.
POWER_ON_MILLIDEGREES = 85000
# A 12-bit conversion (the power-on resolution), for a device that does not say its own.
CONVERSION_TIME = 0.75
# The bus traffic around a conversion: reset, ROM match, reading the scratchpad.
BUS_MARGIN = 0.05
OVERLAY_HINT = "is dtoverlay=w1-gpio in /boot/firmware/config.txt and the sensor wired?"


class Ds18b20:
    """The temperature in °C * scale + offset."""

    name = "ds18b20"

    def __init__(self, device: Path, calibration: Calibration) -> None:
        self.device = device
        self.min_read_time = min_read_time(device)
        self.w1_slave = device / "w1_slave"
        self.calibration = calibration
        self.missing = False

    def read(self) -> float:
        try:
            text = self.w1_slave.read_text()
        except FileNotFoundError:
            self.went_missing()
            raise SensorError(f"w1_device {self.device} does not exist: {OVERLAY_HINT}") from None
        if self.missing:
            self.missing = False
            log.info("w1_device %s is back", self.device)
        return self.calibration.apply(parse_w1_slave(text))

    def went_missing(self) -> None:
        """One log line when the device goes (or is not there at start), not one a round:
        each failed read is counted and logged as a warning by the daemon anyway (and
        --read-once, which sets up no logging, shows only its own error)."""
        if not self.missing:
            self.missing = True
            log.info("waiting for w1_device %s to appear (%s)", self.device, OVERLAY_HINT)

    def close(self) -> None:
        """Nothing to release: no file stays open between reads."""


def parse_w1_slave(text: str) -> float:
    lines = text.splitlines()
    if len(lines) < 2 or not lines[0].rstrip().endswith("YES"):
        raise SensorError("CRC check failed (w1_slave does not say YES)")
    if scratchpad_all_zero(lines[0]):
        raise SensorError("the scratchpad is all zeros (crc=00 passes on nothing read): "
                          "the sensor did not answer")
    try:
        millidegrees = int(lines[1].rpartition("t=")[2])
    except ValueError:
        raise SensorError(f"no temperature in w1_slave line {lines[1]!r}") from None
    if millidegrees == POWER_ON_MILLIDEGREES:
        raise SensorError("85.0 °C is the DS18B20's power-on value, not a measurement")
    return millidegrees / 1000


def scratchpad_all_zero(crc_line: str) -> bool:
    """A bus held low reads as nine zero bytes, whose CRC is zero too, so the kernel says
    YES and t=0: a real 0 °C has non-zero configuration bytes."""
    scratchpad = crc_line.partition(":")[0].split()
    return bool(scratchpad) and all(byte == "00" for byte in scratchpad)


def min_read_time(device: Path) -> float:
    """The kernel's conversion time for this sensor at its resolution (w1_therm's
    `conv_time`, in ms: 750 at 12 bits, 94 at 9), plus the bus traffic; 750 ms when the
    device is not there or does not say."""
    try:
        milliseconds = int((device / "conv_time").read_text())
    except (OSError, ValueError):
        milliseconds = 0
    conversion = milliseconds / 1000 if milliseconds > 0 else CONVERSION_TIME
    return conversion + BUS_MARGIN


def settings_min_read_time(settings: SensorSettings) -> float:
    return min_read_time(Path(settings.w1_device))


def open_ds18b20(settings: SensorSettings) -> Ds18b20:
    device = Path(settings.w1_device)
    sensor = Ds18b20(device, Calibration.of(settings))
    if not device.is_dir():
        sensor.went_missing()
    elif not sensor.w1_slave.is_file():
        raise SensorUnavailable(f"w1_device {device} has no w1_slave file: is it a "
                                "DS18B20 (28-...)?")
    return sensor


def missing_device(settings: SensorSettings) -> str | None:
    """--check-config's warning: the node will start, but wait for this device."""
    device = Path(settings.w1_device)
    if device.is_dir():
        return None
    return f"w1_device {device} does not exist yet: the node will start and wait for it"

"""Sensor drivers, all through gpiozero, each with an explicitly chosen pin factory.

gpiozero picks a pin factory by itself when none is given, probing for hardware and
warning when it falls back; a daemon must not depend on that guess. So each driver
installs the factory it chose as gpiozero's default before building any device (parts
of gpiozero, such as its software SPI bus, ignore a factory passed to a device): the
mock factory for the simulation and for gpiozero's internal devices (which use no
pins), a named factory for real hardware.
"""

import math
import random
from importlib.metadata import entry_points
from typing import Protocol

from gpiozero import MCP3008, Device, DiskUsage, LoadAverage
from gpiozero.pins import Factory
from gpiozero.pins.mock import MockFactory, MockPin, MockSPIDevice

from .settings import Settings

SIMULATED_LOW = 75.0
SIMULATED_HIGH = 85.0
# Bit-banged SPI on pins that are not the hardware SPI pins, so gpiozero goes straight
# to its software SPI on the mock factory instead of probing for spidev first.
SPI_PINS = {"clock_pin": 21, "mosi_pin": 20, "miso_pin": 19, "select_pin": 16}


class SensorError(RuntimeError):
    """A reading that failed; the round goes on without it."""


class Sensor(Protocol):
    name: str

    def read(self) -> float: ...

    def close(self) -> None: ...


def use_pin_factory(factory: Factory) -> Factory:
    Device.pin_factory = factory
    return factory


def forget_pin_history(factory: Factory) -> None:
    """gpiozero's mock pins record every state change (for test assertions): a
    bit-banged conversion is about fifty changes, 6 KB a reading, so a long-running node
    would grow without bound. Only the current state is kept."""
    for pin in getattr(factory, "pins", {}).values():
        if isinstance(pin, MockPin):
            pin.clear_states()


class SimulatedMCP3008(MockSPIDevice):
    """The chip side of an MCP3008 answering each conversion with a random level.

    Protocol: the master clocks a start bit, the single/differential bit and three
    channel bits; the chip then answers with a null bit and ten data bits.
    """

    def __init__(self, factory: MockFactory, rng: random.Random) -> None:
        super().__init__(**SPI_PINS, pin_factory=factory)
        self.rng = rng
        self.stage = "idle"

    def on_start(self) -> None:
        super().on_start()
        self.stage = "idle"

    def on_bit(self) -> None:
        if self.stage == "idle" and self.rx_buf[-1]:
            self.stage, self.rx_buf = "mode", []
        elif self.stage == "mode":
            self.stage, self.rx_buf = "channel", []
        elif self.stage == "channel" and len(self.rx_buf) == 3:
            self.stage = "answer"
            self.tx_word(self.rng.randrange(1024), 12)


class SimulatedSensor:
    """Random values around the seed's 75-85, read by gpiozero's real MCP3008 code."""

    name = "simulated"

    def __init__(self, seed: int | None = None) -> None:
        self.factory = use_pin_factory(MockFactory())
        self.chip = SimulatedMCP3008(self.factory, random.Random(seed))
        self.adc = MCP3008(channel=0, **SPI_PINS, pin_factory=self.factory)

    def read(self) -> float:
        try:
            return SIMULATED_LOW + self.adc.value * (SIMULATED_HIGH - SIMULATED_LOW)
        finally:
            forget_pin_history(self.factory)

    def close(self) -> None:
        self.adc.close()
        self.chip.close()
        self.factory.close()


def hardware_pin_factory(name: str) -> Factory:
    """The pin factory named in the settings, loaded the way gpiozero registers them."""
    for entry in entry_points(group="gpiozero_pin_factories"):
        if entry.name == name:
            return entry.load()()
    raise SensorError(f"gpiozero has no pin factory named {name!r}")


class Mcp3008Sensor:
    """An SPI ADC on a Raspberry Pi: value (0..1) * scale + offset."""

    name = "mcp3008"

    def __init__(self, channel: int, scale: float, offset: float, pin_factory: str) -> None:
        self.factory = use_pin_factory(hardware_pin_factory(pin_factory))
        self.adc = MCP3008(channel=channel, pin_factory=self.factory)
        self.scale = scale
        self.offset = offset

    def read(self) -> float:
        try:
            return self.adc.value * self.scale + self.offset
        finally:
            forget_pin_history(self.factory)

    def close(self) -> None:
        self.adc.close()
        self.factory.close()


class LoadAverageSensor:
    """The 1-minute load average: a real, changing signal on any Linux box."""

    name = "loadavg"

    def __init__(self) -> None:
        self.factory = use_pin_factory(MockFactory())
        self.device = LoadAverage(minutes=1, pin_factory=self.factory)

    def read(self) -> float:
        return float(self.device.load_average)

    def close(self) -> None:
        self.device.close()
        self.factory.close()


class DiskUsageSensor:
    """Percentage used of one filesystem."""

    name = "disk"

    def __init__(self, path: str) -> None:
        self.factory = use_pin_factory(MockFactory())
        self.device = DiskUsage(filesystem=path, pin_factory=self.factory)

    def read(self) -> float:
        return float(self.device.usage)

    def close(self) -> None:
        self.device.close()
        self.factory.close()


def open_sensor(settings: Settings) -> Sensor:
    try:
        if settings.sensor == "mcp3008":
            return Mcp3008Sensor(
                settings.sensor_channel,
                settings.sensor_scale,
                settings.sensor_offset,
                settings.pin_factory,
            )
        if settings.sensor == "loadavg":
            return LoadAverageSensor()
        if settings.sensor == "disk":
            return DiskUsageSensor(settings.disk_path)
        return SimulatedSensor()
    except SensorError:
        raise
    except Exception as error:
        raise SensorError(f"cannot open sensor {settings.sensor!r}: {error}") from error


def take_reading(sensor: Sensor) -> float:
    """A finite number, or SensorError: a broken reading never reaches ZooKeeper."""
    try:
        value = float(sensor.read())
    except Exception as error:
        raise SensorError(f"{sensor.name} sensor failed: {error}") from error
    if not math.isfinite(value):
        raise SensorError(f"{sensor.name} sensor returned {value!r}, not a finite number")
    return value

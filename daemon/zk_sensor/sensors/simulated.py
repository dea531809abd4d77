"""The default driver: gpiozero's real MCP3008 code reading a simulated chip.

The chip sits on the Pi's hardware SPI port (GPIO 11, 10, 9, select 8), where a real one
is wired and where gpiozero reaches it through spidev: one full-duplex transfer a
conversion. The simulation answers at that level, so a simulated reading costs what a real
one costs the node in Python (a few microseconds). gpiozero's own mock SPI device
would sit on mock pins and bit-bang all 24 clocks of a conversion through Python, about
0.35 ms a reading: a sixth of a node's CPU per round, spent on nothing a Pi does.
"""

from __future__ import annotations

import random

from gpiozero import MCP3008
from gpiozero.pins import SPI
from gpiozero.pins.mock import MockFactory

from zk_sensor.sensors.base import SensorSettings
from zk_sensor.sensors.pins import use_pin_factory
from zk_sensor.sensors.transforms import Calibration

SIMULATED_LOW = 75.0
SIMULATED_HIGH = 85.0
# The chip's level, 0..1, spread over SIMULATED_LOW..SIMULATED_HIGH.
SIMULATED_RANGE = Calibration(scale=SIMULATED_HIGH - SIMULATED_LOW, offset=SIMULATED_LOW)
HARDWARE_SPI_PINS = {"clock_pin": 11, "mosi_pin": 10, "miso_pin": 9, "select_pin": 8}
START = 0x01


class SimulatedMCP3008Port(SPI):  # type: ignore[misc]  # gpiozero has no type stubs
    """An MCP3008 behind the hardware SPI port, answering each conversion with a random
    level. Protocol (datasheet, figure 6-1, as gpiozero sends it):

        Tx  00000001 MCCCxxxx xxxxxxxx
        Rx  xxxxxxxx xxxxx0RR RRRRRRRR
    """

    def __init__(self, *, pin_factory: SimulatedFactory, **_pins: object) -> None:
        super().__init__(pin_factory=pin_factory)
        self.rng = pin_factory.rng

    def _get_clock_mode(self) -> int:
        return 0

    def transfer(self, data: list[int]) -> list[int]:
        if len(data) != 3 or data[0] != START:
            return [0] * len(data)
        level = self.rng.randrange(1024)
        return [0, level >> 8, level & 0xFF]


class SimulatedFactory(MockFactory):  # type: ignore[misc]  # gpiozero has no type stubs
    """gpiozero's mock factory, with the simulated chip on its hardware SPI port."""

    def __init__(self, rng: random.Random) -> None:
        super().__init__()
        self.rng = rng

    def _get_spi_class(self, shared: bool, hardware: bool) -> type:
        """One chip on the port; gpiozero's sharing of a bus between devices is moot."""
        return SimulatedMCP3008Port if hardware else super()._get_spi_class(shared, hardware)


class SimulatedSensor:
    """Random values around the seed's 75-85, read by gpiozero's real MCP3008 code."""

    name = "simulated"

    def __init__(self, seed: int | None = None) -> None:
        self.factory = use_pin_factory(SimulatedFactory(random.Random(seed)))
        self.adc = MCP3008(channel=0, **HARDWARE_SPI_PINS, pin_factory=self.factory)

    def read(self) -> float:
        return SIMULATED_RANGE.apply(self.adc.value)

    def close(self) -> None:
        self.adc.close()
        self.factory.close()


def open_simulated(settings: SensorSettings) -> SimulatedSensor:
    return SimulatedSensor()

"""The default driver: gpiozero's real MCP3008 code reading a simulated chip."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from gpiozero import MCP3008
from gpiozero.pins.mock import MockFactory, MockSPIDevice

from .pins import forget_pin_history, use_pin_factory

if TYPE_CHECKING:
    from ..settings import Settings

SIMULATED_LOW = 75.0
SIMULATED_HIGH = 85.0
# Bit-banged SPI on pins that are not the hardware SPI pins, so gpiozero goes straight
# to its software SPI on the mock factory instead of probing for spidev first.
SPI_PINS = {"clock_pin": 21, "mosi_pin": 20, "miso_pin": 19, "select_pin": 16}


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


def open_simulated(settings: Settings) -> SimulatedSensor:
    return SimulatedSensor()

"""Microchip MCP3xxx SPI ADCs (10, 12 and 13 bits) through gpiozero's own classes.

On the hardware SPI pins gpiozero uses the kernel's SPI device (dtparam=spi=on): with
the lgpio factory through lgpio itself, with rpigpio or native through spidev. Without
it gpiozero bit-bangs the bus, slower but correct, and says so in the log.
"""

from __future__ import annotations

import gpiozero
from gpiozero.pins import Factory

from zk_sensor.sensors.base import SensorSettings
from zk_sensor.sensors.catalog import MCP3XXX_CHANNELS
from zk_sensor.sensors.pins import forget_pin_history, hardware_pin_factory, warnings_logged
from zk_sensor.sensors.transforms import Calibration


class Mcp3xxxSensor:
    """value (0..1, -1..1 when differential) * scale + offset, or, with sensor_vref set,
    the input's voltage * scale + offset."""

    def __init__(self, settings: SensorSettings, factory: Factory) -> None:
        self.name = settings.sensor
        self.factory = factory
        options: dict[str, object] = {}
        if MCP3XXX_CHANNELS[self.name] > 1:
            options.update(channel=settings.sensor_channel,
                           differential=settings.sensor_differential)
        if settings.sensor_vref is not None:
            options.update(max_voltage=settings.sensor_vref)
        chip = getattr(gpiozero, self.name.upper())
        with warnings_logged(self.name):
            self.adc = chip(**options, pin_factory=factory)
        self.in_volts = settings.sensor_vref is not None
        self.calibration = Calibration.of(settings)

    def read(self) -> float:
        try:
            return self.calibration.apply(self.adc.voltage if self.in_volts else self.adc.value)
        finally:
            forget_pin_history(self.factory)

    def close(self) -> None:
        self.adc.close()
        self.factory.close()


def open_mcp3xxx(settings: SensorSettings) -> Mcp3xxxSensor:
    return Mcp3xxxSensor(settings, hardware_pin_factory(settings.pin_factory, settings.sensor))

"""The arithmetic between the number a device gives and the one a node publishes, kept
in one place (as gpiozero keeps its value conversions in tools.py) so that calibration
and plausibility mean the same for every driver, and a fix to either reaches them all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from zk_sensor.sensors.base import Sensor, SensorError, SensorSettings, min_read_time


@dataclass(frozen=True)
class Calibration:
    """A linear map from what a device gives to what a node publishes: the operator's
    (sensor_scale, sensor_offset) corrects a probe's known error or changes the unit (°C
    to °F is 1.8 and 32); the simulation's spreads its chip's 0..1 over a fixed range.
    loadavg and disk publish what the machine counts, uncalibrated."""

    scale: float = 1.0
    offset: float = 0.0

    @classmethod
    def of(cls, settings: SensorSettings) -> Calibration:
        return cls(settings.sensor_scale, settings.sensor_offset)

    def apply(self, value: float) -> float:
        return value * self.scale + self.offset


class Bounded:
    """A driver whose readings outside sensor_min..sensor_max fail: a loose probe or a
    shorted input still gives a number, and only the operator knows which numbers are
    impossible for this sensor. Applied by the loader around any driver, plug-ins
    included, after the driver's own calibration."""

    def __init__(self, sensor: Sensor, low: float | None, high: float | None) -> None:
        self.sensor = sensor
        self.name = sensor.name
        self.low = -math.inf if low is None else low
        self.high = math.inf if high is None else high
        self.min_read_time = min_read_time(sensor)

    def read(self) -> float:
        value = float(self.sensor.read())
        if value < self.low or value > self.high:
            raise SensorError(f"reading {value:g} is outside sensor_min..sensor_max "
                              f"({self.low:g}..{self.high:g})")
        return value

    def close(self) -> None:
        self.sensor.close()

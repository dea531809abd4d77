"""Sensors timed on plain GPIO pins: an HC-SR04 ultrasonic rangefinder and an LDR with
a capacitor.

gpiozero samples both continuously in a background thread of the device and reports
the median of its recent samples; close() stops that thread. The first read waits for
the first full set of samples (about a second). An HC-SR04 that never echoes keeps that
first read waiting: the daemon's reading deadline skips it. One that stops echoing later
keeps its last median (gpiozero warns `no echo received`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gpiozero import DistanceSensor, LightSensor
from gpiozero.pins import Factory

from .pins import hardware_pin_factory, warnings_logged

if TYPE_CHECKING:
    from ..settings import Settings

# gpiozero caps distances at max_distance (default 1 m); an HC-SR04 ranges to 4 m.
HC_SR04_RANGE = 4.0


class Rangefinder:
    """HC-SR04: the distance in metres * scale + offset."""

    name = "distance"

    def __init__(self, settings: Settings, factory: Factory) -> None:
        self.factory = factory
        with warnings_logged(self.name):
            self.device = DistanceSensor(
                echo=settings.sensor_echo_pin, trigger=settings.sensor_trigger_pin,
                max_distance=HC_SR04_RANGE, pin_factory=factory)
        self.scale = settings.sensor_scale
        self.offset = settings.sensor_offset

    def read(self) -> float:
        return self.device.distance * self.scale + self.offset

    def close(self) -> None:
        self.device.close()
        self.factory.close()


class LightLevel:
    """LDR and capacitor on one pin: the light level 0 (dark) .. 1 * scale + offset."""

    name = "light"

    def __init__(self, settings: Settings, factory: Factory) -> None:
        self.factory = factory
        with warnings_logged(self.name):
            self.device = LightSensor(settings.sensor_pin, pin_factory=factory)
        self.scale = settings.sensor_scale
        self.offset = settings.sensor_offset

    def read(self) -> float:
        return self.device.value * self.scale + self.offset

    def close(self) -> None:
        self.device.close()
        self.factory.close()


def open_distance(settings: Settings) -> Rangefinder:
    return Rangefinder(settings, hardware_pin_factory(settings.pin_factory, "distance"))


def open_light(settings: Settings) -> LightLevel:
    return LightLevel(settings, hardware_pin_factory(settings.pin_factory, "light"))

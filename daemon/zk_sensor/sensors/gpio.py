"""Sensors timed on plain GPIO pins: an HC-SR04 ultrasonic rangefinder and an LDR with
a capacitor.

gpiozero samples both continuously in a background thread of the device and reports
the median of its recent samples; close() stops that thread. The first read waits for
the first full set of samples (about a second). An HC-SR04 that never echoes keeps that
first read waiting: the daemon's reading deadline skips it. gpiozero keeps the median of
the last echoes it got when a sensor stops echoing later, so the driver notes when the
last echo came and fails a read when none came for ECHO_STALE seconds.
"""

from __future__ import annotations

import time

from gpiozero import DistanceSensor, LightSensor
from gpiozero.pins import Factory

from zk_sensor.sensors.base import SensorError, SensorSettings
from zk_sensor.sensors.pins import hardware_pin_factory, warnings_logged
from zk_sensor.sensors.transforms import Calibration

# gpiozero caps distances at max_distance (default 1 m); an HC-SR04 ranges to 4 m.
HC_SR04_RANGE = 4.0
# gpiozero samples every 60 ms plus the echo (up to 24 ms at 4 m) or its 100 ms wait
# for one: this is several samples without an echo, however fast the node reads.
ECHO_STALE = 0.5


class EchoTimedSensor(DistanceSensor):  # type: ignore[misc]  # gpiozero has no type stubs
    """gpiozero's DistanceSensor, noting when its sampling thread last measured an echo."""

    def __init__(self, *, echo: str, trigger: str, max_distance: float,
                 pin_factory: Factory) -> None:
        self._last_echo = time.monotonic()
        super().__init__(echo=echo, trigger=trigger, max_distance=max_distance,
                         pin_factory=pin_factory)

    def _read(self) -> float | None:
        value: float | None = super()._read()
        if value is not None:
            self._last_echo = time.monotonic()
        return value

    @property
    def last_echo(self) -> float:
        return self._last_echo


class Rangefinder:
    """HC-SR04: the distance in metres * scale + offset."""

    name = "distance"

    def __init__(self, settings: SensorSettings, factory: Factory) -> None:
        self.factory = factory
        with warnings_logged(self.name):
            self.device = EchoTimedSensor(
                echo=settings.sensor_echo_pin, trigger=settings.sensor_trigger_pin,
                max_distance=HC_SR04_RANGE, pin_factory=factory)
        self.calibration = Calibration.of(settings)

    def read(self) -> float:
        """The median of the last echoes, unless they are stale: the first read waits (in
        gpiozero) for a full set, a later one never waits."""
        distance = self.device.distance
        silent = time.monotonic() - self.device.last_echo
        if silent > ECHO_STALE:
            raise SensorError(f"no echo for {silent:.1f} s: is the HC-SR04 powered and its "
                              "echo wired?")
        return self.calibration.apply(distance)

    def close(self) -> None:
        self.device.close()
        self.factory.close()


class LightLevel:
    """LDR and capacitor on one pin: the light level 0 (dark) .. 1 * scale + offset."""

    name = "light"

    def __init__(self, settings: SensorSettings, factory: Factory) -> None:
        self.factory = factory
        with warnings_logged(self.name):
            self.device = LightSensor(settings.sensor_pin, pin_factory=factory)
        self.calibration = Calibration.of(settings)

    def read(self) -> float:
        return self.calibration.apply(self.device.value)

    def close(self) -> None:
        self.device.close()
        self.factory.close()


def open_distance(settings: SensorSettings) -> Rangefinder:
    return Rangefinder(settings, hardware_pin_factory(settings.pin_factory, "distance"))


def open_light(settings: SensorSettings) -> LightLevel:
    return LightLevel(settings, hardware_pin_factory(settings.pin_factory, "light"))

"""What every driver is to the daemon, built-in or plug-in: a name, read() and close()."""

import math
from typing import ClassVar, Protocol


class SensorError(RuntimeError):
    """A reading that failed; the round goes on without it."""

    exit_status: ClassVar[int] = 1


class SensorUnavailable(SensorError):
    """A driver whose library or device is missing: restarting cannot fix it, so the
    daemon exits 2, which systemd's RestartPreventExitStatus=2 leaves stopped."""

    exit_status: ClassVar[int] = 2


class Sensor(Protocol):
    name: str

    def read(self) -> float: ...

    def close(self) -> None: ...


class Bounded:
    """A driver whose readings outside sensor_min..sensor_max fail: a loose probe or a
    shorted input still gives a number, and only the operator knows which numbers are
    impossible for this sensor."""

    def __init__(self, sensor: Sensor, low: float | None, high: float | None) -> None:
        self.sensor = sensor
        self.name = sensor.name
        self.low = -math.inf if low is None else low
        self.high = math.inf if high is None else high

    def read(self) -> float:
        value = float(self.sensor.read())
        if value < self.low or value > self.high:
            raise SensorError(f"reading {value:g} is outside sensor_min..sensor_max "
                              f"({self.low:g}..{self.high:g})")
        return value

    def close(self) -> None:
        self.sensor.close()


def take_reading(sensor: Sensor) -> float:
    """A finite number, or SensorError: a broken reading never reaches ZooKeeper."""
    try:
        value = float(sensor.read())
    except Exception as error:
        raise SensorError(f"{sensor.name} sensor failed: {error}") from error
    if not math.isfinite(value):
        raise SensorError(f"{sensor.name} sensor returned {value!r}, not a finite number")
    return value

"""What every driver is to the daemon, built-in or plug-in (a name, read() and close()),
and what the daemon is to every driver (the settings it reads)."""

import math
from typing import ClassVar, Protocol

# A read gets this share of the sampling period; the rest leaves room for a release that
# reached the device late and for the publish, so a reading that meets its deadline
# still lands before the leader closes the round.
READ_SHARE = 0.5


class SensorError(RuntimeError):
    """A reading that failed; the round goes on without it."""

    exit_status: ClassVar[int] = 1


class SensorUnavailable(SensorError):
    """A driver whose library or device is missing: restarting cannot fix it, so the
    daemon exits 2, which systemd's RestartPreventExitStatus=2 leaves stopped."""

    exit_status: ClassVar[int] = 2


class Sensor(Protocol):
    """A driver may also declare `min_read_time` (seconds): the shortest time a read
    can take (a DS18B20's conversion), which the reading deadline never goes below."""

    name: str

    def read(self) -> float: ...

    def close(self) -> None: ...


class SensorSettings(Protocol):
    """The node's settings as far as the drivers and their checks go: declared here, not
    imported, so that sensors/ stays below the node, and read-only, so that the node's
    frozen dataclass matches by its attribute names alone. A plug-in's factory receives
    that same object."""

    # Which driver, how often, and the operator's calibration and bounds.
    @property
    def sensor(self) -> str: ...
    @property
    def sampling_period(self) -> float: ...
    @property
    def sensor_scale(self) -> float: ...
    @property
    def sensor_offset(self) -> float: ...
    @property
    def sensor_min(self) -> float | None: ...
    @property
    def sensor_max(self) -> float | None: ...
    # Each read by one family of drivers: pins (MCP3xxx, HC-SR04, LDR), files, disk.
    @property
    def pin_factory(self) -> str: ...
    @property
    def sensor_channel(self) -> int: ...
    @property
    def sensor_differential(self) -> bool: ...
    @property
    def sensor_vref(self) -> float | None: ...
    @property
    def sensor_pin(self) -> str: ...
    @property
    def sensor_trigger_pin(self) -> str: ...
    @property
    def sensor_echo_pin(self) -> str: ...
    @property
    def sensor_file(self) -> str: ...
    @property
    def w1_device(self) -> str: ...
    @property
    def disk_path(self) -> str: ...


def take_reading(sensor: Sensor) -> float:
    """A finite number, or SensorError: a broken reading never reaches ZooKeeper."""
    try:
        value = float(sensor.read())
    except Exception as error:
        raise SensorError(f"{sensor.name} sensor failed: {error}") from error
    if not math.isfinite(value):
        raise SensorError(f"{sensor.name} sensor returned {value!r}, not a finite number")
    return value


def min_read_time(sensor: object) -> float:
    """What the driver declares, 0 for a driver (a plug-in) that declares nothing."""
    return float(getattr(sensor, "min_read_time", 0.0))


def read_deadline(period: float, least: float = 0.0) -> float:
    """Seconds a read may take: READ_SHARE of the live period (so `config set
    sampling_period` moves it too), never less than the driver's minimum read time."""
    return max(READ_SHARE * period, least)


def period_too_short(sensor: str, period: float, least: float) -> str | None:
    """Why a sampling period cannot work for a driver whose reads take `least` seconds:
    every read would miss its deadline and the node would never publish."""
    if READ_SHARE * period >= least:
        return None
    return (f"sampling_period {period:g} s is too short for sensor {sensor}: a read may take "
            f"{READ_SHARE:.0%} of the period and needs {least:g} s; use at least "
            f"{least / READ_SHARE:g} s")

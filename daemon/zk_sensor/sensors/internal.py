"""gpiozero's internal devices: values the machine itself provides, no pins involved
(hence the mock pin factory, which gpiozero needs all the same)."""

from __future__ import annotations

from pathlib import Path

from gpiozero import CPUTemperature, DiskUsage, LoadAverage
from gpiozero.pins.mock import MockFactory

from zk_sensor.sensors.base import SensorSettings, SensorUnavailable
from zk_sensor.sensors.pins import use_pin_factory
from zk_sensor.sensors.transforms import Calibration


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


class CpuTemperatureSensor:
    """The SoC's temperature in °C * scale + offset, from a thermal zone in sysfs; the
    file is opened and closed by each read (gpiozero keeps nothing open)."""

    name = "cpu_temperature"

    def __init__(self, sensor_file: str, calibration: Calibration) -> None:
        self.factory = use_pin_factory(MockFactory())
        self.device = CPUTemperature(sensor_file=sensor_file, pin_factory=self.factory)
        self.calibration = calibration

    def read(self) -> float:
        return self.calibration.apply(self.device.temperature)

    def close(self) -> None:
        self.device.close()
        self.factory.close()


def open_loadavg(settings: SensorSettings) -> LoadAverageSensor:
    return LoadAverageSensor()


def open_disk(settings: SensorSettings) -> DiskUsageSensor:
    return DiskUsageSensor(settings.disk_path)


def open_cpu_temperature(settings: SensorSettings) -> CpuTemperatureSensor:
    if not Path(settings.sensor_file).is_file():
        raise SensorUnavailable(f"sensor_file {settings.sensor_file} does not exist: "
                                "the thermal zones of this machine are in /sys/class/thermal")
    return CpuTemperatureSensor(settings.sensor_file, Calibration.of(settings))

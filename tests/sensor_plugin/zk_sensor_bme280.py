"""A zk-sensor plug-in: a Bosch BME280's temperature, over I2C through smbus2.

The contract with zk-sensor: the entry point (group `zk_sensor.sensors`, name `bme280`)
is a factory called with zk-sensor's settings (the attributes of
zk_sensor.sensors.SensorSettings), returning an object with `name`,
`read() -> float` (one reading; any exception is a failed reading) and `close()`.
ImportError (a missing library) or FileNotFoundError/PermissionError (a missing device)
from the factory stop the node with exit status 2; anything else with 1.
"""

from __future__ import annotations

import struct
import time
from typing import TYPE_CHECKING

from smbus2 import SMBus

if TYPE_CHECKING:
    from zk_sensor.sensors import SensorSettings

BUS = 1  # /dev/i2c-1, the header's I2C on a Raspberry Pi (dtparam=i2c_arm=on)
ADDRESS = 0x76  # SDO to ground; 0x77 with SDO high
CHIP_ID = 0x60
REG_CHIP_ID = 0xD0
REG_CALIBRATION_T = 0x88  # dig_T1 (unsigned), dig_T2, dig_T3 (signed), little-endian
REG_CTRL_MEAS = 0xF4
REG_TEMPERATURE = 0xFA  # msb, lsb, xlsb (upper nibble): 20 bits
FORCED_TEMPERATURE_ONLY = 0b001_000_01  # temperature x1, pressure skipped, forced mode
CONVERSION_TIME = 0.01  # s; the datasheet's maximum for this setting is 3.55 ms


class Bme280:
    """The temperature in °C * scale + offset, one forced conversion a reading, so the
    chip sleeps between rounds."""

    name = "bme280"

    def __init__(self, bus: SMBus, address: int, scale: float, offset: float) -> None:
        chip = bus.read_byte_data(address, REG_CHIP_ID)
        if chip != CHIP_ID:
            raise LookupError(f"the chip at I2C address 0x{address:02x} is not a BME280 "
                              f"(id 0x{chip:02x})")
        self.bus = bus
        self.address = address
        self.calibration = struct.unpack(
            "<Hhh", bytes(bus.read_i2c_block_data(address, REG_CALIBRATION_T, 6)))
        self.scale = scale
        self.offset = offset

    def read(self) -> float:
        self.bus.write_byte_data(self.address, REG_CTRL_MEAS, FORCED_TEMPERATURE_ONLY)
        time.sleep(CONVERSION_TIME)
        msb, lsb, xlsb = self.bus.read_i2c_block_data(self.address, REG_TEMPERATURE, 3)
        raw = (msb << 12) | (lsb << 4) | (xlsb >> 4)
        return compensate_temperature(raw, *self.calibration) * self.scale + self.offset

    def close(self) -> None:
        self.bus.close()


def compensate_temperature(raw: int, t1: int, t2: int, t3: int) -> float:
    """The datasheet's floating-point formula (BME280 datasheet, section 8.1)."""
    var1 = (raw / 16384.0 - t1 / 1024.0) * t2
    var2 = (raw / 131072.0 - t1 / 8192.0) ** 2 * t3
    return (var1 + var2) / 5120.0


def open_bme280(settings: SensorSettings) -> Bme280:
    return Bme280(SMBus(BUS), ADDRESS, settings.sensor_scale, settings.sensor_offset)

"""Sensor drivers without hardware: gpiozero's mock pins (a fake MCP3xxx on the SPI pins,
a trigger pin that echoes, charging pins), fake sysfs files, the example plug-in laid
out as pip would, and the operator's --read-once and --check-config as real processes."""

import os
import shutil
import struct
import subprocess
import sys
import threading
import time
import tomllib
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockChargingPin, MockFactory, MockSPIDevice, MockTriggerPin

from zk_sensor.node.settings import Settings, SettingsError, build_settings
from zk_sensor.sensors import (
    Sensor,
    SensorError,
    SensorUnavailable,
    open_sensor,
    read_once,
    take_reading,
)
from zk_sensor.sensors.catalog import BUILTIN, MCP3XXX_CHANNELS
from zk_sensor.sensors.gpio import LightLevel, Rangefinder
from zk_sensor.sensors.mcp3xxx import Mcp3xxxSensor
from zk_sensor.sensors.pins import use_pin_factory

BIN = Path(sys.executable).parent
PLUGIN = Path(__file__).parent / "sensor_plugin"
SPEED_OF_SOUND = 343.26  # m/s, gpiozero's
W1_ID = "28-0316a2795d1f"
W1_GOOD = "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n"
W1_BAD_CRC = "72 01 4b 46 7f ff 0e 10 57 : crc=ff NO\n72 01 4b 46 7f ff 0e 10 57 t=23125\n"
# A bus held low: nine zero bytes, whose CRC is zero too, so the kernel says YES.
W1_ALL_ZERO = "00 00 00 00 00 00 00 00 00 : crc=00 YES\n00 00 00 00 00 00 00 00 00 t=0\n"
W1_POWER_ON = "50 05 4b 46 7f ff 0c 10 1c : crc=1c YES\n50 05 4b 46 7f ff 0c 10 1c t=85000\n"


def settings(**values: object) -> Settings:
    """Settings as the daemon builds them, checks and text-to-type conversions included."""
    return build_settings({"node_id": "1", **values}, {}, None)


def one_line(text: str) -> bool:
    return len(text.strip().splitlines()) == 1


@pytest.fixture
def opened() -> Iterator[list[Sensor]]:
    """Sensors to close after the test, whatever it asserted."""
    sensors: list[Sensor] = []
    yield sensors
    for sensor in reversed(sensors):
        sensor.close()


# --- MCP3xxx on gpiozero's mock SPI pins ----------------------------------------------

RESOLUTION = {"30": 10, "32": 12, "33": 12}  # gpiozero's `bits` per family
SINGLE_INPUT_SHIFT = {"mcp3001": 3, "mcp3201": 1, "mcp3301": 0}


class FakeMcp3xxx(MockSPIDevice):
    """The chip side of gpiozero's MCP3xxx conversations on the hardware SPI pins: it
    decodes the mode and channel asked for and answers codes[single_ended, channel]."""

    def __init__(self, factory: MockFactory, chip: str, codes: dict[tuple[bool, int], int]):
        super().__init__(clock_pin=11, mosi_pin=10, miso_pin=9, select_pin=8,
                         pin_factory=factory)
        self.chip, self.codes = chip, codes
        self.asked: list[tuple[bool, int]] = []
        self.stage = "idle"
        bits = RESOLUTION[chip[3:5]]
        if chip.startswith("mcp33"):
            self.command_bits, self.answer_bits = 4, bits + 3
        elif MCP3XXX_CHANNELS[chip] == 2:  # single/diff, odd/sign, MSB first
            self.command_bits, self.answer_bits = 3, bits + 1
        else:  # single/diff, three channel bits
            self.command_bits, self.answer_bits = 4, bits + 2

    def on_start(self) -> None:
        super().on_start()
        self.stage = "idle"
        if self.chip in SINGLE_INPUT_SHIFT:  # no command: 16 clocks of answer
            self.tx_word((self.codes[True, 0] & 0x1FFF) << SINGLE_INPUT_SHIFT[self.chip], 16)

    def on_bit(self) -> None:
        if self.chip in SINGLE_INPUT_SHIFT or self.stage == "answer":
            return
        if self.stage == "idle":
            if self.rx_buf[-1]:
                self.stage, self.rx_buf = "command", []
            return
        if len(self.rx_buf) == self.command_bits:
            single = bool(self.rx_buf[0])
            channel_bits = self.rx_buf[1:2] if self.command_bits == 3 else self.rx_buf[1:]
            channel = int("".join(str(int(bit)) for bit in channel_bits), 2)
            self.asked.append((single, channel))
            self.stage = "answer"
            mask = (1 << self.answer_bits) - 1
            self.tx_word(self.codes[single, channel] & mask, self.answer_bits)


def codes_by_channel(offset: int) -> dict[tuple[bool, int], int]:
    return {(single, channel): offset + 97 * channel + (0 if single else 31)
            for single in (True, False) for channel in range(8)}


def fake_mcp(opened: list[Sensor], chip: str, codes: dict[tuple[bool, int], int],
             **values: object) -> tuple[Mcp3xxxSensor, FakeMcp3xxx]:
    factory = use_pin_factory(MockFactory())
    fake = FakeMcp3xxx(factory, chip, codes)  # before the ADC claims the pins
    sensor = Mcp3xxxSensor(settings(sensor=chip, pin_factory="mock", **values), factory)
    opened.append(sensor)
    return sensor, fake


def level(chip: str, code: int) -> float:
    """gpiozero's value for a code, near code / 2**bits (-1..1 for a signed code)."""
    return code / 2 ** RESOLUTION[chip[3:5]]


@pytest.mark.parametrize("chip", sorted(MCP3XXX_CHANNELS))
def test_every_mcp3xxx_reads_its_last_channel_scaled(opened: list[Sensor], chip: str) -> None:
    channel = MCP3XXX_CHANNELS[chip] - 1
    codes = codes_by_channel(100)
    sensor, fake = fake_mcp(opened, chip, codes, sensor_channel=channel, sensor_scale=10.0,
                            sensor_offset=1.0)
    code = codes[True, channel]
    assert take_reading(sensor) == pytest.approx(level(chip, code) * 10 + 1, abs=0.02)
    assert fake.asked == ([] if chip in SINGLE_INPUT_SHIFT else [(True, channel)])


@pytest.mark.parametrize(("chip", "channel", "code"),
                         [("mcp3002", 1, 300), ("mcp3208", 5, 1234), ("mcp3304", 2, -1500)])
def test_differential_mode_is_asked_for_and_signed_where_the_chip_is(
        opened: list[Sensor], chip: str, channel: int, code: int) -> None:
    sensor, fake = fake_mcp(opened, chip, {(False, channel): code}, sensor_channel=channel,
                            sensor_differential=True)
    assert take_reading(sensor) == pytest.approx(level(chip, code), abs=0.002)
    assert fake.asked == [(False, channel)]


def test_with_a_vref_the_reading_is_the_input_voltage(opened: list[Sensor]) -> None:
    sensor, _ = fake_mcp(opened, "mcp3008", {(True, 0): 512}, sensor_vref=5.0,
                         sensor_scale=2.0, sensor_offset=0.5)
    assert take_reading(sensor) == pytest.approx(2.5 * 2 + 0.5, abs=0.02)


@pytest.mark.parametrize("chip", sorted(MCP3XXX_CHANNELS))
def test_every_mcp3xxx_opens_on_the_named_mock_factory(chip: str) -> None:
    """What tests/test_fleet.py relies on: nothing on the bus, scale 0, exactly the offset."""
    sensor = open_sensor(settings(sensor=chip, pin_factory="mock", sensor_scale=0.0,
                                  sensor_offset=42.5))
    try:
        assert take_reading(sensor) == 42.5
    finally:
        sensor.close()


@pytest.mark.parametrize(("values", "complaint"), [
    ({"sensor": "mcp3004", "sensor_channel": 4}, "channels 0..3"),
    ({"sensor": "mcp3202", "sensor_channel": -1}, "channels 0..1"),
    ({"sensor": "mcp3001", "sensor_channel": 1}, "single input"),
    ({"sensor": "mcp3301", "sensor_differential": True}, "single input"),
    ({"sensor": "mcp3008", "sensor_vref": 0.0}, "sensor_vref 0 must be positive"),
    ({"sensor": "distance", "sensor_trigger_pin": "23"}, "needs sensor_echo_pin"),
    ({"sensor": "distance", "sensor_trigger_pin": "23", "sensor_echo_pin": "23"}, "different"),
    ({"sensor": "light"}, "needs sensor_pin"),
    ({"sensor": "ds18b20"}, "needs w1_device"),
    ({"sensor_min": 10.0, "sensor_max": 10.0}, "sensor_min 10 must be below sensor_max 10"),
])
def test_sensor_settings_are_checked_without_hardware(values: dict, complaint: str) -> None:
    with pytest.raises(SettingsError, match=complaint) as refused:
        settings(**values)
    assert one_line(str(refused.value))


def test_flags_and_optional_numbers_come_from_file_and_environment(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text('id = "1"\nsensor = "mcp3208"\nsensor_differential = true\n'
                      "sensor_vref = 3.3\nsensor_min = -5\n")
    from_file = build_settings({}, {}, str(config))
    assert (from_file.sensor_differential, from_file.sensor_vref, from_file.sensor_min,
            from_file.sensor_max) == (True, 3.3, -5.0, None)
    env = {"ZK_SENSOR_SENSOR_DIFFERENTIAL": "no", "ZK_SENSOR_SENSOR_MIN": ""}
    overridden = build_settings({}, env, str(config))
    assert (overridden.sensor_differential, overridden.sensor_min) == (False, None)
    with pytest.raises(SettingsError, match="not true or false"):
        build_settings({}, {"ZK_SENSOR_SENSOR_DIFFERENTIAL": "maybe"}, str(config))
    with pytest.raises(SettingsError, match="not a finite number"):
        build_settings({}, {"ZK_SENSOR_SENSOR_MAX": "inf"}, str(config))


# --- Pins timed by gpiozero: HC-SR04 and LDR ------------------------------------------

def threads_settle(before: set[threading.Thread]) -> bool:
    deadline = time.monotonic() + 2.0
    while set(threading.enumerate()) - before and time.monotonic() < deadline:
        time.sleep(0.02)
    return not set(threading.enumerate()) - before


def test_distance_is_half_the_echo_time_at_the_speed_of_sound(opened: list[Sensor]) -> None:
    before = set(threading.enumerate())
    factory = use_pin_factory(MockFactory())
    echo = factory.pin(24)
    factory.pin(23, pin_class=MockTriggerPin, echo_pin=echo, echo_time=0.01)
    sensor = Rangefinder(settings(sensor="distance", sensor_trigger_pin="23",
                                  sensor_echo_pin="GPIO24", sensor_scale=100.0), factory)
    try:
        centimetres = take_reading(sensor)
    finally:
        sensor.close()
    assert centimetres == pytest.approx(0.01 * SPEED_OF_SOUND / 2 * 100, rel=0.25)
    assert threads_settle(before), "gpiozero's sampling thread outlived close()"


@pytest.mark.parametrize(("charge_time", "dark"), [(0.001, False), (1.0, True)])
def test_light_is_how_fast_the_capacitor_charges(charge_time: float, dark: bool) -> None:
    before = set(threading.enumerate())
    factory = use_pin_factory(MockFactory())
    factory.pin(18, pin_class=MockChargingPin, charge_time=charge_time)
    sensor = LightLevel(settings(sensor="light", sensor_pin="18", sensor_scale=100.0,
                                 sensor_offset=-1.0), factory)
    try:
        reading = take_reading(sensor)
    finally:
        sensor.close()
    if dark:  # never charged within gpiozero's 10 ms: exactly 0, so exactly the offset
        assert reading == -1.0
    else:
        assert -1.0 < reading <= 99.0
    assert threads_settle(before), "gpiozero's sampling thread outlived close()"


# --- gpiozero's internal devices ------------------------------------------------------

def test_cpu_temperature_reads_its_thermal_zone_file(tmp_path: Path) -> None:
    zone = tmp_path / "temp"
    zone.write_text("48312\n")
    sensor = open_sensor(settings(sensor="cpu_temperature", sensor_file=str(zone),
                                  sensor_scale=1.8, sensor_offset=32.0))
    try:
        assert take_reading(sensor) == pytest.approx(48.312 * 1.8 + 32)
    finally:
        sensor.close()
    assert settings(sensor="cpu_temperature").sensor_file == \
        "/sys/class/thermal/thermal_zone0/temp"


def test_a_missing_thermal_zone_is_a_missing_device(tmp_path: Path) -> None:
    with pytest.raises(SensorUnavailable, match="does not exist") as missing:
        open_sensor(settings(sensor="cpu_temperature", sensor_file=str(tmp_path / "temp")))
    assert missing.value.exit_status == 2 and one_line(str(missing.value))


@pytest.mark.parametrize("name", ["loadavg", "disk"])
def test_load_and_disk_still_read_this_machine(tmp_path: Path, name: str) -> None:
    sensor = open_sensor(settings(sensor=name, disk_path=str(tmp_path)))
    try:
        assert 0 <= take_reading(sensor) <= (100 if name == "disk" else 10_000)
    finally:
        sensor.close()


# --- DS18B20 on a fake w1 sysfs -------------------------------------------------------

def w1_device(tmp_path: Path, text: str) -> Path:
    device = tmp_path / W1_ID
    device.mkdir()
    (device / "w1_slave").write_text(text)
    return device


def open_ds18b20(device: Path, **values: object) -> Sensor:
    return open_sensor(settings(sensor="ds18b20", w1_device=str(device), **values))


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize(("text", "celsius"), [
    (W1_GOOD, 23.125),
    (W1_GOOD.replace("t=23125", "t=-1250"), -1.25),
    (W1_GOOD.replace("t=23125", "t=0"), 0.0),
])
def test_ds18b20_reads_millidegrees_after_a_good_crc(tmp_path: Path, text: str,
                                                    celsius: float) -> None:
    assert take_reading(open_ds18b20(w1_device(tmp_path, text))) == celsius


@pytest.mark.parametrize(("text", "complaint"), [
    (W1_BAD_CRC, "CRC check failed"),
    (W1_POWER_ON, "85.0 °C is the DS18B20's power-on value"),
    (W1_GOOD.replace("t=23125", "t="), "no temperature"),
    ("", "CRC check failed"),
    (W1_ALL_ZERO, "the scratchpad is all zeros"),
])
def test_ds18b20_bad_crc_power_on_value_and_garbage_are_failed_readings(
        tmp_path: Path, text: str, complaint: str) -> None:
    sensor = open_ds18b20(w1_device(tmp_path, text))
    with pytest.raises(SensorError, match=complaint) as failed:
        take_reading(sensor)
    assert one_line(str(failed.value)) and not isinstance(failed.value, SensorUnavailable)


def test_ds18b20_keeps_no_file_open_between_reads(tmp_path: Path) -> None:
    device = w1_device(tmp_path, W1_GOOD)
    sensor = open_ds18b20(device)
    before = open_descriptors()
    for _ in range(20):
        take_reading(sensor)
    (device / "w1_slave").write_text(W1_BAD_CRC)
    with pytest.raises(SensorError):
        take_reading(sensor)
    sensor.close()
    assert open_descriptors() == before


def test_a_w1_device_that_is_not_a_thermometer_is_refused_at_open(tmp_path: Path) -> None:
    (tmp_path / W1_ID).mkdir()
    with pytest.raises(SensorUnavailable, match="no w1_slave") as refused:
        open_ds18b20(tmp_path / W1_ID)
    assert one_line(str(refused.value))


# --- Plausibility bounds --------------------------------------------------------------

@pytest.mark.parametrize(("values", "shown"), [
    ({"sensor_max": 20.0}, "(-inf..20)"),
    ({"sensor_min": 25.0}, "(25..inf)"),
    ({"sensor_min": -10.0, "sensor_max": 23.0}, "(-10..23)"),
])
def test_a_reading_outside_the_bounds_is_a_failed_reading(
        tmp_path: Path, values: dict, shown: str) -> None:
    sensor = open_ds18b20(w1_device(tmp_path, W1_GOOD), **values)
    with pytest.raises(SensorError) as failed:
        take_reading(sensor)
    message = str(failed.value)
    assert "reading 23.125 is outside sensor_min..sensor_max" in message and shown in message
    assert one_line(message)


def test_a_reading_inside_the_bounds_passes(tmp_path: Path) -> None:
    sensor = open_ds18b20(w1_device(tmp_path, W1_GOOD), sensor_min=-55.0, sensor_max=125.0)
    assert take_reading(sensor) == 23.125


def test_read_once_gives_up_on_a_read_that_hangs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stands in for a driver stuck in the kernel: the operator's command still answers."""

    class Stuck:
        name = "stuck"

        def read(self) -> float:
            time.sleep(5)
            return 0.0

        def close(self) -> None:
            return None

    monkeypatch.setattr("zk_sensor.sensors.loader.open_sensor", lambda _: Stuck())
    started = time.monotonic()
    with pytest.raises(SensorError, match=r"no reading within 0\.2 s"):
        read_once(settings(), deadline=0.2)
    assert time.monotonic() - started < 2


# --- Plug-ins: the example BME280 package ---------------------------------------------

BME280_REGISTERS = {  # the datasheet's example: calibration and raw value for 25.08 °C
    0xD0: [0x60],
    0x88: list(struct.pack("<Hhh", 27504, 26435, -1000)),
    0xFA: [0x7E, 0xED, 0x00],
}


class FakeSMBus:
    """smbus2.SMBus with a BME280 at 0x76."""

    def __init__(self, bus: int) -> None:
        self.bus = bus
        self.registers = dict(BME280_REGISTERS)
        self.writes: list[tuple[int, int, int]] = []
        self.closed = False
        FAKE_BUSES.append(self)

    def read_byte_data(self, address: int, register: int) -> int:
        assert address == 0x76
        return self.registers[register][0]

    def read_i2c_block_data(self, address: int, register: int, length: int) -> list[int]:
        assert address == 0x76
        return self.registers[register][:length]

    def write_byte_data(self, address: int, register: int, value: int) -> None:
        self.writes.append((address, register, value))

    def close(self) -> None:
        self.closed = True


FAKE_BUSES: list[FakeSMBus] = []


def install_plugin(site: Path) -> Path:
    """The plug-in laid out as `pip install --target` would: its module and a .dist-info
    declaring the entry points of its own pyproject.toml; no build, no network."""
    project = tomllib.loads((PLUGIN / "pyproject.toml").read_text())["project"]
    name, version = project["name"], project["version"]
    dist_info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (dist_info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{key} = {target}\n" for key, target in entries.items())
        for group, entries in project["entry-points"].items()))
    shutil.copy(PLUGIN / "zk_sensor_bme280.py", site)
    return site


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The plug-in installed on sys.path, with a fake smbus2 (no I2C here)."""
    site = install_plugin(tmp_path / "site")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setitem(sys.modules, "smbus2", types.SimpleNamespace(SMBus=FakeSMBus))
    FAKE_BUSES.clear()
    yield site
    sys.modules.pop("zk_sensor_bme280", None)


def test_a_plugin_is_selected_by_its_entry_point_name(plugin: Path) -> None:
    sensor = open_sensor(settings(sensor="bme280", sensor_offset=-0.08))
    assert sensor.name == "bme280"
    assert take_reading(sensor) == pytest.approx(25.0825 - 0.08, abs=0.001)
    sensor.close()
    (bus,) = FAKE_BUSES
    assert bus.bus == 1 and bus.closed
    assert bus.writes == [(0x76, 0xF4, 0b001_000_01)]  # one forced conversion


def test_a_plugin_that_finds_another_chip_fails_to_open(
        plugin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(BME280_REGISTERS, 0xD0, [0x58])  # a BMP280
    with pytest.raises(SensorError, match="not a BME280") as refused:
        open_sensor(settings(sensor="bme280"))
    assert refused.value.exit_status == 1


def test_an_unknown_sensor_is_refused_listing_the_known_ones(plugin: Path) -> None:
    with pytest.raises(SettingsError) as refused:
        settings(sensor="bme208")
    message = str(refused.value)
    assert one_line(message) and "'bme208' is not a known driver" in message
    assert all(name in message for name in BUILTIN) and "plug-ins: bme280" in message


def test_without_the_plugin_its_name_is_unknown() -> None:
    with pytest.raises(SettingsError, match="'bme280' is not a known driver"):
        settings(sensor="bme280")


# --- The operator's checks, as real processes -----------------------------------------

def zk_sensor(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    clean = {key: value for key, value in os.environ.items() if not key.startswith("ZK_SENSOR_")}
    return subprocess.run([str(BIN / "zk-sensor"), *args], env={**clean, **(env or {})},
                          capture_output=True, text=True, timeout=60)


def node_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "zk-sensor.toml.tmp"
    path.write_text('id = "3"\nzookeeper = "127.0.0.1:1"\n' + text)
    return str(path)


def test_read_once_prints_one_reading_and_exits_0(tmp_path: Path) -> None:
    device = w1_device(tmp_path, W1_GOOD)
    result = zk_sensor("--read-once", "--config",
                       node_file(tmp_path, f'sensor = "ds18b20"\nw1_device = "{device}"\n'))
    assert (result.returncode, result.stdout, result.stderr) == (0, "23.125\n", "")
    mock = zk_sensor("--read-once", "--id", "3", "--sensor", "mcp3008", "--pin-factory", "mock",
                     "--sensor-scale", "0", "--sensor-offset", "7.5")
    assert (mock.returncode, mock.stdout) == (0, "7.5\n")


@pytest.mark.parametrize(("w1_slave", "extra", "status", "complaint"), [
    (W1_BAD_CRC, "", 1, "ds18b20 sensor failed: CRC check failed"),
    (W1_GOOD, "sensor_max = 20.0\n", 1, "reading 23.125 is outside"),
    (None, "", 1, "does not exist: is dtoverlay=w1-gpio"),
    (W1_GOOD, 'sensor_min = "low"\n', 2, "setting sensor_min='low' is not a number"),
])
def test_read_once_fails_with_one_line(tmp_path: Path, w1_slave: str | None, extra: str,
                                       status: int, complaint: str) -> None:
    device = w1_device(tmp_path, w1_slave) if w1_slave else tmp_path / W1_ID
    result = zk_sensor("--read-once", "--config", node_file(
        tmp_path, f'sensor = "ds18b20"\nw1_device = "{device}"\n{extra}'))
    assert result.returncode == status and result.stdout == ""
    assert complaint in result.stderr and one_line(result.stderr), result.stderr


def test_read_once_names_a_missing_pin_factory_library() -> None:
    if _importable("lgpio"):
        pytest.skip("lgpio is installed here")
    result = zk_sensor("--read-once", "--id", "3", "--sensor", "mcp3008")
    assert result.returncode == 2 and one_line(result.stderr)
    assert "sensor mcp3008 needs the lgpio pin factory: on Raspberry Pi OS apt install " \
           "python3-lgpio" in result.stderr


def _importable(module: str) -> bool:
    probe = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True)
    return probe.returncode == 0


def test_check_config_accepts_a_node_file_without_zookeeper_or_hardware(
        tmp_path: Path) -> None:
    started = time.monotonic()
    for text in ['sensor = "ds18b20"\nw1_device = "/sys/bus/w1/devices/28-absent"\n',
                 'sensor = "mcp3208"\nsensor_channel = 7\nsensor_differential = true\n'
                 'sensor_vref = 3.3\nsensor_min = 0\nsensor_max = 3.3\n',
                 'sensor = "distance"\nsensor_trigger_pin = 23\nsensor_echo_pin = 24\n']:
        result = zk_sensor("--check-config", "--config", node_file(tmp_path, text))
        warning = ("zk-sensor: warning: w1_device /sys/bus/w1/devices/28-absent does not exist "
                   "yet: the node will start and wait for it\n" if "28-absent" in text else "")
        assert (result.returncode, result.stdout, result.stderr) == (0, "ok\n", warning), text
    assert time.monotonic() - started < 30  # no connection attempt to 127.0.0.1:1


@pytest.mark.parametrize(("text", "env", "complaint"), [
    ('sensor = "bme280"\n', {}, "sensor 'bme280' is not a known driver (known: simulated"),
    ('sensor = "mcp3004"\nsensor_channel = 4\n', {}, "sensor_channel 4 does not exist"),
    ("", {"ZK_SENSOR_SENSOR_MIN": "5", "ZK_SENSOR_SENSOR_MAX": "1"}, "sensor_min 5 must be"),
    ('sensor = "light"\nsensor_pn = 18\n', {}, "unknown setting 'sensor_pn'"),
    ('sensor = "light"\n', {}, "sensor light needs sensor_pin"),
])
def test_check_config_refuses_with_one_line_and_exit_2(
        tmp_path: Path, text: str, env: dict[str, str], complaint: str) -> None:
    result = zk_sensor("--check-config", "--config", node_file(tmp_path, text), env=env)
    assert (result.returncode, result.stdout) == (2, "")
    assert complaint in result.stderr and one_line(result.stderr), result.stderr


def test_check_config_needs_the_node_id(tmp_path: Path) -> None:
    config = tmp_path / "no-id.toml"
    config.write_text('sensor = "loadavg"\n')
    result = zk_sensor("--check-config", "--config", str(config))
    assert result.returncode == 2 and one_line(result.stderr)


def test_a_plugin_is_known_to_check_config_and_its_missing_library_is_named(
        tmp_path: Path) -> None:
    site = install_plugin(tmp_path / "site")
    env = {"PYTHONPATH": str(site)}
    config = node_file(tmp_path, 'sensor = "bme280"\n')
    checked = zk_sensor("--check-config", "--config", config, env=env)
    assert (checked.returncode, checked.stdout) == (0, "ok\n"), checked.stderr
    if _importable("smbus2"):
        pytest.skip("smbus2 is installed here")
    result = zk_sensor("--read-once", "--config", config, env=env)
    assert result.returncode == 2 and one_line(result.stderr)
    assert "sensor bme280 needs the Python module smbus2" in result.stderr

"""How a node on a Raspberry Pi lives with its sensor's known failures (issue 20).

DS18B20s fall off the 1-Wire bus and come back, an HC-SR04 stops echoing, the operator
runs `--read-once` from a directory the service user cannot write, and some pin
factories do not work on a Pi 5 or on recent kernels. The w1 tests use a fake sysfs tree
in tmp_path, the GPIO ones gpiozero's mock pin factory, and what the daemon does is
watched on real processes.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory, MockTriggerPin

from zk_sensor.node.settings import Settings, SettingsError, build_settings
from zk_sensor.sensors import SensorError, board, open_sensor, take_reading
from zk_sensor.sensors.board import board_model, kernel_version, pin_factory_problem
from zk_sensor.sensors.gpio import Rangefinder
from zk_sensor.sensors.pins import likely_cause, use_pin_factory
from zk_sensor.testing.fleet import Fleet, status, wait_for

BIN = Path(sys.executable).parent
W1_ID = "28-0316a2795d1f"
W1_GOOD = "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n"
PI5 = "Raspberry Pi 5 Model B Rev 1.0"
PI4 = "Raspberry Pi 4 Model B Rev 1.5"


def settings(**values: object) -> Settings:
    return build_settings({"node_id": "1", **values}, {}, None)


def zk_sensor(*args: str, cwd: Path | None = None, shell_prefix: str = "",
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in os.environ.items() if not key.startswith("ZK_SENSOR_")}
    command = [str(BIN / "zk-sensor"), *args]
    if shell_prefix:
        command = ["sh", "-c", f'{shell_prefix} exec "$0" "$@"', *command]
    return subprocess.run(command, env={**clean, **(env or {})}, cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def one_line(text: str) -> bool:
    return len(text.strip().splitlines()) == 1


def plant_w1_device(parent: Path, conv_time: str | None = None) -> Path:
    device = parent / W1_ID
    device.mkdir()
    (device / "w1_slave").write_text(W1_GOOD)
    if conv_time is not None:
        (device / "conv_time").write_text(conv_time)
    return device


# --- DS18B20: the conversion time sets the shortest sampling period -------------------

def test_a_period_too_short_for_the_conversion_is_refused_in_one_line(tmp_path: Path) -> None:
    device = plant_w1_device(tmp_path)
    args = ("--id", "1", "--sensor", "ds18b20", "--w1-device", str(device),
            "--sampling-period", "1")
    for command in (("--check-config", *args), args):
        result = zk_sensor(*command)
        assert (result.returncode, result.stdout) == (2, ""), result.stderr
        assert one_line(result.stderr), result.stderr
        assert "sampling_period 1 s is too short for sensor ds18b20" in result.stderr
        assert "use at least 1.6 s" in result.stderr


def test_a_faster_resolution_allows_a_shorter_period(tmp_path: Path) -> None:
    device = plant_w1_device(tmp_path, conv_time="94\n")  # the kernel's 9-bit conversion
    result = zk_sensor("--check-config", "--id", "1", "--sensor", "ds18b20",
                       "--w1-device", str(device), "--sampling-period", "1")
    assert (result.returncode, result.stdout, result.stderr) == (0, "ok\n", "")


# --- DS18B20: a device that is missing at start or vanishes ---------------------------

def test_check_config_warns_of_a_missing_device_and_exits_0(tmp_path: Path) -> None:
    result = zk_sensor("--check-config", "--id", "1", "--sensor", "ds18b20",
                       "--w1-device", str(tmp_path / W1_ID))
    assert (result.returncode, result.stdout) == (0, "ok\n")
    assert result.stderr == (f"zk-sensor: warning: w1_device {tmp_path / W1_ID} does not "
                             "exist yet: the node will start and wait for it\n")


def test_a_vanished_device_is_a_failed_read_logged_once_until_it_is_back(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    device = plant_w1_device(tmp_path)
    sensor = open_sensor(settings(sensor="ds18b20", w1_device=str(device)))
    assert take_reading(sensor) == 23.125
    shutil.rmtree(device)
    with caplog.at_level(logging.INFO, logger="zk_sensor"):
        for _ in range(3):
            with pytest.raises(SensorError, match="does not exist: is dtoverlay=w1-gpio"):
                take_reading(sensor)
        plant_w1_device(tmp_path)
        assert take_reading(sensor) == 23.125
        assert take_reading(sensor) == 23.125
    assert [record.getMessage() for record in caplog.records] == [
        f"waiting for w1_device {device} to appear (is dtoverlay=w1-gpio in "
        "/boot/firmware/config.txt and the sensor wired?)",
        f"w1_device {device} is back",
    ]


def test_a_node_waits_for_its_device_and_publishes_once_it_appears(
        fleet: Fleet, tmp_path: Path) -> None:
    fleet.period = 2.0  # a 12-bit DS18B20 needs 1.6 s or more
    sysfs = tmp_path / "w1"
    sysfs.mkdir()
    device = sysfs / W1_ID
    node = fleet.start("1", "--sensor", "ds18b20", "--w1-device", str(device))
    node.wait_log(rf"waiting for w1_device {device} to appear")
    node.wait_log(r"reading for round \d+ skipped \(2 so far\): .*w1_device .* does not exist",
                  timeout=30)
    assert node.running, "the node exited instead of waiting for its device"

    plant_w1_device(sysfs)
    node.wait_log(rf"w1_device {device} is back", timeout=30)
    node.wait_log(r"ready: first reading published", timeout=30)
    assert device_of(fleet, "1")["value"] == 23.125

    shutil.rmtree(device)  # off the bus mid-run
    node.wait_log(rf"waiting for w1_device {device} to appear", count=2, timeout=30)
    failing = wait_for(lambda: failed_twice(device_of(fleet, "1")), 30,
                       "the failures to show on the reading znode")
    plant_w1_device(sysfs)
    node.wait_log(rf"w1_device {device} is back", count=2, timeout=30)
    wait_for(lambda: device_of(fleet, "1")["round"] > failing["round"], 30,
             "the node to publish again")
    assert node.running
    assert node.log().count("waiting for w1_device") == 2, "one line per disappearance"


def failed_twice(device: dict) -> dict:
    return device if device.get("failures", 0) >= 2 else {}


def device_of(fleet: Fleet, node_id: str) -> dict:
    devices = [d for d in status(fleet)["devices"] if d["node"] == node_id and "value" in d]
    return devices[0] if devices else {}


# --- HC-SR04: an echo that stops -------------------------------------------------------

@pytest.fixture
def rangefinder() -> Iterator[tuple[Rangefinder, MockTriggerPin]]:
    factory = use_pin_factory(MockFactory())
    echo = factory.pin(24)
    trigger = factory.pin(23, pin_class=MockTriggerPin, echo_pin=echo, echo_time=0.005)
    sensor = Rangefinder(settings(sensor="distance", sensor_trigger_pin="23",
                                  sensor_echo_pin="24"), factory)
    yield sensor, trigger
    sensor.close()


def test_an_hc_sr04_that_stops_echoing_fails_instead_of_repeating_its_median(
        rangefinder: tuple[Rangefinder, MockTriggerPin]) -> None:
    sensor, trigger = rangefinder
    assert take_reading(sensor) == pytest.approx(0.005 * 343.26 / 2, rel=0.5)
    echo = trigger.echo_pin
    trigger.echo_pin = sensor.factory.pin(25)  # the echo goes nowhere: a cut wire

    def fails() -> str:
        try:
            take_reading(sensor)
        except SensorError as error:
            return str(error)
        return ""

    complaint = wait_for(fails, 5, "a read to fail once echoes stopped")
    assert "no echo for" in complaint and one_line(complaint)
    assert fails(), "every read fails while there is no echo"
    trigger.echo_pin = echo
    wait_for(lambda: not fails(), 5, "readings to come back with the echo")


# --- --read-once from a directory the service user cannot write -----------------------

DRIVER = '''
from pathlib import Path


class PipeMaker:
    """Like lgpio: makes its notification pipe in the working directory."""

    name = "pipemaker"

    def __init__(self) -> None:
        Path(".lgd-nfy0").write_text("")

    def read(self) -> float:
        return 42.0

    def close(self) -> None:
        Path(".lgd-nfy0").unlink()


def open_pipemaker(settings):
    return PipeMaker()
'''


def install_pipemaker(site: Path) -> Path:
    dist_info = site / "pipemaker-1.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: pipemaker\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(
        "[zk_sensor.sensors]\npipemaker = zk_sensor_pipemaker:open_pipemaker\n")
    (site / "zk_sensor_pipemaker.py").write_text(DRIVER)
    return site


def test_read_once_works_from_a_directory_it_cannot_write(tmp_path: Path) -> None:
    """A removed working directory refuses every new file, even to root."""
    site = install_pipemaker(tmp_path / "site")
    gone = tmp_path / "gone"
    gone.mkdir()
    result = zk_sensor("--read-once", "--id", "1", "--sensor", "pipemaker",
                       cwd=gone, shell_prefix=f"rmdir {gone} &&",
                       env={"PYTHONPATH": str(site), "TMPDIR": str(tmp_path)})
    assert (result.returncode, result.stdout, result.stderr) == (0, "42.0\n", "")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["site"], \
        "the private directory is removed"


def test_a_failing_lgpio_names_the_unwritable_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    assert "lgpio makes its notification pipes in the working directory" in likely_cause("lgpio")
    monkeypatch.chdir(tmp_path)
    assert likely_cause("lgpio") == "is this a Raspberry Pi, and is zk-sensor in its gpio group?"


# --- pin factories that cannot work here ------------------------------------------------

@pytest.mark.parametrize(("factory", "sensor", "model", "release", "refused"), [
    ("rpigpio", "mcp3008", PI5, "6.6.51+rpt-rpi-2712", "does not work on a Raspberry Pi 5"),
    ("pigpio", "distance", PI5, "6.1.21-v8+", "does not work on a Raspberry Pi 5"),
    ("rpigpio", "distance", PI4, "6.6.51+rpt-rpi-v8", "cannot detect edges"),
    ("rpigpio", "light", PI4, "6.12.25+rpt-rpi-v8", "cannot detect edges"),
    ("rpigpio", "distance", PI4, "6.1.21-v8+", None),
    ("rpigpio", "mcp3008", PI4, "6.6.51+rpt-rpi-v8", None),
    ("pigpio", "distance", PI4, "6.6.51+rpt-rpi-v8", None),
    ("lgpio", "distance", PI5, "6.6.51+rpt-rpi-2712", None),
])
def test_pin_factories_that_cannot_work_are_refused_naming_lgpio(
        factory: str, sensor: str, model: str, release: str, refused: str | None) -> None:
    problem = pin_factory_problem(factory, sensor, model, release)
    if refused is None:
        assert problem is None
    else:
        assert problem is not None and refused in problem and one_line(problem)
        assert problem.endswith("use pin_factory lgpio")


def test_the_board_is_read_from_the_device_tree(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "model"
    model.write_bytes(PI5.encode() + b"\0")
    assert board_model([tmp_path / "absent", model]) == PI5
    assert kernel_version("6.6.51+rpt-rpi-2712") == (6, 6) and kernel_version("x") == (0, 0)
    monkeypatch.setattr(board, "MODEL_FILES", (model,))
    with pytest.raises(SettingsError, match="pin_factory rpigpio does not work on a Raspberry "
                                            "Pi 5") as refused:
        settings(sensor="mcp3008", pin_factory="rpigpio")
    assert one_line(str(refused.value))
    assert settings(sensor="mcp3008", pin_factory="lgpio").pin_factory == "lgpio"


@pytest.mark.skipif(kernel_version(platform.release()) < (6, 6), reason="kernel before 6.6")
def test_check_config_refuses_rpigpio_edges_on_this_kernel() -> None:
    result = zk_sensor("--check-config", "--id", "1", "--sensor", "distance",
                       "--sensor-trigger-pin", "23", "--sensor-echo-pin", "24",
                       "--pin-factory", "rpigpio")
    assert (result.returncode, result.stdout) == (2, "")
    assert one_line(result.stderr) and "use pin_factory lgpio" in result.stderr

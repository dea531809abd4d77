"""Which pin factories work on this machine: judged from the board model and the kernel,
without importing any GPIO library, so that --check-config and the start refuse the same.

RPi.GPIO and pigpio poke the SoC's GPIO registers directly and know nothing of the
Raspberry Pi 5, whose GPIOs sit behind the RP1 chip; RPi.GPIO's edge detection goes
through the sysfs GPIO numbers that kernel 6.6 moved. lgpio uses the kernel's gpiochip
interface and works on every model and kernel.
"""

from __future__ import annotations

import platform
import re
from collections.abc import Sequence
from pathlib import Path

MODEL_FILES = (Path("/proc/device-tree/model"), Path("/sys/firmware/devicetree/base/model"))
REGISTER_FACTORIES = ("rpigpio", "pigpio")
# Drivers that wait for edges on a pin: the HC-SR04's echo, the LDR capacitor's charge.
EDGE_DRIVERS = ("distance", "light")
EDGES_BROKEN_SINCE = (6, 6)


def board_model(model_files: Sequence[Path] | None = None) -> str:
    """The device tree's model string ("Raspberry Pi 5 Model B Rev 1.0"), "" elsewhere."""
    for path in MODEL_FILES if model_files is None else model_files:
        try:
            return path.read_bytes().rstrip(b"\0").decode(errors="replace")
        except OSError:
            continue
    return ""


def kernel_version(release: str) -> tuple[int, int]:
    """(6, 6) from "6.6.51+rpt-rpi-2712"; (0, 0) when the release names no version."""
    found = re.match(r"(\d+)\.(\d+)", release)
    return (int(found[1]), int(found[2])) if found else (0, 0)


def pin_factory_problem(factory: str, sensor: str, model: str | None = None,
                        release: str | None = None) -> str | None:
    """Why `factory` cannot drive `sensor` here, in one line, or None."""
    model = board_model() if model is None else model
    release = platform.release() if release is None else release
    if factory in REGISTER_FACTORIES and model.startswith("Raspberry Pi 5"):
        return (f"pin_factory {factory} does not work on a Raspberry Pi 5 ({model}): "
                "use pin_factory lgpio")
    if (factory == "rpigpio" and sensor in EDGE_DRIVERS
            and kernel_version(release) >= EDGES_BROKEN_SINCE):
        return (f"pin_factory rpigpio cannot detect edges for sensor {sensor} on kernel "
                f"{release} (broken since 6.6): use pin_factory lgpio")
    return None

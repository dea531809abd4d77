"""The sandboxing scores the docs state (docs/reference/systemd-units.md) are the ones
`systemd-analyze security` measures on the unit files we ship: a weakened unit, or a page
left behind, fails here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STATED_IN = ROOT / "docs" / "reference" / "systemd-units.md"
UNITS = {"zk-sensor": ROOT / "systemd" / "zk-sensor.service",
         "zk-collector": ROOT / "systemd" / "zk-collector.service"}
# The page's sentence: "... scores 2.0 (zk-sensor), 1.4 (zk-collector) ..."
STATED = re.compile(r"`systemd-analyze security --offline=yes` scores"
                    r"(?P<scores>(?:[^()]*\([a-z-]+\))+)")
SCORE = re.compile(r"(\d+\.\d) \(([a-z-]+)\)")

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                reason="needs systemd-analyze")


def measured_score(unit: Path, tmp_path: Path) -> str:
    """`--offline` analyses the file alone, as it would run on any machine."""
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text())
    result = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(copy)],
                            capture_output=True, text=True, timeout=60)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout)
    assert found, result.stdout[-500:] + result.stderr[-500:]
    return found.group(1)


def stated_scores() -> dict[str, str]:
    sentence = STATED.search(STATED_IN.read_text())
    assert sentence, f"{STATED_IN}: the sentence with the units' systemd-analyze security scores"
    return {unit: score for score, unit in SCORE.findall(sentence.group("scores"))}


@pytest.mark.parametrize("name", sorted(UNITS))
def test_the_readme_states_the_measured_exposure(name: str, tmp_path: Path) -> None:
    assert stated_scores().get(name) == measured_score(UNITS[name], tmp_path)


@pytest.mark.parametrize("name", sorted(UNITS))
def test_units_stay_well_sandboxed(name: str, tmp_path: Path) -> None:
    """'OK' in systemd's scale is below 3.0; ours stay at or below 2.0."""
    assert float(measured_score(UNITS[name], tmp_path)) <= 2.0

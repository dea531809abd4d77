"""The Prometheus alerting rules in prometheus/: valid, proved by their unit tests, and
written against metric names the node and the collector really export.

promtool does the proving (prometheus/zk-sensor.rules.test.yml shows every alert firing
and staying quiet on series of a real fleet's shape); these tests make `make test` run it.
A missing promtool fails rather than skips: a skipped check would let a broken rules file
pass CI unnoticed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
RULES_DIR = REPO / "prometheus"
RULES = RULES_DIR / "zk-sensor.rules.yml"
RULES_TESTS = RULES_DIR / "zk-sensor.rules.test.yml"
EXPORTERS = (
    REPO / "daemon" / "zk_sensor" / "node" / "metrics.py",
    REPO / "daemon" / "zk_sensor" / "collector" / "metrics.py",
    REPO / "daemon" / "zk_sensor" / "ctl" / "exporter.py",
)
PROMTOOL_TIMEOUT_S = 60
OUR_METRIC = re.compile(r"\b(zk_(?:sensor|collector)_[a-z0-9_]+|zookeeper_up)\b")
# Alerts the rules file must keep: the list (no leader, rounds stalled, outbox
# growing, drops, a node's watchdog), what the watchdog's failing looks like, and the
# ZooKeeper servers' own (from zk-sensor-zookeeper-exporter).
REQUIRED_ALERTS = {
    "ZkSensorNoLeader",
    "ZkSensorRoundsStalled",
    "ZkSensorOutboxGrowing",
    "ZkSensorRoundsDropped",
    "ZkSensorNodeOffline",
    "ZkSensorNodeRestarting",
    "ZkSensorNodeDown",
    "ZooKeeperServerDown",
    "ZooKeeperNoQuorum",
}


@pytest.fixture(scope="module")
def promtool() -> str:
    """promtool's path; a failure naming the package when it is not installed."""
    found = shutil.which("promtool")
    if found is None:
        pytest.fail(
            "promtool is missing: apt-get install prometheus (Debian's package ships "
            "promtool; .ci/run installs it)",
            pytrace=False,
        )
    return found


def run_promtool(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run promtool from prometheus/, where the test file names its rules file."""
    return subprocess.run(
        [promtool, *args],
        cwd=RULES_DIR,
        capture_output=True,
        text=True,
        timeout=PROMTOOL_TIMEOUT_S,
        check=False,
    )


def alerting_rules() -> list[dict[str, object]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"] if "alert" in rule]


def test_promtool_check_rules(promtool: str) -> None:
    result = run_promtool(promtool, "check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_rule_unit_tests(promtool: str) -> None:
    result = run_promtool(promtool, "test", "rules", RULES_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_severity_summary_and_a_unit_test() -> None:
    """A rule without a test in the test file is a rule nobody saw fire."""
    rules = alerting_rules()
    names = {str(rule["alert"]) for rule in rules}
    assert names >= REQUIRED_ALERTS, f"missing: {sorted(REQUIRED_ALERTS - names)}"
    tested = set(re.findall(r"alertname:\s*(\w+)", RULES_TESTS.read_text()))
    assert names <= tested, f"no promtool test for: {sorted(names - tested)}"
    for rule in rules:
        labels = rule.get("labels")
        annotations = rule.get("annotations")
        assert isinstance(labels, dict) and labels.get("severity") in {"critical", "warning"}, rule
        assert isinstance(annotations, dict) and annotations.get("summary"), rule
        assert annotations.get("description"), rule


def test_rules_use_only_metrics_that_are_exported() -> None:
    """A renamed metric would leave an alert that can never fire, silently: promtool
    cannot know which names exist, so compare with the names the exporters' code writes."""
    exported = {name for path in EXPORTERS for name in OUR_METRIC.findall(path.read_text())}
    used = {name for rule in alerting_rules() for name in OUR_METRIC.findall(str(rule["expr"]))}
    assert used, "the rules use none of zk-sensor's metrics"
    assert used <= exported, f"not exported by metrics.py: {sorted(used - exported)}"

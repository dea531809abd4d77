"""Static checks of what deploys the fleet: the playbook, the units, the Vagrantfile."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from fleet import BIN

REPO = Path(__file__).resolve().parent.parent


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)


def test_ansible_lint_production_profile_is_clean() -> None:
    result = run(str(BIN / "ansible-lint"), "--profile", "production", "--offline")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_zookeeper_defaults_do_not_cap_a_fleet_behind_one_address() -> None:
    defaults = yaml.safe_load((REPO / "ansible/roles/zookeeper/defaults/main.yml").read_text())
    assert defaults["zookeeper_max_client_cnxns"] == 0


def test_playbook_syntax() -> None:
    result = run(str(BIN / "ansible-playbook"), "-i", "ansible/inventory/hosts.yml",
                 "ansible/site.yml", "--syntax-check")
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(not shutil.which("systemd-analyze") or not shutil.which("unshare"),
                    reason="needs systemd-analyze and unshare")
def test_systemd_analyze_verify_prints_nothing() -> None:
    """The units' ExecStart binaries live in the node's venv; a private tmpfs on /opt gives
    them stand-ins, so verify checks everything else for real."""
    script = (
        "mount -t tmpfs tmpfs /opt && mkdir -p /opt/zk-sensor/venv/bin && "
        "cp /bin/true /opt/zk-sensor/venv/bin/zk-sensor && "
        "cp /bin/true /opt/zk-sensor/venv/bin/zk-collector && "
        "systemd-analyze verify systemd/zk-sensor.service systemd/zk-collector.service"
    )
    result = run("unshare", "--mount", "sh", "-c", script)
    assert result.returncode == 0
    assert result.stdout == "" and result.stderr == ""


@pytest.mark.skipif(not shutil.which("vagrant"), reason="Debian's vagrant is not installed")
def test_vagrantfile_validates() -> None:
    result = run("vagrant", "validate", "--ignore-provider")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "validated successfully" in result.stdout

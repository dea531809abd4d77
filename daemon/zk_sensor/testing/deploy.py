"""The playbook's files as the static deployment tests see them, and Ansible run on the
controller to render its templates (tests/test_deploy_static.py, test_deploy_servers.py,
test_adversary_firewall.py).

Paths are those of the checkout this package is installed from (editable, `make venv`).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from zk_sensor.testing.fleet import BIN

REPO = Path(__file__).resolve().parents[3]
ROLES = REPO / "ansible" / "roles"
INVENTORY = REPO / "ansible/inventory/hosts.yml"
FLEET_PKI = ROLES / "zk_pki" / "files" / "fleet_pki.py"
FIREWALL = ROLES / "zk_firewall"


def run(*command: str) -> subprocess.CompletedProcess[str]:
    """A command in the checkout, its output captured."""
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)


def render(tmp_path: Path, inventory: Path, plays: list[dict[str, Any]]) -> None:
    """Run plays rendering templates and variables into tmp_path, on the controller."""
    for play in plays:
        play.update({"connection": "local", "gather_facts": False,
                     "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}"}})
    playbook = tmp_path / "render.yml"
    playbook.write_text(json.dumps(plays))
    result = run(str(BIN / "ansible-playbook"), "-i", str(inventory), str(playbook))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def render_firewall(tmp_path: Path) -> dict[str, str]:
    """The host firewall's nftables ruleset for zk1 and the two collectors, by host."""
    hosts = ("zk1", "collector1", "collector2")
    render(tmp_path, INVENTORY, [{
        "hosts": ":".join(hosts),
        "vars_files": [str(FIREWALL / "defaults/main.yml"), str(FIREWALL / "vars/main.yml")],
        "tasks": [{"name": "ruleset", "vars": {"zk_firewall_controller": "10.231.0.1"},
                   "ansible.builtin.template": {
                       "src": str(FIREWALL / "templates/nftables.conf.j2"),
                       "dest": str(tmp_path / "{{ inventory_hostname }}.nft"),
                       "mode": "0644"}}]}])
    return {host: (tmp_path / f"{host}.nft").read_text() for host in hosts}


__all__ = ["FIREWALL", "FLEET_PKI", "INVENTORY", "REPO", "ROLES", "render", "render_firewall",
           "run"]

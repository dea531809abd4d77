"""Static checks of Debian 12 "bookworm" and 13 "trixie" (and Raspberry Pi OS on either)
in the playbook (issue 20): the release and architecture check of site.yml's first play,
what each role does differently per release, the wheelhouse resolved for the node's
Python, the collectors' list, a Pi's journal and clock, ZooKeeper's dataLogDir and the
Vagrantfile's boxes. Nothing here boots a machine: what only a machine can prove is the
lab's (tests/test_lab.py)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from zk_sensor.testing.deploy import INVENTORY, REPO, ROLES, render, run
from zk_sensor.testing.fleet import BIN

PLATFORM = ROLES / "zk_platform"
ZOOKEEPER = ROLES / "zookeeper"
ZK_POSTGRES = ROLES / "zk_postgres"
ZK_SENSOR = ROLES / "zk_sensor"
RELEASES = yaml.safe_load((PLATFORM / "vars/main.yml").read_text())["zk_platform_releases"]
SUPPORTED = ("Debian 12 (bookworm) and 13 (trixie), and Raspberry Pi OS based on them, "
             "on amd64 and arm64")


def probe(os_id: str, version: str, codename: str, arch: str, model: str = "",
          rpi_os: bool = False, python: str = "3.11.2") -> list[str]:
    """The lines zk_platform's raw probe prints on such a machine."""
    names = {"debian": "Debian GNU/Linux", "raspbian": "Raspbian GNU/Linux",
             "ubuntu": "Ubuntu"}
    lines = [f"id={os_id}", "id_like=debian" if os_id != "debian" else "id_like=",
             f"name={names[os_id]}", f"version_id={version}", f"codename={codename}",
             f"arch={arch}", f"model={model}"]
    return [*lines, *(["rpi_os=yes"] if rpi_os else []), f"python={python}"]


MACHINES = {
    "bookworm": probe("debian", "12", "bookworm", "amd64"),
    "trixie": probe("debian", "13", "trixie", "amd64", python="3.13.5"),
    # Raspberry Pi OS 64-bit says ID=debian; /etc/rpi-issue tells it apart.
    "pi5": probe("debian", "13", "trixie", "arm64", "Raspberry Pi 5 Model B Rev 1.0",
                 rpi_os=True, python="3.13.5"),
    "pi4": probe("debian", "12", "bookworm", "arm64", "Raspberry Pi 4 Model B Rev 1.4",
                 rpi_os=True),
    # Plain Debian on a Pi (no Raspberry Pi OS archive), and a VM with no device tree.
    "debianpi": probe("debian", "13", "trixie", "arm64", "Raspberry Pi 4 Model B Rev 1.5",
                      python="3.13.5"),
    "bullseye": probe("debian", "11", "bullseye", "amd64", python="3.9.2"),
    # The 32-bit Raspberry Pi OS says ID=raspbian.
    "armhf": probe("raspbian", "12", "bookworm", "armhf", "Raspberry Pi 3 Model B Rev 1.2",
                   rpi_os=True),
    "noble": probe("ubuntu", "24.04", "noble", "amd64", python="3.12.3"),
    "mislabelled": probe("debian", "13", "trixie", "amd64", python="3.13.5"),
    "nopython": probe("debian", "12", "bookworm", "amd64", python=""),
}
REFUSED = {
    "bullseye": f"bullseye runs Debian 11 (bullseye) on amd64; zk-sensor supports {SUPPORTED}",
    "armhf": f"armhf runs Raspberry Pi OS 12 (bookworm) on armhf; zk-sensor supports "
             f"{SUPPORTED} (not a 32-bit Raspberry Pi OS: install its 64-bit image)",
    "noble": f"noble runs Ubuntu 24.04 (noble) on amd64; zk-sensor supports {SUPPORTED}",
    "mislabelled": "mislabelled runs Debian 13 (trixie) on amd64, but the inventory says "
                   "os: bookworm",
    "nopython": "nopython runs Debian 12 (bookworm) on amd64 without python3, which Ansible "
                "and the fleet's code need (apt-get install python3)",
}


def platform_of(tmp_path: Path, machines: dict[str, list[str]],
                host_vars: dict[str, dict] | None = None) -> tuple[subprocess.CompletedProcess[str],
                                                                   dict[str, dict]]:
    """Run zk_platform's check on made-up machines (local connections, the probe's lines
    given); the ansible-playbook result and each accepted host's zk_platform_facts."""
    host_vars = host_vars or {}
    # zk_platform_pi is a role default: here (defaults as vars_files, which outrank the
    # inventory) it comes as a task variable.
    pis = {name: values.pop("zk_platform_pi") for name, values in host_vars.items()
           if "zk_platform_pi" in values}
    upgrades = {name: values.pop("zk_platform_upgrade_release") for name, values
                in host_vars.items() if "zk_platform_upgrade_release" in values}
    inventory = tmp_path / "machines.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {
        name: {"ansible_connection": "local", **host_vars.get(name, {})}
        for name in machines}}}))
    out = tmp_path / "facts"
    out.mkdir()
    plays = [{
        "hosts": "all", "gather_facts": False,
        "vars_files": [str(PLATFORM / "defaults/main.yml"), str(PLATFORM / "vars/main.yml")],
        "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}",
                 "probes": {name: {"stdout_lines": lines, "changed": False}
                            for name, lines in machines.items()},
                 "pis": pis, "upgrades": upgrades},
        "tasks": [
            {"name": "check", "ansible.builtin.include_tasks": str(PLATFORM / "tasks/check.yml"),
             "vars": {"zk_platform_probe": "{{ probes[inventory_hostname] }}",
                      "zk_platform_pi": "{{ pis[inventory_hostname] | default('') }}",
                      "zk_platform_upgrade_release":
                          "{{ upgrades[inventory_hostname] | default('') }}"}},
            {"name": "facts", "ansible.builtin.copy": {
                "dest": str(out / "{{ inventory_hostname }}.json"), "mode": "0644",
                "content": "{{ zk_platform_facts | to_json }}"}}],
    }]
    playbook = tmp_path / "platform.yml"
    playbook.write_text(json.dumps(plays))
    result = run(str(BIN / "ansible-playbook"), "-i", str(inventory), str(playbook))
    return result, {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}


def failures(output: str) -> dict[str, str]:
    """`fatal: [host]: FAILED! => {...}` lines: the message of each."""
    found = {}
    for line in output.splitlines():
        if line.startswith("fatal: [") and "FAILED! => " in line:
            host = line[len("fatal: ["):line.index("]")]
            found[host] = json.loads(line.split("FAILED! => ", 1)[1])["msg"]
    return found


# ---------------------------------------------------------------- the release check


def test_site_yml_checks_every_machine_first_and_stops_the_run() -> None:
    plays = yaml.safe_load((REPO / "ansible/site.yml").read_text())
    first = plays[0]
    assert first["roles"] == [{"role": "zk_platform", "tags": ["always"]}]
    assert set(first["hosts"].split(":")) == {"zookeeper", "collector_database", "collector",
                                              "sensors"}
    assert first["any_errors_fatal"] is True and first["gather_facts"] is False
    tasks = yaml.safe_load((PLATFORM / "tasks/main.yml").read_text())
    # raw: no Python module runs before the verdict (an old or missing python3 answers).
    assert "ansible.builtin.raw" in tasks[0]
    assert tasks[1]["ansible.builtin.import_tasks"] == "check.yml"


def test_supported_machines_pass_and_tell_the_roles_their_release(tmp_path: Path) -> None:
    accepted = ("bookworm", "trixie", "pi5", "pi4", "debianpi")
    result, facts = platform_of(tmp_path, {name: MACHINES[name] for name in accepted},
                                {"trixie": {"os": "trixie"}, "pi5": {"arch": "arm64"}})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert facts["bookworm"] == {**RELEASES["12"], "release": "12", "distribution": "Debian",
                                 "arch": "amd64", "python_full": "3.11.2",
                                 "raspberry_pi_os": False, "pi": False, "model": "",
                                 "supported": {"bookworm": "12", "trixie": "13"}}
    assert facts["trixie"]["jre"] == "openjdk-21-jre-headless"
    assert facts["trixie"]["postgresql"] == "17" and facts["trixie"]["python"] == "3.13"
    assert facts["pi5"]["distribution"] == "Raspberry Pi OS" and facts["pi5"]["pi"] is True
    assert facts["pi4"]["codename"] == "bookworm" and facts["pi4"]["raspberry_pi_os"] is True
    assert facts["debianpi"]["pi"] is True and facts["debianpi"]["raspberry_pi_os"] is False


def test_the_release_table_holds_what_debian_ships() -> None:
    assert RELEASES == {
        "12": {"codename": "bookworm", "python": "3.11", "postgresql": "15",
               "jre": "openjdk-17-jre-headless", "zookeeper": "3.8"},
        "13": {"codename": "trixie", "python": "3.13", "postgresql": "17",
               "jre": "openjdk-21-jre-headless", "zookeeper": "3.9"}}


def test_unsupported_machines_are_refused_with_one_line(tmp_path: Path) -> None:
    result, facts = platform_of(tmp_path, {name: MACHINES[name] for name in REFUSED},
                                {"mislabelled": {"os": "bookworm"}})
    assert result.returncode != 0
    assert failures(result.stdout) == REFUSED
    assert facts == {}
    assert all("\n" not in line for line in REFUSED.values())


def test_upgrade_yml_accepts_the_release_it_moves_a_machine_to(tmp_path: Path) -> None:
    """While upgrade.yml runs, a machine the inventory still calls bookworm may already run
    trixie (upgraded earlier in the run, or by a run that stopped): accepted there, and
    still refused by site.yml's check, which has no release to move to."""
    machines = {"upgraded": MACHINES["mislabelled"], "pending": MACHINES["bookworm"]}
    during = {name: {"os": "bookworm", "zk_platform_upgrade_release": "trixie"}
              for name in machines}
    result, facts = platform_of(tmp_path, machines, during)
    assert result.returncode == 0, result.stdout[-3000:]
    assert {name: fact["codename"] for name, fact in facts.items()} == {
        "upgraded": "trixie", "pending": "bookworm"}
    (tmp_path / "site").mkdir()
    result, _ = platform_of(tmp_path / "site", {"upgraded": MACHINES["mislabelled"]},
                            {"upgraded": {"os": "bookworm"}})
    assert failures(result.stdout) == {"upgraded": REFUSED["mislabelled"].replace(
        "mislabelled", "upgraded", 1)}


def test_upgrade_yml_goes_one_machine_at_a_time_servers_first() -> None:
    """The release upgrade's shape: the release check first on every machine it upgrades
    (a refusal stops the whole run), then ZooKeeper servers, collectors and sensors, each
    in plays of one machine that stop the run at the first failure; the collectors'
    PostgreSQL is never a target."""
    plays = yaml.safe_load((REPO / "ansible/upgrade.yml").read_text())
    first = plays[0]
    assert first["roles"] == [{"role": "zk_platform", "tags": ["always"]}]
    assert first["any_errors_fatal"] is True
    assert first["vars"]["zk_platform_upgrade_release"].startswith("{{ zk_upgrade_release")
    one_at_a_time = [p for p in plays if p.get("serial") is not None]
    assert [p["name"] for p in one_at_a_time] == [
        "ZooKeeper servers, one at a time", "Collectors, one at a time",
        "Sensors, one at a time"]
    for play in one_at_a_time:
        assert play["serial"] == 1 and play["max_fail_percentage"] == 0, play["name"]
        roles = [t["ansible.builtin.include_role"]["name"] for t in play["tasks"]]
        assert roles.index("zk_upgrade") < roles.index("zk_platform"), play["name"]
        assert roles[-1] == "zk_upgrade", play["name"]
    assert all("collector_database" not in str(p["hosts"]) for p in plays)
    result = run(str(BIN / "ansible-playbook"), "-i", "ansible/inventory/hosts.yml",
                 "ansible/upgrade.yml", "--syntax-check")
    assert result.returncode == 0, result.stderr


def test_a_pi_is_found_by_its_model_or_said_by_the_inventory(tmp_path: Path) -> None:
    machines = {"vm": MACHINES["trixie"], "pi": MACHINES["pi4"], "hidden": MACHINES["trixie"],
                "notapi": MACHINES["pi4"]}
    result, facts = platform_of(tmp_path, machines, {"hidden": {"zk_platform_pi": True},
                                                     "notapi": {"zk_platform_pi": False}})
    assert result.returncode == 0, result.stdout[-3000:]
    assert {name: fact["pi"] for name, fact in facts.items()} == {
        "vm": False, "pi": True, "hidden": True, "notapi": False}


# ---------------------------------------------------------------- per release, per role


def role_values(tmp_path: Path, host: str, role: Path, expressions: dict[str, str],
                facts: dict | None, extra_vars: dict | None = None) -> dict[str, object]:
    """The values of some expressions with a role's defaults (and vars), for an inventory
    host whose zk_platform_facts are `facts` (None: the role run without the check)."""
    files = [str(role / "defaults/main.yml")]
    if (role / "vars/main.yml").exists():
        files.append(str(role / "vars/main.yml"))
    task_vars = {**({"zk_platform_facts": facts} if facts is not None else {}),
                 **(extra_vars or {})}
    dest = tmp_path / f"{role.name}-{host}-{len(list(tmp_path.iterdir()))}.json"
    render(tmp_path, INVENTORY, [{"hosts": host, "vars_files": files, "tasks": [{
        "name": "values", "vars": task_vars, "ansible.builtin.copy": {
            "dest": str(dest), "mode": "0644",
            "content": "{{ " + "{" + ", ".join(f"{json.dumps(k)}: ({v})" for k, v in
                                               expressions.items()) + "} | to_json }}"}}]}])
    return json.loads(dest.read_text())


def release_facts(version: str) -> dict:
    return {**RELEASES[version], "release": version, "distribution": "Debian",
            "arch": "amd64", "python_full": "", "raspberry_pi_os": False, "pi": False,
            "model": ""}


@pytest.mark.parametrize(("version", "jre", "postgresql"), [("12", "openjdk-17-jre-headless", 15),
                                                            ("13", "openjdk-21-jre-headless", 17)])
def test_each_release_gets_its_jre_and_postgresql(tmp_path: Path, version: str, jre: str,
                                                  postgresql: int) -> None:
    zk = role_values(tmp_path, "zk1", ZOOKEEPER, {"packages": "zookeeper_packages"},
                     release_facts(version))
    assert zk["packages"] == ["zookeeper", "openssl", jre]
    pg = role_values(tmp_path, "db", ZK_POSTGRES, {
        "conf": "zk_postgres_conf_dir", "unit": "zk_postgres_unit",
        "secrets": "zk_postgres_secrets_dir"}, release_facts(version))
    assert pg == {"conf": f"/etc/postgresql/{postgresql}/main",
                  "unit": f"postgresql@{postgresql}-main.service",
                  "secrets": f"/etc/postgresql/{postgresql}/main/zk-sensor"}


def test_without_the_check_the_roles_assume_bookworm(tmp_path: Path) -> None:
    """A role run alone (no zk_platform_facts) takes Debian 12's row, as it always did."""
    zk = role_values(tmp_path, "zk1", ZOOKEEPER, {"packages": "zookeeper_packages"}, None)
    assert zk["packages"][-1] == RELEASES["12"]["jre"]
    pg = role_values(tmp_path, "db", ZK_POSTGRES, {"conf": "zk_postgres_conf_dir"}, None)
    assert pg["conf"] == f"/etc/postgresql/{RELEASES['12']['postgresql']}/main"


def test_postgres_keeps_the_cluster_it_configured_after_a_release_upgrade(
        tmp_path: Path) -> None:
    """A machine upgraded to trixie keeps serving its 15/main (until pg_upgradecluster):
    the role finds its own zk-sensor.conf there and stays on it."""
    tasks = yaml.safe_load((ZK_POSTGRES / "tasks/main.yml").read_text())
    names = [task["name"] for task in tasks]
    assert names.index("Note its version") < names.index("Configure the cluster")
    note = tasks[names.index("Note its version")]["ansible.builtin.set_fact"]
    found = {"files": [{"path": "/etc/postgresql/15/main/conf.d/zk-sensor.conf"},
                       {"path": "/etc/postgresql/17/other/conf.d/zk-sensor.conf"}]}
    upgraded = role_values(tmp_path, "db", ZK_POSTGRES, {"version": note[
        "zk_postgres_managed_version"].strip()[3:-3], "conf": "zk_postgres_conf_dir"},
        release_facts("13"), {"zk_postgres_managed": found})
    assert upgraded["version"] == 15
    # zk_postgres_conf_dir with that fact set:
    pg = role_values(tmp_path, "db", ZK_POSTGRES, {"conf": "zk_postgres_conf_dir"},
                     release_facts("13"), {"zk_postgres_managed_version": 15})
    assert pg["conf"] == "/etc/postgresql/15/main"
    fresh = role_values(tmp_path, "db", ZK_POSTGRES, {"version": note[
        "zk_postgres_managed_version"].strip()[3:-3]}, release_facts("13"),
        {"zk_postgres_managed": {"files": []}})
    assert fresh["version"] in ("", None)


def install_task(name: str) -> dict:
    tasks = yaml.safe_load((ZK_SENSOR / "tasks/install.yml").read_text())
    return next(task for task in tasks if task["name"] == name)


def test_lgpio_on_plain_debian_is_refused_with_one_line(tmp_path: Path) -> None:
    """python3-lgpio is in Raspberry Pi OS's archive only (neither Debian 12 nor 13)."""
    task = install_task("Refuse a package that only Raspberry Pi OS has on plain Debian")
    dpkg = {"results": [{"item": "python3-venv", "stdout": "python3-venv install ok installed"},
                        {"item": "python3-lgpio", "stdout": ""}]}
    inventory = tmp_path / "pis.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {
        "plain": {"ansible_connection": "local", "zk_platform_facts": {
            **release_facts("13"), "arch": "arm64", "pi": True}},
        "rpios": {"ansible_connection": "local", "zk_platform_facts": {
            **release_facts("13"), "arch": "arm64", "pi": True, "raspberry_pi_os": True,
            "distribution": "Raspberry Pi OS"}}}}}))
    playbook = tmp_path / "lgpio.yml"
    playbook.write_text(json.dumps([{
        "hosts": "all", "gather_facts": False,
        "vars_files": [str(ZK_SENSOR / "defaults/main.yml")],
        "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}",
                 "zk_sensor_driver": "mcp3008", "zk_sensor_dpkg": dpkg},
        "tasks": [task]}]))
    result = run(str(BIN / "ansible-playbook"), "-i", str(inventory), str(playbook))
    assert failures(result.stdout) == {"plain": (
        "plain runs Debian 13 without Raspberry Pi OS's archive, which alone has "
        "python3-lgpio (pin_factory lgpio): use Raspberry Pi OS, or another pin_factory "
        "(rpigpio, pigpio, native)")}
    recap = result.stdout.split("PLAY RECAP")[-1]
    assert re.search(r"^rpios +: ok=0 .* failed=0 .* skipped=1 ", recap, re.MULTILINE), recap


# ---------------------------------------------------------------- ZooKeeper's dataLogDir


def zookeeper_files(tmp_path: Path, **task_vars: object) -> tuple[str, str]:
    prefix = f"zk-{len(list(tmp_path.iterdir()))}"
    tasks = [{"name": template, "vars": {"zookeeper_meminfo": {"stdout": "1000000"},
                                         **task_vars},
              "ansible.builtin.template": {"src": str(ZOOKEEPER / "templates" / template),
                                           "dest": str(tmp_path / f"{prefix}-{template}"),
                                           "mode": "0644"}}
             for template in ("zoo.cfg.j2", "zookeeper.service.j2")]
    render(tmp_path, INVENTORY, [{
        "hosts": "zk1", "vars_files": [str(ZOOKEEPER / "defaults/main.yml"),
                                       str(ZOOKEEPER / "vars/main.yml")], "tasks": tasks}])
    return ((tmp_path / f"{prefix}-zoo.cfg.j2").read_text(),
            (tmp_path / f"{prefix}-zookeeper.service.j2").read_text())


def test_the_transaction_log_has_its_own_directory(tmp_path: Path) -> None:
    cfg, unit = zookeeper_files(tmp_path)
    assert "dataDir=/var/lib/zookeeper\n" in cfg
    assert "dataLogDir=/var/lib/zookeeper/txnlog\n" in cfg
    assert "ReadWritePaths=/var/lib/zookeeper /var/lib/zookeeper/txnlog\n" in unit
    assert "RequiresMountsFor=/var/lib/zookeeper /var/lib/zookeeper/txnlog\n" in unit
    # Logs of a server deployed before dataLogDir move at its next start ($$: systemd's
    # escape of a literal $).
    pre = next(line for line in unit.splitlines() if line.startswith("ExecStartPre="))
    assert "/var/lib/zookeeper/version-2/log.*" in pre and '"$$log"' in pre
    assert "/var/lib/zookeeper/txnlog/version-2" in pre
    assert "After=time-set.target time-sync.target\n" in unit
    # On a Pi, other storage; or everything in dataDir as before.
    cfg, unit = zookeeper_files(tmp_path, zookeeper_data_log_dir="/srv/zk-txnlog")
    assert "dataLogDir=/srv/zk-txnlog\n" in cfg
    assert "RequiresMountsFor=/var/lib/zookeeper /srv/zk-txnlog\n" in unit
    cfg, unit = zookeeper_files(tmp_path, zookeeper_data_log_dir="/var/lib/zookeeper")
    assert "dataLogDir" not in cfg
    assert "ExecStartPre" not in unit and "RequiresMountsFor" not in unit


@pytest.mark.skipif(not shutil.which("sh"), reason="needs sh")
def test_the_log_move_moves_only_log_files(tmp_path: Path) -> None:
    """The unit's ExecStartPre, as systemd would run it (its $$ unescaped), on a copy."""
    _, unit = zookeeper_files(tmp_path, zookeeper_data_dir=str(tmp_path / "data"),
                              zookeeper_data_log_dir=str(tmp_path / "data/txnlog"))
    command = next(line for line in unit.splitlines()
                   if line.startswith("ExecStartPre="))[len("ExecStartPre=/bin/sh -c '"):-1]
    snapshots = tmp_path / "data/version-2"
    snapshots.mkdir(parents=True)
    for name in ("snapshot.100", "log.101", "log.200", "acceptedEpoch"):
        (snapshots / name).write_text(name)
    for _ in range(2):  # a second start finds nothing to move
        subprocess.run(["sh", "-c", command.replace("$$", "$")], check=True, timeout=30)
    assert sorted(p.name for p in snapshots.iterdir()) == ["acceptedEpoch", "snapshot.100"]
    assert sorted(p.name for p in (tmp_path / "data/txnlog/version-2").iterdir()) == \
        ["log.101", "log.200"]


# ---------------------------------------------------------------- a Raspberry Pi


def test_a_pis_journal_is_persistent_and_capped(tmp_path: Path) -> None:
    dest = tmp_path / "journald.conf"
    time_dest = tmp_path / "time-wait-sync.conf"
    render(tmp_path, INVENTORY, [{
        "hosts": "sensor4", "vars_files": [str(PLATFORM / "defaults/main.yml")],
        "tasks": [{"name": name, "ansible.builtin.template": {
            "src": str(PLATFORM / "templates" / name), "dest": str(out), "mode": "0644"}}
            for name, out in (("journald.conf.j2", dest), ("time-wait-sync.conf.j2", time_dest))]}])
    lines = [line for line in dest.read_text().splitlines() if line and line[0] != "#"]
    assert lines == ["[Journal]", "Storage=persistent", "SystemMaxUse=64M",
                     "SystemKeepFree=256M", "SyncIntervalSec=5min"]
    assert [line for line in time_dest.read_text().splitlines() if line and line[0] != "#"] \
        == ["[Service]", "TimeoutStartSec=180"]
    pi = yaml.safe_load((PLATFORM / "tasks/pi.yml").read_text())
    by_name = {task["name"]: task for task in pi}
    # Read after Raspberry Pi OS's 40-rpi-volatile-storage.conf: the name sorts later.
    journal = by_name["Keep the journal on the SD card, capped"]["ansible.builtin.template"]
    assert journal["dest"] == "/etc/systemd/journald.conf.d/zk-sensor.conf"
    assert sorted(["40-rpi-volatile-storage.conf", "zk-sensor.conf"])[-1] == "zk-sensor.conf"
    wait = by_name["Make time-sync.target wait until NTP has set the clock"]
    assert wait["ansible.builtin.systemd_service"] == {
        "name": "systemd-time-wait-sync.service", "enabled": True}
    # Only on a Pi.
    main = yaml.safe_load((PLATFORM / "tasks/main.yml").read_text())
    assert main[2]["ansible.builtin.include_tasks"] == "pi.yml"
    assert "zk_platform_facts.pi | bool" in main[2]["when"]


def test_the_units_wait_for_the_clock_where_time_sync_waits() -> None:
    """Ordered after time-sync.target, never pulling it in (systemd.special(7): the NTP
    client does); it waits only where systemd-time-wait-sync is enabled (the Pis)."""
    for unit in ("zk-sensor.service", "zk-collector.service"):
        lines = (REPO / "systemd" / unit).read_text().splitlines()
        assert "After=time-set.target time-sync.target" in lines, unit
        assert not any(line.startswith(("Wants=time", "Requires=time")) for line in lines), unit


# ---------------------------------------------------------------- collectors


def test_every_sensor_gets_every_collector_in_order(tmp_path: Path) -> None:
    values = {name: role_values(tmp_path, "sensor1", ZK_SENSOR, {"url": "zk_sensor_api_url"},
                                None, task_vars)["url"]
              for name, task_vars in (
                  ("default", {}),
                  ("plain", {"zk_sensor_collector_https": False}),
                  ("balanced", {"zk_sensor_collector_address": "collectors.example.org"}),
                  ("v6", {"zk_sensor_collector_addresses": ["fd00::30", "10.231.0.31"]}))}
    assert values == {
        "default": "https://10.231.0.30:8080/api/rounds,https://10.231.0.31:8080/api/rounds",
        "plain": "http://10.231.0.30:8080/api/rounds,http://10.231.0.31:8080/api/rounds",
        "balanced": "https://collectors.example.org:8080/api/rounds",
        "v6": "https://[fd00::30]:8080/api/rounds,https://10.231.0.31:8080/api/rounds"}


# ---------------------------------------------------------------- the wheelhouse

BUILDER = ZK_SENSOR / "files/build_wheelhouse.py"


def builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_wheelhouse", BUILDER)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_wheelhouse"] = module
    spec.loader.exec_module(module)
    return module


def make_wheel(directory: Path, name: str, version: str, requires: list[str],
               requires_python: str = "", tag: str = "py3-none-any") -> Path:
    """A wheel with only metadata: all pip and the check read."""
    stem = f"{name.replace('-', '_')}-{version}"
    wheel = directory / f"{stem}-{tag}.whl"
    metadata = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    metadata += [f"Requires-Python: {requires_python}"] if requires_python else []
    metadata += [f"Requires-Dist: {line}" for line in requires]
    files = {f"{stem}.dist-info/METADATA": "\n".join(metadata) + "\n",
             f"{stem}.dist-info/WHEEL": f"Wheel-Version: 1.0\nGenerator: test\n"
                                        f"Root-Is-Purelib: true\nTag: {tag}\n",
             f"{name.replace('-', '_')}/__init__.py": ""}
    files[f"{stem}.dist-info/RECORD"] = "".join(f"{path},,\n" for path in files) + \
        f"{stem}.dist-info/RECORD,,\n"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


# A project whose build backend is in its tree (no setuptools to fetch): pip builds it
# offline, in its isolated environment.
BACKEND = '''
import os, zipfile
NAME, VERSION = "fakeproj", "1.0"
def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    stem = f"{NAME}-{VERSION}"
    name = f"{stem}-py3-none-any.whl"
    files = {
        f"{stem}.dist-info/METADATA": "Metadata-Version: 2.1\\nName: fakeproj\\n"
            "Version: 1.0\\nRequires-Python: >=3.11\\nRequires-Dist: fakepg>=3\\n",
        f"{stem}.dist-info/WHEEL": "Wheel-Version: 1.0\\nGenerator: test\\n"
            "Root-Is-Purelib: true\\nTag: py3-none-any\\n",
        "fakeproj/__init__.py": ""}
    files[f"{stem}.dist-info/RECORD"] = "".join(f"{p},,\\n" for p in files) + \\
        f"{stem}.dist-info/RECORD,,\\n"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as archive:
        for path, text in files.items():
            archive.writestr(zipfile.ZipInfo(path, (1980, 1, 1, 0, 0, 0)), text)
    return name
'''


def fake_index(tmp_path: Path) -> tuple[Path, Path]:
    """An offline index (psycopg's marker on typing-extensions) and the project."""
    index = tmp_path / "index"
    index.mkdir()
    make_wheel(index, "fakepg", "3.2", ['typing-extensions>=4.6; python_version < "3.13"',
                                        'tzdata; sys_platform == "win32"',
                                        'fakepg-binary==3.2; extra == "binary"'],
               requires_python=">=3.8")
    make_wheel(index, "typing-extensions", "4.12.2", [], requires_python=">=3.8")
    make_wheel(index, "tzdata", "2024.1", [])
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n')
    (project / "backend.py").write_text(BACKEND)
    (project / "src" / "fakeproj.py").write_text("")
    return index, project


def build_offline(tmp_path: Path, python: str, *targets: str) -> dict:
    index, project = fake_index(tmp_path)
    result = subprocess.run(
        [python, str(BUILDER), "--project", str(project), "--cache", str(tmp_path / "cache"),
         "--source", "pyproject.toml", "--source", "backend.py", "--source", "src",
         *[f"--target={target}" for target in targets],
         "--pip-arg=--no-index", f"--pip-arg=--find-links={index}"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PIP_NO_CACHE_DIR": "1"})
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout)


def test_the_wheelhouse_follows_each_targets_python_not_the_controllers(
        tmp_path: Path) -> None:
    """Resolved on this controller (whatever its Python) for a 3.11 and a 3.13 node: the
    marker `python_version < "3.13"` keeps typing-extensions for 3.11 only."""
    built = build_offline(tmp_path, sys.executable, "3.11.2:x86_64:2.36",
                          "3.13.5:aarch64:2.41")
    houses = built["wheelhouses"]
    assert houses["3.11.2:x86_64:2.36"]["wheels"] == [
        "fakepg-3.2-py3-none-any.whl", "fakeproj-1.0-py3-none-any.whl",
        "typing_extensions-4.12.2-py3-none-any.whl"]
    assert houses["3.13.5:aarch64:2.41"]["wheels"] == [
        "fakepg-3.2-py3-none-any.whl", "fakeproj-1.0-py3-none-any.whl"]
    assert houses["3.11.2:x86_64:2.36"]["key"] != houses["3.13.5:aarch64:2.41"]["key"]


def test_a_second_build_of_the_same_source_and_target_is_the_cache(tmp_path: Path) -> None:
    first = build_offline(tmp_path, sys.executable, "3.13.5:x86_64:2.41")
    index, project = tmp_path / "index", tmp_path / "project"
    result = subprocess.run(
        [sys.executable, str(BUILDER), "--project", str(project), "--cache",
         str(tmp_path / "cache"), "--source", "pyproject.toml", "--source", "backend.py",
         "--source", "src", "--target=3.13.5:x86_64:2.41", "--pip-arg=--no-index",
         f"--pip-arg=--find-links={index}"], capture_output=True, text=True, timeout=300)
    second = json.loads(result.stdout)
    assert first["built"] is True and second["built"] is False
    assert second["wheelhouses"] == {
        target: {**entry, "built": False} for target, entry in first["wheelhouses"].items()}


def other_pythons() -> list[str]:
    """Controller Pythons besides this one: python3.X on PATH, or pyenv's."""
    found = {}
    for minor in (10, 11, 12, 13):
        if (3, minor) == sys.version_info[:2]:
            continue
        candidates = [shutil.which(f"python3.{minor}") or "",
                      *map(str, sorted(Path.home().glob(
                          f".pyenv/versions/3.{minor}.*/bin/python")))]
        for candidate in candidates:
            if candidate and subprocess.run([candidate, "-c", "import pip"],
                                            capture_output=True).returncode == 0:
                found[minor] = candidate
                break
    return list(found.values())


OTHER_PYTHONS = other_pythons()


@pytest.mark.skipif(not OTHER_PYTHONS, reason="no other python3.X on PATH")
@pytest.mark.parametrize("python", OTHER_PYTHONS)
def test_another_controller_python_builds_the_same_wheelhouses(tmp_path: Path,
                                                               python: str) -> None:
    built = build_offline(tmp_path, python, "3.11.2:x86_64:2.36", "3.13.5:aarch64:2.41")
    wheels = {target: entry["wheels"] for target, entry in built["wheelhouses"].items()}
    assert "typing_extensions-4.12.2-py3-none-any.whl" in wheels["3.11.2:x86_64:2.36"]
    assert "typing_extensions-4.12.2-py3-none-any.whl" not in wheels["3.13.5:aarch64:2.41"]


def test_the_check_is_pip_checks_verdict_for_the_target(tmp_path: Path) -> None:
    """On a wheelhouse resolved for the other Python: what is missing, what is not needed,
    what cannot install there."""
    module = builder()
    py311 = module.Target.parse("3.11.2:x86_64:2.36")
    py313 = module.Target.parse("3.13.5:aarch64:2.41")
    house = tmp_path / "house"
    house.mkdir()
    make_wheel(house, "fakeproj", "1.0", ["fakepg>=3", 'extra-dep; extra == "never"'])
    make_wheel(house, "fakepg", "3.2", ['typing-extensions>=4.6; python_version < "3.13"'])
    assert module.check(house, py311, "fakeproj") == [
        'fakepg 3.2 requires typing-extensions>=4.6; python_version < "3.13", which is missing']
    assert module.check(house, py313, "fakeproj") == []
    make_wheel(house, "typing-extensions", "4.12.2", [], requires_python=">=3.8")
    assert module.check(house, py311, "fakeproj") == []
    assert module.check(house, py313, "fakeproj") == [
        "typing_extensions-4.12.2-py3-none-any.whl is not needed on Python 3.13.5 on "
        "aarch64 (glibc 2.41)"]
    # Requires-Python, a version the requirement excludes, a wheel for another machine.
    make_wheel(house, "newer", "2.0", [], requires_python=">=3.12")
    make_wheel(house, "binary", "1.0", [], tag="cp313-cp313-manylinux_2_17_x86_64")
    (house / "fakepg-3.2-py3-none-any.whl").unlink()
    make_wheel(house, "fakepg", "3.2", ["typing-extensions>=5", "newer", "binary"])
    assert module.check(house, py311, "fakeproj") == [
        "binary-1.0-cp313-cp313-manylinux_2_17_x86_64.whl does not install on Python 3.11.2 "
        "on x86_64 (glibc 2.36)",
        "newer-2.0-py3-none-any.whl requires Python >=3.12",
        "fakepg 3.2 requires typing-extensions>=5, but the wheelhouse has typing-extensions "
        "4.12.2"]


def test_manylinux_tags_follow_the_nodes_glibc() -> None:
    module = builder()
    assert module.Target.parse("3.13.5:aarch64:2.19").platforms() == [
        "manylinux_2_19_aarch64", "manylinux_2_18_aarch64", "manylinux_2_17_aarch64",
        "manylinux2014_aarch64"]
    with pytest.raises(SystemExit, match="is not PYTHON:MACHINE"):
        module.Target.parse("3.11")


def test_the_role_builds_one_wheelhouse_per_target_of_the_play() -> None:
    tasks = yaml.safe_load((ZK_SENSOR / "tasks/install.yml").read_text())
    names = [task["name"] for task in tasks]
    build = tasks[names.index(
        "Build the wheelhouses on the controller (cached by source hash and target)")]
    assert build["run_once"] is True and build["delegate_to"] == "localhost"
    assert "'--target='" in build["ansible.builtin.command"]["argv"]
    assert "zk_sensor_target" in build["ansible.builtin.command"]["argv"]
    for earlier in ("Read the node's architecture", "Read the node's Python version and C library",
                    "Note the node's target for the wheelhouse"):
        assert names.index(earlier) < names.index(build["name"]), earlier
    pick = tasks[names.index("Note the wheelhouse to install")]["ansible.builtin.set_fact"]
    assert pick["zk_sensor_wheelhouse"].endswith(".wheelhouses[zk_sensor_target] }}")
    # A venv of another Python (a bookworm node upgraded to trixie) is made again.
    assert names.index("Remove a virtual environment made for another Python") < \
        names.index("Create the virtual environment")


# ---------------------------------------------------------------- Vagrant

# A stand-in for Vagrant's configuration objects: the Vagrantfile runs under plain Ruby
# and this prints each VM's box and which VM provisions.
RUBY_STUB = r'''
require "json"
class Rec
  attr_reader :calls
  def initialize; @calls = {}; end
  def method_missing(name, *args, &block)
    child = Rec.new
    (@calls[name.to_s] ||= []) << [args, child]
    block.call(child) if block
    child
  end
  def respond_to_missing?(*) = true
end
module Vagrant
  def self.user_data_path = "/nonexistent"
  def self.configure(_version)
    config = Rec.new
    yield config
    vms = {}
    config.calls["vm"].each do |_, vm|
      (vm.calls["define"] || []).each do |(name), machine|
        inner = machine.calls["vm"].map(&:last)
        box = inner.flat_map { |r| r.calls["box="] || [] }.map { |(args), _| args }.first
        provisions = inner.any? { |r| r.calls["provision"] }
        vms[name] = { "box" => box, "provisions" => provisions }
      end
    end
    puts JSON.generate({ "vms" => vms, "no_parallel" => ENV["VAGRANT_NO_PARALLEL"] })
  end
end
load ARGV[0]
'''


def vagrant_plan(tmp_path: Path, inventory: Path | None = None) -> subprocess.CompletedProcess[str]:
    stub = tmp_path / "stub.rb"
    stub.write_text(RUBY_STUB)
    env = {k: v for k, v in os.environ.items() if k != "VAGRANT_NO_PARALLEL"}
    if inventory:
        env["ZK_SENSOR_INVENTORY"] = str(inventory)
    return subprocess.run(["ruby", str(stub), str(REPO / "Vagrantfile")], capture_output=True,
                          text=True, timeout=60, env=env)


# The inventory's hosts on trixie that Vagrant boots (sensor4, arm64 and trixie, is the
# lab's only).
TRIXIE_VMS = {"zk3", "sensor3"}


def trixie_inventory(tmp_path: Path, os_name: str = "trixie") -> Path:
    """The inventory with its collectors and one sensor on another release."""
    data = yaml.safe_load(INVENTORY.read_text())
    children = data["all"]["children"]
    children["collector"]["vars"] = {"os": os_name}
    children["sensors"]["hosts"]["sensor2"]["os"] = os_name
    path = tmp_path / f"{os_name}.yml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.skipif(not shutil.which("ruby"), reason="needs ruby (Debian's vagrant has it)")
def test_each_vm_gets_its_releases_box_and_boots_before_the_last_provisions(
        tmp_path: Path) -> None:
    as_is = vagrant_plan(tmp_path)
    assert as_is.returncode == 0, as_is.stderr
    plan = json.loads(as_is.stdout)
    assert plan["no_parallel"] == "yes"
    # The inventory's own mixed fleet: its trixie hosts (but the arm64 one) get trixie's box.
    assert {name for name, vm in plan["vms"].items() if vm["box"] == "debian/trixie64"} == \
        TRIXIE_VMS
    assert {vm["box"] for name, vm in plan["vms"].items() if name not in TRIXIE_VMS} == \
        {"debian/bookworm64"}
    assert "sensor4" not in plan["vms"]  # arm64: the lab's, not Vagrant's
    assert [name for name, vm in plan["vms"].items() if vm["provisions"]] == \
        [list(plan["vms"])[-1]]
    mixed = json.loads(vagrant_plan(tmp_path, trixie_inventory(tmp_path)).stdout)["vms"]
    assert {name for name, vm in mixed.items() if vm["box"] == "debian/trixie64"} == \
        {"collector1", "collector2", "sensor2"} | TRIXIE_VMS
    assert mixed["zk1"]["box"] == "debian/bookworm64"


@pytest.mark.skipif(not shutil.which("ruby"), reason="needs ruby (Debian's vagrant has it)")
def test_the_vagrantfile_refuses_a_release_it_has_no_box_for(tmp_path: Path) -> None:
    refused = vagrant_plan(tmp_path, trixie_inventory(tmp_path, "bullseye"))
    assert refused.returncode != 0
    assert "collector1 has os: bullseye; Vagrant boxes exist for bookworm and trixie" in \
        refused.stderr


@pytest.mark.skipif(not shutil.which("vagrant"), reason="Debian's vagrant is not installed")
def test_vagrantfile_validates_with_trixie_boxes(tmp_path: Path) -> None:
    env = {**os.environ, "ZK_SENSOR_INVENTORY": str(trixie_inventory(tmp_path))}
    result = subprocess.run(["vagrant", "validate", "--ignore-provider"], capture_output=True,
                            text=True, cwd=REPO, timeout=300, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "validated successfully" in result.stdout


def test_the_roles_build_task_gives_each_node_its_targets_wheelhouse(tmp_path: Path) -> None:
    """install.yml's own tasks, from the node's readings to the wheelhouse it installs, on
    two made-up nodes (a bookworm PC, a trixie Pi) against the offline index."""
    index, project = fake_index(tmp_path)
    names = ("Note the node's target for the wheelhouse",
             "Build the wheelhouses on the controller (cached by source hash and target)",
             "Note the wheelhouse to install")
    tasks = [install_task(name) for name in names]
    readings = {"pc": ("amd64", "3.11.2 2.36"), "pi": ("arm64", "3.13.5 2.41")}
    inventory = tmp_path / "nodes.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {
        name: {"ansible_connection": "local",
               "zk_sensor_node_arch": {"stdout": arch},
               "zk_sensor_node_python": {"stdout": python}}
        for name, (arch, python) in readings.items()}}}))
    out = tmp_path / "chosen"
    out.mkdir()
    # After the defaults (a later vars file wins, and both outrank play vars).
    overrides = tmp_path / "overrides.json"
    overrides.write_text(json.dumps({
        "zk_sensor_project_dir": str(project),
        "zk_sensor_wheelhouse_cache": str(tmp_path / "cache"),
        "zk_sensor_source_paths": ["pyproject.toml", "backend.py", "src"],
        "zk_sensor_pip_wheel_args": ["--no-index", f"--find-links={index}"]}))
    playbook = tmp_path / "install.yml"
    playbook.write_text(json.dumps([{
        "hosts": "all", "gather_facts": False,
        "vars_files": [str(ZK_SENSOR / "defaults/main.yml"), str(overrides)],
        "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}",
                 "role_path": str(ZK_SENSOR)},
        "tasks": [*tasks, {"name": "chosen", "ansible.builtin.copy": {
            "dest": str(out / "{{ inventory_hostname }}.json"), "mode": "0644",
            "content": "{{ {'target': zk_sensor_target, 'wheels': zk_sensor_wheelhouse.wheels}"
                       " | to_json }}"}}]}]))
    result = run(str(BIN / "ansible-playbook"), "-i", str(inventory), str(playbook))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    chosen = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}
    assert chosen == {
        "pc": {"target": "3.11.2:x86_64:2.36",
               "wheels": ["fakepg-3.2-py3-none-any.whl", "fakeproj-1.0-py3-none-any.whl",
                          "typing_extensions-4.12.2-py3-none-any.whl"]},
        "pi": {"target": "3.13.5:aarch64:2.41",
               "wheels": ["fakepg-3.2-py3-none-any.whl", "fakeproj-1.0-py3-none-any.whl"]}}


@pytest.mark.skipif(not shutil.which("sed"), reason="needs sed")
def test_the_venvs_python_version_is_read_from_pyvenv_cfg(tmp_path: Path) -> None:
    """What the role compares with the node's python3 (X.Y) before it reuses a venv."""
    argv = install_task("Read the virtual environment's Python version")[
        "ansible.builtin.command"]["argv"]
    for version, full in (("3.11", "3.11.2"), ("3.13", "3.13.5")):
        cfg = tmp_path / f"{version}.cfg"
        cfg.write_text(f"home = /usr/bin\ninclude-system-site-packages = true\n"
                       f"version = {full}\nexecutable = /usr/bin/python{version}\n")
        read = subprocess.run([*argv[:-1], str(cfg)], capture_output=True, text=True,
                              check=True, timeout=30)
        assert read.stdout == f"{version}\n"

"""Static checks of what deploys the fleet: the playbook, the units, the Vagrantfile.
The ZooKeeper servers' hardening (the quorum CA, zoo.cfg, the unit, the firewall, the
key lifecycle) is in test_deploy_servers.py."""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from zk_sensor.testing.deploy import FLEET_PKI, INVENTORY, REPO, ROLES, render, run
from zk_sensor.testing.fleet import BIN


def test_ansible_lint_production_profile_is_clean() -> None:
    result = run(str(BIN / "ansible-lint"), "--profile", "production", "--offline")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


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


# ---------------------------------------------------------------- TLS and credentials

# Files that hold a private key or a password once deployed.
SECRET_DEST = ("key.pem", "keystore.pem", ".auth", ".key", "token", "pgpass", "jaas.conf",
               "secrets.args")


def test_secure_by_default() -> None:
    """TLS (ZooKeeper, the collector) and ACLs unless zk_secure is set false."""
    wanted = {
        "zk_pki": "zk_pki_enabled", "zookeeper": "zookeeper_tls",
        "zk_sensor": "zk_sensor_secure", "zk_operator": "zk_operator_secure",
        "zk_collector": "zk_collector_https", "zk_postgres": "zk_postgres_tls",
    }
    for role, name in wanted.items():
        defaults = yaml.safe_load((ROLES / role / "defaults/main.yml").read_text())
        assert defaults[name] == "{{ zk_secure | default(true) }}", role


def test_controller_secrets_are_git_ignored() -> None:
    for path in ("ansible/inventory/secrets/hosts/ca.key",
                 "ansible/inventory/secrets/hosts/fleet.password"):
        assert run("git", "check-ignore", "-q", path).returncode == 0, path


def tasks_in(path: Path) -> list[dict]:
    """Every task of a tasks file, blocks opened."""
    found = []
    pending = list(yaml.safe_load(path.read_text()) or [])
    while pending:
        task = pending.pop()
        for key in ("block", "rescue", "always"):
            pending.extend(task.get(key) or [])
        found.append(task)
    return found


def test_tasks_writing_secrets_hide_them() -> None:
    """A copy or template whose destination is a key, a key store, credentials or a token
    has no_log (nothing in the output or the logs) and diff: false (nothing in --diff)."""
    checked = 0
    for path in ROLES.glob("*/tasks/*.yml"):
        for task in tasks_in(path):
            module = next((task[m] for m in ("ansible.builtin.copy", "ansible.builtin.template")
                           if m in task), None)
            if not module:
                continue
            names = [str(module.get("dest", ""))]
            for item in task.get("loop") or []:
                if isinstance(item, dict):
                    names.append(str(item.get("name", "")))
                else:
                    names.append(str(item))
            if any(name.endswith(SECRET_DEST) for name in names) or "password" in str(module):
                checked += 1
                assert task.get("no_log") is True, (path.name, task["name"])
                assert task.get("diff") is False, (path.name, task["name"])
    assert checked >= 4


# The CA keys' passphrase, as the controller's environment gives it.
PKI_ENV = {**os.environ, "ZK_PKI_PASSPHRASE": "a passphrase for the tests"}


def run_pki(spec: dict) -> dict:
    result = subprocess.run([sys.executable, str(FLEET_PKI)], input=json.dumps(spec),
                            capture_output=True, text=True, timeout=60, check=True,
                            env=PKI_ENV)
    return json.loads(result.stdout)


def test_fleet_pki_makes_the_ca_once_and_reissues_only_what_changed(tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    spec = {"dir": str(tmp_path / "secrets"), "ca_name": "test CA",
            "quorum_ca_name": "test quorum CA", "ca_days": 3650,
            "cert_days": 365, "renew_days": 30, "curve": "P-256",
            "hosts": {"zk1": "10.231.0.11", "sensor1": "10.231.0.21"}, "quorum_hosts": ["zk1"],
            "extra_names": {"zk1": ["zk1.example.org"]}, "clients": ["operator"]}
    first = run_pki(spec)
    assert first["created"] == ["ca", "quorum-ca"] and sorted(first["issued"]) == \
        ["clients/operator", "hosts/sensor1", "hosts/zk1", "quorum/zk1"]
    assert run_pki(spec) == {**first, "changed": False, "created": [], "issued": []}

    secrets = tmp_path / "secrets"
    assert secrets.stat().st_mode & 0o777 == 0o700
    for key in [secrets / "ca.key", secrets / "quorum-ca.key", *secrets.glob("*/*.key")]:
        assert key.stat().st_mode & 0o777 == 0o600, key
        assert key.read_text().startswith(  # PKCS#8, the CAs' encrypted
            "-----BEGIN ENCRYPTED PRIVATE KEY-----" if key.parent == secrets
            else "-----BEGIN PRIVATE KEY-----"), key
    ca = x509.load_pem_x509_certificate((secrets / "ca.pem").read_bytes())
    zk1 = x509.load_pem_x509_certificate((secrets / "hosts/zk1.pem").read_bytes())
    ca.public_key().verify(zk1.signature, zk1.tbs_certificate_bytes,
                           ec.ECDSA(zk1.signature_hash_algorithm))
    names = zk1.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(n) for n in names.get_values_for_type(x509.DNSName)} == {"zk1", "zk1.example.org"}
    assert [str(n) for n in names.get_values_for_type(x509.IPAddress)] == ["10.231.0.11"]

    # An address that changed: that host's certificate only.
    moved = {**spec, "hosts": {**spec["hosts"], "sensor1": "10.231.0.99"}}
    assert run_pki(moved)["issued"] == ["hosts/sensor1"]
    # A replaced CA: every certificate again.
    (secrets / "ca.key").unlink()
    (secrets / "ca.pem").unlink()
    again = run_pki(moved)
    assert again["created"] == ["ca"] and len(again["issued"]) == 3
    # Half a CA is refused, not guessed.
    (secrets / "ca.key").unlink()
    refused = subprocess.run([sys.executable, str(FLEET_PKI)], input=json.dumps(moved),
                             capture_output=True, text=True, timeout=60, env=PKI_ENV)
    assert refused.returncode == 1 and "only one of ca.key and ca.pem" in refused.stderr


# ---------------------------------------------------------------- real sensors, a Pi's arch

ZK_SENSOR = ROLES / "zk_sensor"


def test_unit_admits_the_gpio_spi_and_i2c_devices_only() -> None:
    unit = (REPO / "systemd/zk-sensor.service").read_text().splitlines()
    assert "DevicePolicy=closed" in unit
    assert "PrivateDevices=yes" not in unit
    assert sorted(line for line in unit if line.startswith("DeviceAllow=")) == sorted([
        "DeviceAllow=char-*gpiomem* rw", "DeviceAllow=char-gpiochip rw",
        "DeviceAllow=char-spi rw", "DeviceAllow=char-i2c rw"])


def test_service_user_joins_the_gpio_spi_and_i2c_groups() -> None:
    defaults = yaml.safe_load((ZK_SENSOR / "defaults/main.yml").read_text())
    assert defaults["zk_sensor_device_groups"] == ["gpio", "spi", "i2c"]


def test_node_configuration_is_validated_by_the_daemon_after_its_files() -> None:
    """`zk-sensor --check-config` checks the credential and TLS files the config names:
    the code and those files come before the template that it validates."""
    tasks = yaml.safe_load((ZK_SENSOR / "tasks/main.yml").read_text())
    names = [task["name"] for task in tasks]
    template = next(task for task in tasks if task["name"] == "Write the node's configuration")
    assert template["ansible.builtin.template"]["validate"] == \
        "{{ zk_sensor_venv }}/bin/zk-sensor --check-config --config %s"
    defaults = yaml.safe_load((ZK_SENSOR / "defaults/main.yml").read_text())
    assert defaults["zk_sensor_venv"] == "{{ zk_sensor_prefix }}/venv"
    assert defaults["zk_sensor_prefix"] == "/opt/zk-sensor"
    position = names.index("Write the node's configuration")
    for earlier in ("Install the code",
                    "Install the node's certificate and key, the CA certificate and the "
                    "fleet's credentials"):
        assert names.index(earlier) < position, earlier


# zk_sensor's defaults for one node's variables: the Debian packages it gets and whether
# its venv sees them.
LIBRARY_CASES = {
    "simulated": ({}, [], False),
    "ds18b20": ({"zk_sensor_driver": "ds18b20"}, [], False),
    "mcp3008": ({"zk_sensor_driver": "mcp3008"}, ["python3-lgpio"], True),
    "distance-pigpio": ({"zk_sensor_driver": "distance",
                         "zk_sensor_settings": {"pin_factory": "pigpio"}},
                        ["python3-pigpio"], True),
    "mcp3204-rpigpio": ({"zk_sensor_driver": "mcp3204",
                         "zk_sensor_settings": {"pin_factory": "rpigpio"}},
                        ["python3-rpi.gpio", "python3-spidev"], True),
    "plugin": ({"zk_sensor_driver": "bme280", "zk_sensor_python_packages": ["python3-smbus2"]},
               ["python3-smbus2"], True),
    "forced-off": ({"zk_sensor_driver": "light", "zk_sensor_venv_system_site_packages": False},
                   ["python3-lgpio"], False),
}


def test_each_driver_gets_its_library_from_debian_and_a_venv_that_sees_it(
        tmp_path: Path) -> None:
    plays = [{
        "hosts": "localhost", "connection": "local", "gather_facts": False,
        "vars_files": [str(ZK_SENSOR / "defaults/main.yml")],
        "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}"},
        "tasks": [{
            "name": case,
            "ansible.builtin.copy": {
                "dest": str(tmp_path / f"{case}.json"), "mode": "0644",
                "content": "{{ {'packages': zk_sensor_system_packages, "
                           "'site': zk_sensor_system_site | bool} | to_json }}"},
            "vars": node_vars,
        } for case, (node_vars, _, _) in LIBRARY_CASES.items()],
    }]
    playbook = tmp_path / "libraries.yml"
    playbook.write_text(json.dumps(plays))
    result = run(str(BIN / "ansible-playbook"), "-i", "localhost,", str(playbook))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for case, (_, packages, site) in LIBRARY_CASES.items():
        assert json.loads((tmp_path / f"{case}.json").read_text()) == \
            {"packages": packages, "site": site}, case


def test_inventory_has_an_arm64_sensor_the_lab_can_boot() -> None:
    sys.path.insert(0, str(REPO / "ansible" / "lab"))
    from lab import QEMU_ARCHES, load_inventory

    hosts, _ = load_inventory(REPO / "ansible/inventory/hosts.yml")
    arm64 = [h for h in hosts.values() if h.arch == "arm64"]
    assert arm64 and all(h.groups == ("sensors",) for h in arm64), arm64
    assert set(QEMU_ARCHES) >= {"arm64"}


def test_lab_refuses_what_it_cannot_emulate(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "ansible" / "lab"))
    from lab import LabError, load_inventory, native_arch

    foreign = "arm64" if native_arch() != "arm64" else "armhf"
    for group, arch, refusal in (("zookeeper", foreign, "has no Java"),
                                 ("collector_database", foreign, "has no PostgreSQL"),
                                 ("sensors", "sparc", "has arch 'sparc'")):
        inventory = tmp_path / f"{group}-{arch}.yml"
        inventory.write_text(yaml.safe_dump({"all": {"children": {group: {"hosts": {
            "one": {"ansible_host": "10.231.0.40", "arch": arch}}}}}}))
        with pytest.raises(LabError, match=refusal):
            load_inventory(inventory)


# ---------------------------------------------------------------- shared PostgreSQL (issue 12)

ZK_COLLECTOR = ROLES / "zk_collector"
ZK_POSTGRES = ROLES / "zk_postgres"
DATABASE_URI = ("postgresql://zk_collector@10.231.0.35:5432/zk_collector"
                "?passfile=/etc/zk-collector/pgpass")
VERIFY_FULL = "&sslmode=verify-full&sslrootcert=/etc/zk-collector/ca.pem"


def test_every_collector_gets_the_collector_play() -> None:
    """A host named like a group is all Ansible takes for that name (`hosts: collector`,
    `--limit collector`): no host may be, or the second collector gets nothing."""
    result = run(str(BIN / "ansible-playbook"), "-i", str(INVENTORY), "ansible/site.yml",
                 "--list-hosts")
    assert result.returncode == 0, result.stderr
    assert "same name" not in result.stderr, result.stderr
    hosts = {name: sorted(block.split("\n", 1)[1].split()) for name, block in
             re.findall(r"play #\d+ \(.*?\): (.*?)\t.*?(hosts \(\d+\):\n.*?)(?:\n\n|$)",
                        result.stdout, re.DOTALL)}
    assert hosts["Collector"] == ["collector1", "collector2"], hosts
    assert hosts["Collectors' database (PostgreSQL)"] == ["db"], hosts
    assert hosts["Operator's seat and the fleet's ZooKeeper ACLs"] == ["collector1"], hosts


def render_template(role: Path, template: str, dest: Path, **task_vars: object) -> dict:
    return {"name": dest.name, "vars": task_vars, "ansible.builtin.template": {
        "src": str(role / "templates" / template), "dest": str(dest), "mode": "0644"}}


def collector_play(tmp_path: Path, prefix: str) -> dict:
    """collector1's configuration file, secure (the default) and with zk_secure false."""
    return {"hosts": "collector1",
            "vars_files": [str(ZK_COLLECTOR / "defaults/main.yml"),
                           str(ZK_COLLECTOR / "vars/main.yml")],
            "tasks": [render_template(ZK_COLLECTOR, "zk-collector.toml.j2",
                                      tmp_path / f"{prefix}-secure.toml"),
                      render_template(ZK_COLLECTOR, "zk-collector.toml.j2",
                                      tmp_path / f"{prefix}-plain.toml", zk_secure=False)]}


def test_collectors_use_the_database_only_when_the_inventory_has_one(tmp_path: Path) -> None:
    """With the lab's `collector_database` host every collector's config names it, its
    certificate checked (verify-full) unless zk_secure is false, the password only in the
    passfile; without that group nothing changes: no `database`, SQLite's `db`."""
    without = yaml.safe_load(INVENTORY.read_text())
    del without["all"]["children"]["collector_database"]
    bare = tmp_path / "without-database.yml"
    bare.write_text(yaml.safe_dump(without))
    render(tmp_path, INVENTORY, [collector_play(tmp_path, "lab")])
    render(tmp_path, bare, [collector_play(tmp_path, "bare")])

    def config(name: str) -> dict:
        return tomllib.loads((tmp_path / name).read_text())

    assert config("lab-secure.toml")["database"] == DATABASE_URI + VERIFY_FULL
    assert config("lab-plain.toml")["database"] == DATABASE_URI
    for name in ("bare-secure.toml", "bare-plain.toml"):
        assert "database" not in config(name)
        assert config(name)["db"] == "/var/lib/zk-collector/rounds.sqlite3"


def test_the_database_uri_is_one_libpq_reads(tmp_path: Path) -> None:
    """libpq's own parser (psycopg's conninfo_to_dict) on the URI the role writes."""
    conninfo = pytest.importorskip("psycopg.conninfo", reason="psycopg (and libpq5) missing")
    assert conninfo.conninfo_to_dict(DATABASE_URI + VERIFY_FULL) == {
        "user": "zk_collector", "host": "10.231.0.35", "port": "5432",
        "dbname": "zk_collector", "passfile": "/etc/zk-collector/pgpass",
        "sslmode": "verify-full", "sslrootcert": "/etc/zk-collector/ca.pem"}


def test_postgres_admits_the_collectors_only_and_listens_on_its_address(
        tmp_path: Path) -> None:
    render(tmp_path, INVENTORY, [{
        "hosts": "db", "vars_files": [str(ZK_POSTGRES / "defaults/main.yml")],
        "tasks": [render_template(ZK_POSTGRES, "pg_hba.conf.j2", tmp_path / "hba-secure"),
                  render_template(ZK_POSTGRES, "pg_hba.conf.j2", tmp_path / "hba-plain",
                                  zk_secure=False),
                  render_template(ZK_POSTGRES, "zk-sensor.conf.j2", tmp_path / "conf-secure"),
                  render_template(ZK_POSTGRES, "zk-sensor.conf.j2", tmp_path / "conf-plain",
                                  zk_secure=False)]}])

    def lines(name: str) -> list[str]:
        return [" ".join(line.split()) for line in (tmp_path / name).read_text().splitlines()
                if line.strip() and not line.startswith("#")]

    collectors = ["10.231.0.30/32", "10.231.0.31/32"]
    assert lines("hba-secure") == ["local all postgres peer"] + [
        f"hostssl zk_collector zk_collector {address} scram-sha-256" for address in collectors]
    assert lines("hba-plain") == ["local all postgres peer"] + [
        f"host zk_collector zk_collector {address} scram-sha-256" for address in collectors]
    secrets = "/etc/postgresql/15/main/zk-sensor"
    assert lines("conf-secure") == [
        "listen_addresses = '10.231.0.35'", "port = 5432",
        "password_encryption = 'scram-sha-256'", "ssl = on",
        f"ssl_cert_file = '{secrets}/cert.pem'", f"ssl_key_file = '{secrets}/key.pem'",
        "ssl_min_protocol_version = 'TLSv1.2'"]
    assert lines("conf-plain") == lines("conf-secure")[:3]


def test_sensors_deliver_to_every_collector_or_one_address(tmp_path: Path) -> None:
    """Every collector's address, in inventory order, by default (the node fails over from
    one to the next); a load balancer's alone when set."""
    render(tmp_path, INVENTORY, [{
        "hosts": "sensor1", "vars_files": [str(ZK_SENSOR / "defaults/main.yml")],
        "tasks": [{"name": name, "vars": task_vars, "ansible.builtin.copy": {
            "dest": str(tmp_path / name), "mode": "0644", "content": "{{ zk_sensor_api_url }}"}}
            for name, task_vars in (
                ("default", {}),
                ("balanced", {"zk_sensor_collector_address": "collectors.example.org"}))]}])
    assert (tmp_path / "default").read_text() == \
        "https://10.231.0.30:8080/api/rounds,https://10.231.0.31:8080/api/rounds"
    assert (tmp_path / "balanced").read_text() == \
        "https://collectors.example.org:8080/api/rounds"


def database_role_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "database_role", ZK_POSTGRES / "files" / "database_role.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# A verifier PostgreSQL 15 itself made (CREATE ROLE ... PASSWORD with scram-sha-256).
POSTGRES_VERIFIER = ("SCRAM-SHA-256$4096:ZejUsV3F0yw8lsxCFfRpaw==$/EG4XiDJpwSGurRng7rTVoL9g"
                     "DWWMzymb99/YTCmKjI=:F7oehe3szx3+FV5R0giKEvy1AhUuuBboHAQDZMBe0t0=")
POSTGRES_PASSWORD = "Pencil0of32LettersAndDigits9xyzQ"


def test_the_role_password_is_set_only_when_postgres_would_refuse_it(tmp_path: Path) -> None:
    """The zk_postgres role compares the password with the role's stored SCRAM verifier
    (a second run changes nothing) and sets a verifier it computed (the server never
    sees the password): both agree with PostgreSQL's own."""
    script = database_role_script()
    assert script.matches(POSTGRES_VERIFIER, POSTGRES_PASSWORD)
    assert not script.matches(POSTGRES_VERIFIER, POSTGRES_PASSWORD[:-1] + "R")
    assert not script.matches("md5" + "0" * 32, POSTGRES_PASSWORD)
    assert not script.matches("", POSTGRES_PASSWORD)
    mine = script.verifier(POSTGRES_PASSWORD)
    assert mine.startswith("SCRAM-SHA-256$4096:") and mine != script.verifier(POSTGRES_PASSWORD)
    assert script.matches(mine, POSTGRES_PASSWORD)
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"fe80\\:\\:1:5432:zk_collector:zk_collector:{POSTGRES_PASSWORD}\n")
    assert script.read_password(str(passfile)) == POSTGRES_PASSWORD


def test_the_lab_base_holds_postgresql_for_its_offline_machines() -> None:
    """The lab's machines have no route out: what the database and the collectors need
    from Debian is in the base, which a new recipe number rebuilds."""
    sys.path.insert(0, str(REPO / "ansible" / "lab"))
    from lab import BASE_RECIPE, CHROOT_PACKAGES, load_inventory

    hosts, _ = load_inventory(INVENTORY)
    assert [h.name for h in hosts.values() if "collector_database" in h.groups] == ["db"]
    assert {"postgresql", "libpq5", "nftables"} <= set(CHROOT_PACKAGES)
    assert BASE_RECIPE >= 3

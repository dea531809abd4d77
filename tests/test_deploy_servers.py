"""Static checks of what hardens the ZooKeeper servers (issue 18): the two CAs and the key
lifecycle (fleet_pki.py), the quorum's files (zk_pki's quorum.yml), the rendered zoo.cfg
and unit, and the host firewall's ruleset. The quorum itself is proven against real
servers in test_adversary_quorum.py."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from zk_sensor.testing.deploy import (
    FLEET_PKI,
    INVENTORY,
    REPO,
    ROLES,
    render,
    render_firewall,
    run,
)

UNITS_PAGE = REPO / "docs" / "reference" / "systemd-units.md"
ZOOKEEPER = ROLES / "zookeeper"
ZK_PKI = ROLES / "zk_pki"
HOSTS_IN_INVENTORY = 11
PASSPHRASE = "correct horse battery staple"
SPEC = {"ca_name": "test fleet CA", "quorum_ca_name": "test quorum CA", "ca_days": 3650,
        "cert_days": 90, "renew_days": 30, "curve": "P-256",
        "hosts": {"zk1": "10.231.0.11", "sensor1": "10.231.0.21"},
        "quorum_hosts": ["zk1"], "extra_names": {}, "clients": ["operator"],
        "crl_url": "file:///etc/zookeeper/tls/ca.crl"}


def pki(tmp_path: Path, passphrase: str | None = PASSPHRASE, **spec: object,
        ) -> subprocess.CompletedProcess[str]:
    """fleet_pki.py on a spec in tmp_path/secrets, the passphrase in ZK_PKI_PASSPHRASE (or
    none: then the file tmp_path/passphrase)."""
    env = {k: v for k, v in os.environ.items() if k != "ZK_PKI_PASSPHRASE"}
    if passphrase is not None:
        env["ZK_PKI_PASSPHRASE"] = passphrase
    full = {**SPEC, "dir": str(tmp_path / "secrets"),
            "passphrase_file": str(tmp_path / "config" / "passphrase"), **spec}
    return subprocess.run([sys.executable, str(FLEET_PKI)], input=json.dumps(full), env=env,
                          capture_output=True, text=True, timeout=60)


def certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def crl_urls(cert: x509.Certificate) -> list[str]:
    try:
        points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return []
    return [name.value for point in points for name in point.full_name or []]


def days(cert: x509.Certificate) -> float:
    return (cert.not_valid_after_utc - cert.not_valid_before_utc).total_seconds() / 86400


# ---------------------------------------------------------------- the two CAs, the keys


def test_the_quorum_has_its_own_ca_and_leaves_live_90_days(tmp_path: Path) -> None:
    import yaml

    assert yaml.safe_load((ZK_PKI / "defaults/main.yml").read_text())["zk_pki_cert_days"] == 90
    made = pki(tmp_path)
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["created"] == ["ca", "quorum-ca"]
    secrets = tmp_path / "secrets"
    fleet, quorum = certificate(secrets / "ca.pem"), certificate(secrets / "quorum-ca.pem")
    assert fleet.subject != quorum.subject and fleet.public_key() != quorum.public_key()
    assert certificate(secrets / "quorum/zk1.pem").issuer == quorum.subject
    for leaf in ("hosts/zk1", "hosts/sensor1", "clients/operator"):
        assert certificate(secrets / f"{leaf}.pem").issuer == fleet.subject, leaf
        assert 89.9 < days(certificate(secrets / f"{leaf}.pem")) < 90.1, leaf
        # Where the servers find the fleet CA's revocation list (ssl.crl=true).
        assert crl_urls(certificate(secrets / f"{leaf}.pem")) == [SPEC["crl_url"]], leaf
    assert crl_urls(certificate(secrets / "quorum/zk1.pem")) == []
    assert not (secrets / "quorum/sensor1.pem").exists()  # a sensor gets no quorum cert


def test_the_ca_keys_are_encrypted_with_the_passphrase(tmp_path: Path) -> None:
    assert pki(tmp_path).returncode == 0
    for stem in ("ca", "quorum-ca"):
        data = (tmp_path / "secrets" / f"{stem}.key").read_bytes()
        assert data.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----"), stem
        with pytest.raises(TypeError):
            serialization.load_pem_private_key(data, password=None)
        serialization.load_pem_private_key(data, password=PASSPHRASE.encode())
    before = {p: p.read_bytes() for p in (tmp_path / "secrets").rglob("*") if p.is_file()}
    wrong = pki(tmp_path, passphrase="not it", cert_days=30)
    assert wrong.returncode == 1 and "cannot decrypt" in wrong.stderr
    assert before == {p: p.read_bytes() for p in (tmp_path / "secrets").rglob("*")
                      if p.is_file()}


def test_an_old_plain_ca_key_is_encrypted_in_place(tmp_path: Path) -> None:
    """A CA made by an older version (unencrypted) keeps its key and certificates."""
    assert pki(tmp_path).returncode == 0
    key_path = tmp_path / "secrets" / "ca.key"
    key = serialization.load_pem_private_key(key_path.read_bytes(), PASSPHRASE.encode())
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    again = pki(tmp_path)
    assert json.loads(again.stdout) | {"ca_not_after": ""} == {
        "changed": True, "created": [], "encrypted": ["ca"], "issued": [], "revoked": [],
        "ca_not_after": ""}
    assert key_path.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")


def test_the_passphrase_file_is_made_once_and_never_replaced(tmp_path: Path) -> None:
    first = pki(tmp_path, passphrase=None)
    assert first.returncode == 0, first.stderr
    passphrase = tmp_path / "config" / "passphrase"
    assert passphrase.stat().st_mode & 0o777 == 0o600
    assert len(passphrase.read_text().strip()) == 32
    assert json.loads(pki(tmp_path, passphrase=None).stdout)["changed"] is False
    passphrase.unlink()
    lost = pki(tmp_path, passphrase=None)
    assert lost.returncode == 1 and "restore it from its backup" in lost.stderr
    assert not passphrase.exists()


def test_super_password_stays_on_the_controller_with_its_digest(tmp_path: Path) -> None:
    """ZooKeeper's digest of super:<password> (base64 of SHA-1), which the servers get."""
    import base64
    import hashlib

    assert pki(tmp_path).returncode == 0
    secrets = tmp_path / "secrets"
    password = (secrets / "super.password").read_text().strip()
    assert len(password) == 32
    raw = hashlib.sha1(f"super:{password}".encode()).digest()
    assert (secrets / "super.digest").read_text() == \
        f"super:{base64.b64encode(raw).decode()}\n"
    for name in ("super.password", "super.digest"):
        assert (secrets / name).stat().st_mode & 0o777 == 0o600


def test_the_secrets_directory_is_outside_the_checkout(tmp_path: Path) -> None:
    render(tmp_path, INVENTORY, [{
        "hosts": "zk1", "vars_files": [str(ZK_PKI / "defaults/main.yml")],
        "tasks": [{"name": "dirs", "ansible.builtin.copy": {
            "dest": str(tmp_path / "dirs.json"), "mode": "0644",
            "content": "{{ {'dir': zk_pki_dir, 'passphrase': zk_pki_passphrase_file, "
                       "'legacy': zk_pki_legacy_dir} | to_json }}"}}]}])
    dirs = json.loads((tmp_path / "dirs.json").read_text())
    home = Path(os.environ["HOME"])
    data = Path(os.environ.get("XDG_DATA_HOME") or home / ".local/share")
    config = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
    assert dirs["dir"] == str(data / "zk-sensor/pki/hosts")
    assert dirs["passphrase"] == str(config / "zk-sensor/pki/hosts.passphrase")
    assert REPO not in Path(dirs["dir"]).parents
    assert dirs["legacy"] == str(REPO / "ansible/inventory/secrets/hosts")


def test_a_revoked_sensor_gets_no_certificate_and_its_serial_is_listed(
        tmp_path: Path) -> None:
    import yaml

    inventory = yaml.safe_load(INVENTORY.read_text())
    inventory["all"]["children"]["sensors"]["hosts"]["sensor2"]["zk_sensor_revoked"] = True
    revoking = tmp_path / "hosts.yml"
    revoking.write_text(yaml.safe_dump(inventory))
    render(tmp_path, revoking, [{
        "hosts": "sensors", "vars_files": [str(ZK_PKI / "defaults/main.yml")],
        "tasks": [{"name": "hosts", "run_once": True, "ansible.builtin.copy": {
            "dest": str(tmp_path / "hosts.json"), "mode": "0644",
            "content": "{{ {'hosts': zk_pki_hosts, 'revoked': zk_pki_revoked} | to_json }}"}}]}])
    chosen = json.loads((tmp_path / "hosts.json").read_text())
    assert chosen["revoked"] == ["sensor2"] and "sensor2" not in chosen["hosts"]

    assert pki(tmp_path).returncode == 0
    serial = certificate(tmp_path / "secrets/hosts/sensor1.pem").serial_number
    revoked = pki(tmp_path, revoked=["sensor1"])
    assert json.loads(revoked.stdout)["revoked"] == ["hosts/sensor1"]
    crl = x509.load_der_x509_crl((tmp_path / "secrets/ca.crl").read_bytes())
    assert [entry.serial_number for entry in crl] == [serial]
    assert not (tmp_path / "secrets/hosts/sensor1.key").exists()
    refused = pki(tmp_path, revoked=["zk1"])
    assert refused.returncode == 1 and "cannot be revoked" in refused.stderr


# ---------------------------------------------------------------- the servers' files


def quorum_files(tmp_path: Path) -> Path:
    """zk_pki's quorum.yml run on the controller into tmp_path/tls, from a fresh PKI."""
    assert pki(tmp_path).returncode == 0
    dest = tmp_path / "tls"
    dest.mkdir()
    render(tmp_path, INVENTORY, [{"hosts": "zk1", "tasks": [{
        "name": "quorum files", "ansible.builtin.include_role": {
            "name": str(ZK_PKI), "tasks_from": "quorum.yml"},
        "vars": {"zk_pki_dir": str(tmp_path / "secrets"), "zk_pki_quorum_dest": str(dest),
                 "zk_pki_quorum_owner": "root",
                 "zk_pki_crl_url": (dest / "ca.crl").as_uri()}}]}])
    return dest


def test_a_server_gets_the_quorum_ca_its_quorum_key_and_only_the_super_digest(
        tmp_path: Path) -> None:
    dest, secrets = quorum_files(tmp_path), tmp_path / "secrets"
    assert (dest / "quorum-ca.pem").read_bytes() == (secrets / "quorum-ca.pem").read_bytes()
    assert (dest / "ca.crl").read_bytes() == (secrets / "ca.crl").read_bytes()
    store = (dest / "quorum-keystore.pem").read_bytes()
    assert store == (secrets / "quorum/zk1.key").read_bytes() + \
        (secrets / "quorum/zk1.pem").read_bytes()
    jaas = (dest / "quorum-jaas.conf").read_text()
    password = (secrets / "quorum.password").read_text().split()[0]
    assert re.search(rf'QuorumServer \{{.*user_zkquorum="{password}";\s*\}};', jaas, re.S)
    assert re.search(rf'QuorumLearner \{{.*username="zkquorum"\s*password="{password}";',
                     jaas, re.S)
    digest = (secrets / "super.digest").read_text().strip()
    assert (dest / "secrets.args").read_text() == \
        f"-Dzookeeper.DigestAuthenticationProvider.superDigest={digest}\n"
    super_password = (secrets / "super.password").read_text().strip()
    for path in dest.iterdir():
        assert super_password.encode() not in path.read_bytes(), path
        if path.name not in ("quorum-ca.pem", "ca.crl"):
            assert path.stat().st_mode & 0o777 == 0o600, path


def render_zookeeper(tmp_path: Path, memtotal_kb: int, **task_vars: object) -> dict[str, str]:
    """zoo.cfg and zookeeper.service for zk1, on a machine with memtotal_kb of memory."""
    names = ("zoo.cfg", "zookeeper.service")
    render(tmp_path, INVENTORY, [{
        "hosts": "zk1",
        "vars_files": [str(ZOOKEEPER / "defaults/main.yml"), str(ZOOKEEPER / "vars/main.yml")],
        "tasks": [{"name": name, "vars": {"zookeeper_meminfo": {"stdout": str(memtotal_kb)},
                                          **task_vars},
                   "ansible.builtin.template": {
                       "src": str(ZOOKEEPER / "templates" / f"{name}.j2"),
                       "dest": str(tmp_path / name), "mode": "0644"}} for name in names]}])
    return {name: (tmp_path / name).read_text() for name in names}


def settings(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines()
                if "=" in line and not line.startswith("#"))


def test_zoo_cfg_quorum_trusts_only_the_quorum_ca_with_sasl_and_binds_one_address(
        tmp_path: Path) -> None:
    config = settings(render_zookeeper(tmp_path, 1_000_000)["zoo.cfg"])
    tls = "/etc/zookeeper/tls"
    assert {key: config[key] for key in (
        "ssl.quorum.trustStore.location", "ssl.quorum.keyStore.location",
        "ssl.trustStore.location", "ssl.crl", "sslQuorum", "quorum.auth.enableSasl",
        "quorum.auth.learnerRequireSasl", "quorum.auth.serverRequireSasl",
        "secureClientPortAddress", "quorumListenOnAllIPs")} == {
        "ssl.quorum.trustStore.location": f"{tls}/quorum-ca.pem",
        "ssl.quorum.keyStore.location": f"{tls}/quorum-keystore.pem",
        "ssl.trustStore.location": f"{tls}/ca.pem",  # clients: the fleet's CA
        "ssl.crl": "true",  # ...less what it revoked
        "sslQuorum": "true", "quorum.auth.enableSasl": "true",
        "quorum.auth.learnerRequireSasl": "true", "quorum.auth.serverRequireSasl": "true",
        "secureClientPortAddress": "10.231.0.11", "quorumListenOnAllIPs": "false"}
    assert "clientPort" not in config
    # Connections per address: every machine of the inventory behind one address, twice,
    # plus 10; the inventory may say how many machines share one.
    assert config["maxClientCnxns"] == str(HOSTS_IN_INVENTORY * 2 + 10)
    capped = settings(render_zookeeper(tmp_path, 1_000_000,
                                       zookeeper_clients_per_address=200)["zoo.cfg"])
    assert capped["maxClientCnxns"] == "410"


@pytest.mark.parametrize(("memtotal_mb", "heap_mb"), [(512, 128), (1000, 250), (16000, 1024)])
def test_unit_heap_follows_the_machine_within_memory_max(
        tmp_path: Path, memtotal_mb: int, heap_mb: int) -> None:
    unit = render_zookeeper(tmp_path, memtotal_mb * 1024)["zookeeper.service"]
    exec_start = settings(unit)["ExecStart"]
    assert f" -Xms{heap_mb}m -Xmx{heap_mb}m " in exec_start
    assert settings(unit)["MemoryMax"] == f"{heap_mb + 384}M"


def test_unit_hardening_and_the_super_digest_off_the_command_line(tmp_path: Path) -> None:
    unit = render_zookeeper(tmp_path, 1_000_000)["zookeeper.service"]
    exec_start = settings(unit)["ExecStart"]
    assert exec_start.startswith("/usr/bin/java @/etc/zookeeper/tls/secrets.args ")
    assert "superDigest" not in unit and "super:" not in unit
    for option in ("-Dzookeeper.enforceQuota=true",
                   "-Djava.security.auth.login.config=/etc/zookeeper/tls/quorum-jaas.conf"):
        assert f" {option} " in exec_start, option
    lines = unit.splitlines()
    for line in ("SystemCallFilter=@system-service", "SystemCallFilter=~@privileged",
                 "SystemCallErrorNumber=EPERM", "NoNewPrivileges=yes", "CapabilityBoundingSet=",
                 "ProtectSystem=strict", "PrivateDevices=yes", "ProtectProc=invisible"):
        assert line in lines, line
    if shutil.which("systemd-analyze") and Path("/usr/bin/java").exists():
        unit_file = tmp_path / "zookeeper.service"
        verify = run("systemd-analyze", "verify", str(unit_file))
        assert (verify.returncode, verify.stdout, verify.stderr) == (0, "", "")
        security = run("systemd-analyze", "security", "--offline=yes", str(unit_file))
        score = re.search(r"Overall exposure level for zookeeper.service: ([\d.]+)",
                          security.stdout)
        assert score and float(score.group(1)) <= 2.0, security.stdout[-2000:]
        # The docs state it beside the other units' (tests/test_unit_security.py).
        assert f"{score.group(1)} (zookeeper)" in " ".join(UNITS_PAGE.read_text().split())


# ---------------------------------------------------------------- the host firewall


def accepted(ruleset: str) -> set[str]:
    return {line.strip() for line in ruleset.splitlines()
            if line.strip().endswith("accept") and "saddr" in line}


def test_the_firewall_opens_each_port_to_whom_needs_it_only(tmp_path: Path) -> None:
    rulesets = render_firewall(tmp_path)
    fleet, controller = "10.231.0.0/24", "10.231.0.1"
    ssh = {f"ip saddr {controller} tcp dport {{ 22 }} accept"}
    assert accepted(rulesets["zk1"]) == ssh | {
        "ip saddr 10.231.0.12 tcp dport { 2888, 3888 } accept",
        "ip saddr 10.231.0.13 tcp dport { 2888, 3888 } accept",
        f"ip saddr {fleet} tcp dport {{ 2181, 2281 }} accept",
        f"ip saddr {controller} tcp dport {{ 2181, 2281 }} accept"}
    collector = {f"ip saddr {fleet} tcp dport {{ 8080 }} accept",
                 f"ip saddr {controller} tcp dport {{ 8080 }} accept"}
    assert accepted(rulesets["collector2"]) == ssh | collector
    assert accepted(rulesets["collector1"]) == ssh | collector | {
        f"ip saddr {fleet} tcp dport {{ 9141 }} accept",
        f"ip saddr {controller} tcp dport {{ 9141 }} accept"}
    for ruleset in rulesets.values():
        assert "type filter hook input priority filter; policy drop;" in ruleset
        assert "ct state established,related accept" in ruleset


@pytest.mark.skipif(not shutil.which("nft") or not shutil.which("unshare") or os.geteuid(),
                    reason="needs nft (Debian's nftables), unshare and root")
def test_nft_accepts_the_rendered_rulesets(tmp_path: Path) -> None:
    """`nft -c` in a network namespace of its own, as the role's validate does."""
    for host, ruleset in render_firewall(tmp_path).items():
        checked = run("unshare", "--net", "nft", "-c", "-f", str(tmp_path / f"{host}.nft"))
        assert checked.returncode == 0, (host, checked.stderr, ruleset)


def test_the_firewall_play_covers_the_servers_and_collectors_before_zookeeper() -> None:
    import yaml

    plays = yaml.safe_load((REPO / "ansible/site.yml").read_text())
    names = [play["name"] for play in plays]
    firewall = plays[names.index("Host firewall (ZooKeeper servers and collectors)")]
    assert firewall["hosts"] == "zookeeper:collector"
    assert firewall["roles"] == [{"role": "zk_firewall",
                                  "when": "zk_firewall | default(true) | bool"}]
    assert names.index(firewall["name"]) < names.index("ZooKeeper ensemble")


def test_the_readiness_probe_asks_each_server_at_its_own_address(tmp_path: Path) -> None:
    """ZooKeeper listens on its ansible_host only. Delegated (the rolling restart's wait),
    a task's variables are still the first host's: the probe must name the delegated
    server's address, or it asks the same server three times."""
    import yaml

    render(tmp_path, INVENTORY, [{
        "hosts": "zk2",
        "vars_files": [str(ZOOKEEPER / "defaults/main.yml"), str(ZOOKEEPER / "vars/main.yml")],
        "tasks": [{"name": name, "vars": probe_vars, "ansible.builtin.copy": {
            "dest": str(tmp_path / name), "mode": "0644", "content": "{{ zookeeper_srvr_probe }}"}}
            for name, probe_vars in (("own", {}),
                                     ("delegated", {"zookeeper_probe_address": "10.231.0.13"}))]}])
    assert "-connect 10.231.0.12:2281" in (tmp_path / "own").read_text()
    assert "-connect 10.231.0.13:2281" in (tmp_path / "delegated").read_text()
    wait = yaml.safe_load((ZOOKEEPER / "tasks/rolling_restart.yml").read_text())[1]
    assert wait["delegate_to"] == "{{ zookeeper_wait_host }}"
    assert "hostvars[zookeeper_wait_host]" in wait["vars"]["zookeeper_probe_address"]

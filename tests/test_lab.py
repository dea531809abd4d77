"""Deployment on real systemd machines: the lab (systemd-nspawn on a private bridge) gets
the real site.yml over SSH, then we check what an operator would check. The playbook's
defaults are the secure ones: ZooKeeper over TLS only (quorum included) with the CA the
playbook made on the controller, and digest ACLs on the fleet's znodes. The fleet is mixed:
machines run Debian 12 "bookworm" or 13 "trixie" as the inventory's `os` says (a ZooKeeper
server and a sensor on trixie), all from the same site.yml. One sensor is an arm64
machine (a Raspberry Pi's architecture) under qemu-user: it gets the same playbook and is
one of the fleet in every check of every sensor. Two collectors share one PostgreSQL
machine (the `collector_database` group): every sensor's api_url lists both, the leader
delivers to the one that answered last and moves to the other when that one fails, and
either serves every round. One machine, `attacker` (group `lab_attacker`), gets nothing
from the playbook: the fleet is attacked from it (tests/lab_attack.py)."""

import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError

from zk_sensor.testing.collector import collector_replies, fetch_rounds
from zk_sensor.testing.faults import (
    CATCH_UP_ROUNDS,
    assert_fenced,
    check_rounds,
    wait_caught_up,
    wait_full_rounds,
)
from zk_sensor.testing.fleet import BIN, wait_for
from zk_sensor.testing.pki import CertificateAuthority

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "ansible" / "lab"))
from lab import Lab

from zk_sensor.zk.access import zk_access

# The first test also pays for the module's fixture: the lab's base roots when they are
# not built yet (a few minutes for the arm64 one, whose packages unpack under qemu-user),
# the boot and two playbook runs, the arm64 machine's tasks emulated too.
LAB_TEST_TIMEOUT_S = 1500

pytestmark = [
    pytest.mark.lab,
    pytest.mark.timeout(LAB_TEST_TIMEOUT_S),
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("systemd-nspawn")
                       or not shutil.which("debootstrap"),
                       reason="the lab needs root, systemd-nspawn and debootstrap"),
]
PERIOD = 1
REPO = Path(__file__).resolve().parent.parent
# The zk_pki role's directory on the controller, as the lab sets it (zk_pki_dir).
SECRETS = Lab(log=lambda _: None).secrets
# The lab's machine that site.yml leaves alone (and that has nothing of the fleet).
ATTACKER_GROUP = "lab_attacker"
# The zk_postgres role's TLS and password files on the database machine.
POSTGRES_SECRETS = "/etc/postgresql/15/main/zk-sensor"
# The zookeeper role's ports: the plaintext one is closed when TLS is on (the default).
PLAIN_PORT = 2181
SECURE_PORT = 2281


@dataclass
class Provisioned:
    lab: Lab
    first: subprocess.CompletedProcess[str]
    second: subprocess.CompletedProcess[str]
    # user:password files made from the controller's password files, one per identity.
    auth_files: dict[str, Path]

    def addresses(self, group: str) -> list[str]:
        return [self.lab.hosts[name].address for name in self.lab.groups[group]]

    @property
    def fleet_hosts(self) -> set[str]:
        """Every machine the playbook deploys: all but the attacker."""
        return set(self.lab.hosts) - set(self.lab.groups.get(ATTACKER_GROUP, []))

    @property
    def attacker(self) -> str:
        return self.lab.groups[ATTACKER_GROUP][0]

    @property
    def sensors(self) -> int:
        """How many devices a full round has: every sensor machine, the arm64 one too."""
        return len(self.lab.groups["sensors"])

    @property
    def arm64_sensors(self) -> list[str]:
        return [name for name in self.lab.groups["sensors"]
                if self.lab.hosts[name].arch == "arm64"]

    @property
    def zookeeper(self) -> str:
        return ",".join(f"{address}:{SECURE_PORT}" for address in self.addresses("zookeeper"))

    @property
    def collector(self) -> str:
        """HTTPS, with a certificate of the fleet's CA (trusted by urllib: see `lab`): the
        first collector, where the tests read the rounds. The sensors deliver to whichever
        collector of their api_url answered last (both are on the one database, so either
        lists every round): see `collector_in_use`."""
        return self.collectors[0]

    @property
    def collectors(self) -> list[str]:
        """Every collector, all of them on the one database."""
        return [f"https://{address}:8080" for address in self.addresses("collector")]


def recap(output: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP lines: host -> {ok, changed, unreachable, failed, ...}."""
    tail = output.split("PLAY RECAP", 1)[1]
    found = {}
    for host, counts in re.findall(r"^(\S+)\s+:\s+(.*)$", tail, re.MULTILINE):
        found[host] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", counts)}
    return found


OPERATOR_CERT = ("clients/operator.pem", "clients/operator.key")


def ctl_as(env: Provisioned, identity: str | None, *args: str,
           cert: tuple[Path, Path] | None = None) -> subprocess.CompletedProcess[str]:
    """zk-sensorctl on the controller over TLS (the operator's client certificate unless
    `cert` says otherwise), with an identity's credentials, or none (anonymous)."""
    cert_file, key_file = cert or (SECRETS / OPERATOR_CERT[0], SECRETS / OPERATOR_CERT[1])
    argv = [str(BIN / "zk-sensorctl"), "--zookeeper", env.zookeeper,
            "--zk-ca-file", str(SECRETS / "ca.pem"), "--zk-cert-file", str(cert_file),
            "--zk-key-file", str(key_file)]
    if identity:
        argv += ["--zk-auth-file", str(env.auth_files[identity])]
    return subprocess.run([*argv, *args], capture_output=True, text=True, timeout=60)


def ctl(env: Provisioned, *args: str) -> subprocess.CompletedProcess[str]:
    """zk-sensorctl as the operator."""
    return ctl_as(env, "operator", *args)


def sensor_ids() -> dict[str, str]:
    """Sensor machine -> its node id, from the inventory."""
    sensors = yaml.safe_load(Lab().inventory.read_text())["all"]["children"]["sensors"]
    return {name: str(host["zk_sensor_node_id"]) for name, host in sensors["hosts"].items()}


def auth_files(directory: Path) -> dict[str, Path]:
    """user:password files (0600) for the operator and for one sensor's own identity
    (`member`, node-<id> of the first sensor), from the passwords the playbook made on the
    controller (those it made: a failed first run shows in the first test's output)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    first = next(iter(sensor_ids().values()))
    made = {}
    for identity, user, secret in (("operator", "operator", "operator.password"),
                                   ("member", f"node-{first}", f"nodes/{first}.password")):
        if not (SECRETS / secret).is_file():
            continue
        password = (SECRETS / secret).read_text().strip()
        path = directory / f"{identity}.auth"
        path.touch(mode=0o600)
        path.write_text(f"{user}:{password}\n")
        made[identity] = path
    return made


def controller_secrets() -> list[Path]:
    """Every password and token the playbook made on the controller."""
    return [*SECRETS.glob("*.password"), *SECRETS.glob("nodes/*.password"),
            *SECRETS.glob("tokens/*.token")]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provisioned]:
    machines = Lab()
    machines.down()
    try:
        machines.up(provision=False)
        # --diff: the first run writes every file, and must show none of the secrets.
        first = machines.run_playbook("--diff", check=False, capture=True)
        second = machines.run_playbook(check=False, capture=True)
        provisioned = Provisioned(machines, first, second,
                                  auth_files(tmp_path_factory.mktemp("identities")))
        if first.returncode == 0:  # else the first test shows why
            result = ctl(provisioned, "config", "set", "sampling_period", str(PERIOD))
            assert result.returncode == 0, result.stderr
        # The collector serves HTTPS with the fleet's CA: every urlopen here and in
        # test_faults' helpers trusts that CA (and only it).
        collector_ca = ssl.create_default_context(cafile=str(SECRETS / "ca.pem"))
        urllib.request.install_opener(urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=collector_ca)))
        yield provisioned
    finally:
        urllib.request.install_opener(None)  # type: ignore[arg-type]
        machines.down()


def tls_context(cert: Path | None = SECRETS / OPERATOR_CERT[0],
                key: Path | None = SECRETS / OPERATOR_CERT[1]) -> ssl.SSLContext:
    """A client context trusting the fleet's CA (host names checked) with a certificate."""
    context = ssl.create_default_context(cafile=str(SECRETS / "ca.pem"))
    if cert and key:
        context.load_cert_chain(str(cert), str(key))
    return context


def four_letter_word(address: str, word: str, context: ssl.SSLContext) -> str:
    """A four-letter word over TLS on the secure client port; the reply ends when the
    server closes the connection."""
    with socket.create_connection((address, SECURE_PORT), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=address) as sock:
        sock.sendall(word.encode())
        chunks = []
        while chunk := sock.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def srvr_mode(address: str) -> str | None:
    try:
        reply = four_letter_word(address, "srvr", tls_context())
    except OSError:  # ssl.SSLError too
        return None
    found = re.search(r"^Mode: (\w+)", reply, re.MULTILINE)
    return found.group(1) if found else None


def rounds(env: Provisioned, collector: str | None = None) -> list[dict[str, Any]]:
    """The newest rounds a collector lists (the first one unless told)."""
    url = collector or env.collector
    with urllib.request.urlopen(f"{url}/api/rounds?limit=50", timeout=10) as reply:
        return json.loads(reply.read())["rounds"]


def new_rounds_after(env: Provisioned, newest: int, count: int, timeout: float) -> list[dict]:
    """The first `count` rounds numbered above `newest`, oldest first."""

    def arrived() -> list[dict]:
        fresh = sorted((r for r in rounds(env) if r["round"] > newest), key=lambda r: r["round"])
        return fresh if len(fresh) >= count else []

    return wait_for(arrived, timeout, f"{count} rounds after round {newest}")


def status_lines(env: Provisioned) -> dict[str, str]:
    lines = {}
    for name in env.lab.groups["sensors"]:
        shown = env.lab.ssh(name, "systemctl", "status", "--no-pager", "zk-sensor",
                            check=False).stdout
        found = re.search(r'Status: "([^"]*)"', shown)
        lines[name] = found.group(1) if found else ""
    return lines


def leader_machine(env: Provisioned) -> str:
    return wait_for(lambda: [n for n, s in status_lines(env).items() if s.startswith("leader")],
                    30, "a sensor whose STATUS says leader")[0]


def test_playbook_applies_from_scratch(lab: Provisioned) -> None:
    assert lab.first.returncode == 0, lab.first.stdout[-4000:]
    first = recap(lab.first.stdout)
    assert set(first) == lab.fleet_hosts
    assert all(c["failed"] == 0 and c["unreachable"] == 0 and c["changed"] > 0
               for c in first.values()), first


def test_second_run_changes_nothing(lab: Provisioned) -> None:
    assert lab.second.returncode == 0, lab.second.stdout[-4000:]
    changed = re.findall(r"^TASK \[(.*?)\] \**\n(?:(?!TASK ).*\n)*?changed: .*$",
                         lab.second.stdout, re.MULTILINE)
    assert all(c["changed"] == 0 and c["failed"] == 0
               for c in recap(lab.second.stdout).values()), (changed, recap(lab.second.stdout))


def test_ensemble_has_exactly_one_leader(lab: Provisioned) -> None:
    modes = [srvr_mode(address) for address in lab.addresses("zookeeper")]
    assert sorted(modes) == ["follower", "follower", "leader"]


def test_zookeepers_own_metrics_are_served_for_prometheus(lab: Provisioned) -> None:
    """The exporter on the operator's seat reads every server's mntr over TLS."""
    seat = lab.addresses("collector")[0]
    with urllib.request.urlopen(f"http://{seat}:9141/metrics", timeout=30) as reply:
        text = reply.read().decode()
    for address in lab.addresses("zookeeper"):
        assert f'zookeeper_up{{server="{address}:{SECURE_PORT}"}} 1.0' in text
    states = re.findall(r'zookeeper_server_state\{server="[^"]+",state="(\w+)"\} 1\.0', text)
    assert sorted(states) == ["follower", "follower", "leader"]


# ---------------------------------------------------------------- two releases (issue 20)
# The inventory's `os` on every machine, and what differs between the releases
# (roles/zk_platform's table): ZooKeeper 3.8 and 3.9 in one ensemble, Python 3.11 and
# 3.13 in the nodes' venvs, each venv's wheelhouse consistent for its Python.

PLATFORM_VARS = REPO / "ansible" / "roles" / "zk_platform" / "vars" / "main.yml"


def release_rows() -> dict[str, dict[str, str]]:
    """zk_platform's row of each release (ZooKeeper, JRE, Python...), by codename."""
    table = yaml.safe_load(PLATFORM_VARS.read_text())["zk_platform_releases"]
    return {row["codename"]: row for row in table.values()}


def test_every_machine_runs_the_release_the_inventory_says(lab: Provisioned) -> None:
    """Each machine booted its `os`'s root (bookworm unless the inventory says trixie), and
    the fleet is mixed: ZooKeeper servers and sensors on both releases, a trixie amd64
    sensor and the arm64 one (a Raspberry Pi's) on trixie among them."""
    hosts = lab.lab.hosts
    for name, host in hosts.items():
        shown = lab.lab.ssh(name, ". /etc/os-release && echo $VERSION_CODENAME").stdout
        assert shown.strip() == host.os, (name, shown, host.os)

    def releases(group: str) -> set[str]:
        return {hosts[name].os for name in lab.lab.groups[group]}

    assert releases("zookeeper") == releases("sensors") == {"bookworm", "trixie"}
    assert [n for n in lab.lab.groups["sensors"]
            if hosts[n].os == "trixie" and not hosts[n].foreign], "no trixie amd64 sensor"
    assert [n for n in lab.lab.groups["sensors"]
            if hosts[n].os == "trixie" and hosts[n].arch == "arm64"], "no trixie arm64 sensor"


def test_each_zookeeper_server_runs_its_releases_zookeeper_in_one_ensemble(
        lab: Provisioned) -> None:
    """Debian's ZooKeeper of the server's release (3.8 on bookworm, 3.9 on trixie) on the
    release's JRE, and the three form one ensemble: one leader, whose followers (on either
    release) are both in sync with it."""
    rows = release_rows()
    modes = {}
    for name in lab.lab.groups["zookeeper"]:
        host = lab.lab.hosts[name]
        row = rows[host.os]
        reply = four_letter_word(host.address, "srvr", tls_context())
        version = re.search(r"^Zookeeper version: (\d+\.\d+)\.", reply, re.MULTILINE)
        assert version and version.group(1) == row["zookeeper"], (name, host.os, reply)
        jre = lab.lab.ssh(name, "dpkg-query", "--show", "--showformat=${db:Status-Status}",
                          row["jre"], check=False).stdout
        assert jre == "installed", (name, row["jre"], jre)
        mode = re.search(r"^Mode: (\w+)", reply, re.MULTILINE)
        assert mode, (name, reply)
        modes[name] = mode.group(1)
        print(f"RELEASE {name}: {host.os}, ZooKeeper {version.group(1)}, {row['jre']}, "
              f"{modes[name]}")
    assert sorted(modes.values()) == ["follower", "follower", "leader"], modes
    leader = next(name for name, mode in modes.items() if mode == "leader")
    mntr = four_letter_word(lab.lab.hosts[leader].address, "mntr", tls_context())
    synced = re.search(r"^zk_synced_followers\s+(\d+)", mntr, re.MULTILINE)
    assert synced and int(synced.group(1)) == len(modes) - 1, mntr


def test_each_venv_runs_its_releases_python_and_pip_check_is_clean(lab: Provisioned) -> None:
    """The wheelhouse was resolved for each node's own Python (3.11 on bookworm, 3.13 on
    trixie, the arm64 one's too), and `pip check` finds nothing broken in any venv."""
    rows = release_rows()
    for name in dict.fromkeys([*lab.lab.groups["sensors"], *lab.lab.groups["collector"]]):
        host = lab.lab.hosts[name]
        shown = lab.lab.ssh(name, f"{VENV}/bin/python", "-c",
                            "import sys; print('%d.%d' % sys.version_info[:2])").stdout
        assert shown.strip() == rows[host.os]["python"], (name, host.os, shown)
        check = lab.lab.ssh(name, f"{VENV}/bin/pip", "--disable-pip-version-check", "check",
                            check=False, timeout=180)
        assert check.returncode == 0 and "No broken requirements found" in check.stdout, \
            (name, check.stdout, check.stderr)
        print(f"RELEASE {name}: {host.os}, Python {shown.strip()} in {VENV}, "
              f"pip check: {check.stdout.strip()}")


# ---------------------------------------------------------------- TLS and ACLs
# What the secure defaults promise, checked from outside, before the fleet tests below.


def test_plaintext_client_port_is_closed(lab: Provisioned) -> None:
    for address in lab.addresses("zookeeper"):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((address, PLAIN_PORT), timeout=3).close()


def test_collector_serves_https_only(lab: Provisioned) -> None:
    with urllib.request.urlopen(f"{lab.collector}/healthz", timeout=10) as reply:
        assert reply.status == 200
    plain = lab.collector.replace("https://", "http://", 1)
    with pytest.raises(OSError):  # closed without an answer
        urllib.request.urlopen(f"{plain}/healthz", timeout=10).close()


def test_every_collector_is_healthy_on_the_shared_database(lab: Provisioned) -> None:
    """/healthz is what a load balancer in front of the collectors asks (503 while one
    cannot reach the database)."""
    assert len(lab.collectors) >= 2
    for url in lab.collectors:
        with urllib.request.urlopen(f"{url}/healthz", timeout=10) as reply:
            assert reply.status == 200, url


def test_database_admits_the_collectors_only(lab: Provisioned) -> None:
    """The collectors' role with its password, over TLS, from a machine that is not a
    collector: refused by pg_hba.conf (Debian's psql is in every lab machine's root)."""
    database = lab.addresses("collector_database")[0]
    password = (SECRETS / "database.password").read_text().strip()
    # The password on stdin, never on a command line.
    result = lab.lab.ssh(
        lab.lab.groups["sensors"][0],
        f"PGPASSWORD=$(cat) psql -X 'host={database} dbname=zk_collector user=zk_collector "
        "sslmode=require connect_timeout=5' -Atc 'SELECT 1'", input=password, check=False)
    assert result.returncode != 0 and "no pg_hba.conf entry" in result.stderr, result
    # ...where each collector connects with exactly the URI in its config.
    for name in lab.lab.groups["collector"]:
        shown = lab.lab.ssh(name, "cat", "/etc/zk-collector/zk-collector.toml").stdout
        uri = tomllib.loads(shown)["database"]
        result = lab.lab.ssh(name, "runuser", "-u", "zk-collector", "--", "psql", "-X", uri,
                             "-Atc", "SELECT current_user, ssl FROM pg_stat_ssl "
                             "WHERE pid = pg_backend_pid()", check=False)
        assert result.stdout.strip() == "zk_collector|t", (name, result)


def test_client_with_a_certificate_of_another_ca_is_refused(
        lab: Provisioned, tmp_path: Path) -> None:
    intruder = CertificateAuthority(tmp_path / "other-ca", "some other CA").issue(
        "intruder", (str(lab.lab.controller.ip),))
    address = lab.addresses("zookeeper")[0]
    # The same connection with the fleet's certificate gets its answer...
    assert "Mode:" in four_letter_word(address, "srvr", tls_context())
    # ...with another CA's, or with none, the handshake fails or the server hangs up.
    for context in (tls_context(intruder.cert, intruder.key), tls_context(None, None)):
        try:
            reply = four_letter_word(address, "srvr", context)
        except OSError:  # ssl.SSLError, a reset
            reply = ""
        assert reply == ""
    result = ctl_as(lab, "operator", "status", cert=(intruder.cert, intruder.key))
    assert result.returncode == 1, result.stdout + result.stderr


def test_anonymous_and_member_clients_cannot_change_the_config(lab: Provisioned) -> None:
    # Anyone with a certificate reads the status...
    assert ctl_as(lab, None, "status", "--json").returncode == 0
    # ...but neither anonymous nor a sensor's own identity may write the config (exit 2).
    for identity in (None, "member"):
        result = ctl_as(lab, identity, "config", "set", "sampling_period", "7")
        assert result.returncode == 2, (identity, result.stdout, result.stderr)
    assert json.loads(ctl(lab, "config", "get", "sampling_period", "--json").stdout) \
        ["sampling_period"]["value"] == str(PERIOD)


def test_operator_seat_runs_zk_sensorctl_on_the_collector(lab: Provisioned) -> None:
    name = lab.lab.groups["collector"][0]
    shown = lab.lab.ssh(name, "/usr/local/sbin/zk-sensorctl", "status", "--json")
    assert json.loads(shown.stdout)["leader"], shown.stdout


def mode_owner(env: Provisioned, name: str, paths: list[str]) -> dict[str, str]:
    """`stat` of files on a machine: path -> "mode owner"."""
    shown = env.lab.ssh(name, "stat", "-c", "%n %a %U", *paths).stdout
    return {path: rest for path, rest in
            (line.split(" ", 1) for line in shown.splitlines())}


def test_keys_and_credentials_are_private_on_the_machines(lab: Provisioned) -> None:
    for name in lab.lab.groups["zookeeper"]:
        assert mode_owner(lab, name, ["/etc/zookeeper/tls/keystore.pem"]) == {
            "/etc/zookeeper/tls/keystore.pem": "600 zookeeper"}
    ids = sensor_ids()
    for name in lab.lab.groups["sensors"]:
        files = ["/etc/zk-sensor/key.pem", "/etc/zk-sensor/node.auth"]
        assert mode_owner(lab, name, files) == dict.fromkeys(files, "600 zk-sensor")
        # Its own identity, and its own token in its 0640 configuration.
        user = lab.lab.ssh(name, "cut -d: -f1 /etc/zk-sensor/node.auth").stdout.strip()
        assert user == f"node-{ids[name]}", name
        config = tomllib.loads(lab.lab.ssh(name, "cat", NODE_CONFIG).stdout)
        token = (SECRETS / f"tokens/{ids[name]}.token").read_text().strip()
        assert config["api_token"] == token, name
        assert mode_owner(lab, name, [NODE_CONFIG]) == {NODE_CONFIG: "640 root"}
    seat = lab.lab.groups["collector"][0]
    for name in lab.lab.groups["collector"]:
        files = ["/etc/zk-collector/key.pem", "/etc/zk-collector/pgpass",
                 "/etc/zk-collector/tokens"]
        assert mode_owner(lab, name, files) == dict.fromkeys(files, "600 zk-collector"), name
        listed = lab.lab.ssh(name, "cut -d' ' -f1 /etc/zk-collector/tokens").stdout.split()
        assert listed == list(ids.values()), name
    for name in lab.lab.groups["collector_database"]:
        files = [f"{POSTGRES_SECRETS}/key.pem", f"{POSTGRES_SECRETS}/database.pgpass"]
        assert mode_owner(lab, name, files) == dict.fromkeys(files, "600 postgres"), name
    files = ["/etc/zk-sensorctl/key.pem", "/etc/zk-sensorctl/operator.auth",
             "/etc/zk-sensorctl/members", "/etc/zk-sensorctl/zk-sensorctl.toml"]
    assert mode_owner(lab, seat, [*files, "/etc/zk-sensorctl"]) == {
        **dict.fromkeys(files, "600 root"), "/etc/zk-sensorctl": "700 root"}
    # The seat holds the sensors' digests, none of their passwords.
    members = lab.lab.ssh(seat, "cat /etc/zk-sensorctl/members").stdout.splitlines()
    assert [line.split(":")[0] for line in members] == [f"node-{i}" for i in ids.values()]
    # The operator's identity is on its seat only, and nobody holds a shared one.
    for name in lab.lab.hosts:
        found = lab.lab.ssh(name, "find /etc -name operator.auth").stdout.split()
        assert found == (["/etc/zk-sensorctl/operator.auth"] if name == seat else []), name
        assert lab.lab.ssh(name, "find /etc -name fleet.auth").stdout == "", name
    # The attacker got nothing.
    shown = lab.lab.ssh(lab.attacker, "ls /etc/zk-sensor /etc/zk-collector /etc/zk-sensorctl",
                        check=False)
    assert shown.returncode != 0 and shown.stdout == "", shown


def test_controller_secrets_are_private(lab: Provisioned) -> None:
    assert SECRETS.stat().st_mode & 0o777 == 0o700
    for directory in ("nodes", "tokens"):
        assert (SECRETS / directory).stat().st_mode & 0o777 == 0o700, directory
    secret = [SECRETS / "ca.key", *controller_secrets(), *SECRETS.glob("*/*.key")]
    assert len(secret) >= 3 + 2 * lab.sensors
    assert {path.name: path.stat().st_mode & 0o777 for path in secret} == \
        {path.name: 0o600 for path in secret}


def test_playbook_output_shows_no_secret(lab: Provisioned) -> None:
    output = lab.first.stdout + lab.first.stderr
    assert "\n+++ after" in output  # --diff was on and showed the files it wrote
    assert "PRIVATE KEY" not in output
    for secret in controller_secrets():
        assert secret.read_text().strip() not in output, secret
    keys = [SECRETS / "ca.key", *SECRETS.glob("*/*.key")]
    for key in keys:
        body = "".join(line for line in key.read_text().splitlines() if "-----" not in line)
        assert body[:40] not in output, key


# ---------------------------------------------------------------- the attacker (issue 18)
# From `attacker`, a machine on the fleet's network that the playbook leaves alone: no
# certificate of the fleet's CA, no credentials, no token. tests/lab_attack.py runs there
# with the machine's own Python (`pytest -s` prints what it saw, layer by layer).

ATTACK_SCRIPT = Path(__file__).resolve().parent / "lab_attack.py"
QUORUM_PORTS = (2888, 3888)
# A mean no sensor ever measures (the simulated ones read 75..85).
FORGED_MEAN = 12345.0


def attack(env: Provisioned, command: str, request: dict[str, Any]) -> dict[str, Any]:
    """Run one of lab_attack.py's commands on the attacker; its JSON answer."""
    env.lab.ssh(env.attacker, "cat > /root/lab_attack.py", input=ATTACK_SCRIPT.read_text())
    result = env.lab.ssh(env.attacker, "python3", "/root/lab_attack.py", command,
                         input=json.dumps(request), timeout=300)
    return json.loads(result.stdout)


def own_certificate(env: Provisioned, directory: Path) -> dict[str, str]:
    """A certificate and key of the attacker's own CA, for its own address."""
    issued = CertificateAuthority(directory, "the attacker's CA").issue(
        "attacker", (env.lab.hosts[env.attacker].address,))
    return {"cert": issued.cert.read_text(), "key": issued.key.read_text()}


def answered(entry: dict[str, str]) -> bool:
    """Whether a port gave the attacker anything at all."""
    return any(str(value).startswith("answered") for value in entry.values())


def test_the_attacker_reaches_no_zookeeper_port_nor_the_quorum(
        lab: Provisioned, tmp_path: Path) -> None:
    """Client ports (plain and TLS) and the quorum and election ports of every server,
    without a certificate and with another CA's: dropped by the firewall, or refused by
    TLS, never answered; the ensemble is unchanged."""
    targets = [[address, port] for address in lab.addresses("zookeeper")
               for port in (PLAIN_PORT, SECURE_PORT, *QUORUM_PORTS)]
    found = attack(lab, "probe", {"targets": targets, **own_certificate(lab, tmp_path)})
    for target, entry in found.items():
        print(f"ATTACKER {target}: {entry}")
    assert sorted(found) == sorted(f"{a}:{p}" for a, p in targets)
    assert not [target for target, entry in found.items() if answered(entry)], found
    # The probe does notice a port that serves: the same one with the fleet's certificate.
    fleet = {"cert": (SECRETS / OPERATOR_CERT[0]).read_text(),
             "key": (SECRETS / OPERATOR_CERT[1]).read_text()}
    secure = [lab.addresses("zookeeper")[0], SECURE_PORT]
    control = attack(lab, "probe", {"targets": [secure], **fleet})[f"{secure[0]}:{secure[1]}"]
    print(f"ATTACKER with the fleet's certificate: {control}")
    assert control["tcp"] != "open" or \
        control["tls_with_own_certificate"].startswith("answered"), control
    assert sorted(srvr_mode(a) for a in lab.addresses("zookeeper")) == \
        ["follower", "follower", "leader"]


def test_an_anonymous_client_creates_no_znode(lab: Provisioned) -> None:
    """With a certificate of the fleet's CA (which the attacker lacks: see above) but no
    identity, or a sensor's own: nothing at ZooKeeper's root (locked to the operator), in
    the namespace or in its folders (the fleet's ACLs)."""
    for identity in (None, "member"):
        access = zk_access(str(lab.auth_files[identity]) if identity else "",
                           str(SECRETS / "ca.pem"), str(SECRETS / OPERATOR_CERT[0]),
                           str(SECRETS / OPERATOR_CERT[1]))
        client = KazooClient(hosts=lab.zookeeper, timeout=10, **access.client_options())
        client.start(timeout=30)
        try:
            paths = ["/attacker", "/zk-sensor/config/attacker"]
            if identity is None:
                paths += ["/zk-sensor/attacker", "/zk-sensor/readings/attacker"]
            for path in paths:
                with pytest.raises(NoAuthError):
                    client.create(path, b"forged")
        finally:
            client.stop()
            client.close()


def test_the_attacker_cannot_forge_rounds_at_the_collectors(lab: Provisioned) -> None:
    """No token, a made-up one, the seed's anonymous GET /nuevo: 401 or 403; a negative
    Content-Length: 400. None of it is stored."""
    status = fleet_status(lab)
    fleet = rounds(lab)[0]["fleet"]
    forged = {"mean": FORGED_MEAN, "round": status["round"], "epoch": status["epoch"],
              "fleet": fleet, "count": 1, "leader": status["leader"]}
    for address in lab.addresses("collector"):
        found = attack(lab, "forge", {"host": address, "port": 8080, "round": forged})
        print(f"ATTACKER forging at {address}: {found}")
        assert found["post_without_token"].startswith("HTTP/1.1 401"), found
        assert found["post_with_made_up_token"].startswith("HTTP/1.1 401"), found
        assert found["get_nuevo"][:12] in ("HTTP/1.1 401", "HTTP/1.1 403"), found
        assert found["negative_content_length"].startswith("HTTP/1.1 400"), found
    for url in lab.collectors:
        assert FORGED_MEAN not in {r["mean"] for r in fetch_rounds(url)}, url


def post_round(url: str, token: str, item: dict[str, Any]) -> int:
    """POST a round with a bearer token; the HTTP status."""
    request = urllib.request.Request(
        f"{url}/api/rounds", data=json.dumps(item).encode(), method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status
    except urllib.error.HTTPError as error:
        return error.code


def test_a_followers_token_cannot_deliver_the_leaders_rounds(lab: Provisioned) -> None:
    """A sensor's own token, stolen with its Pi: as itself it is not the epoch's holder
    (the fence, against ZooKeeper), as the leader it is not the leader (per-node tokens)."""
    status = fleet_status(lab)
    follower = next(node for node in sensor_ids().values() if node != status["leader"])
    token = (SECRETS / f"tokens/{follower}.token").read_text().strip()
    fleet = rounds(lab)[0]["fleet"]
    for leader in (follower, status["leader"]):
        forged = {"mean": FORGED_MEAN, "round": status["round"], "epoch": status["epoch"],
                  "fleet": fleet, "count": 1, "leader": leader}
        assert post_round(lab.collector, token, forged) == 403, leader
    assert FORGED_MEAN not in {r["mean"] for r in fetch_rounds(lab.collector)}


SLOW_CONNECTIONS = 24
SLOW_SECONDS = 20


def test_slow_clients_do_not_starve_the_collector(lab: Provisioned) -> None:
    """The attacker holds connections open (some never start TLS, some trickle a request
    a byte a second): every collector's /healthz still answers at once, and rounds go on."""
    newest = max(r["round"] for r in rounds(lab))
    target = lab.addresses("collector")[0]
    request = {"host": target, "port": 8080, "connections": SLOW_CONNECTIONS,
               "seconds": SLOW_SECONDS}
    lab.lab.ssh(lab.attacker, "cat > /root/lab_attack.py", input=ATTACK_SCRIPT.read_text())
    with subprocess.Popen(lab.lab.ssh_argv(lab.attacker, "python3", "/root/lab_attack.py",
                                           "slow"),
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as slow:
        assert slow.stdin and slow.stdout
        slow.stdin.write(json.dumps(request))
        slow.stdin.close()
        holding = slow.stdout.readline()
        assert holding.startswith("holding "), holding
        latencies = []
        ends = time.monotonic() + SLOW_SECONDS - 5
        while time.monotonic() < ends:
            for url in lab.collectors:
                started = time.monotonic()
                with urllib.request.urlopen(f"{url}/healthz", timeout=5) as reply:
                    assert reply.status == 200, url
                latencies.append(time.monotonic() - started)
            time.sleep(0.5)
        outcome = json.loads(slow.stdout.read())
    print(f"ATTACKER {holding.strip()} connections at {target}: {outcome}; /healthz "
          f"answered {len(latencies)} times, slowest {max(latencies):.2f} s")
    assert outcome["opened"] >= SLOW_CONNECTIONS, outcome
    assert max(latencies) < 2.0, latencies
    new_rounds_after(lab, newest, 3, 30)


def test_every_sensor_runs_and_exactly_one_leads(lab: Provisioned) -> None:
    for name in lab.lab.groups["sensors"]:
        assert lab.lab.ssh(name, "systemctl", "is-active", "zk-sensor").stdout.strip() == "active"
    leader_machine(lab)
    lines = status_lines(lab)
    assert sum(line.startswith("leader (epoch") for line in lines.values()) == 1, lines
    assert sum(line.startswith("follower (leader: node") for line in lines.values()) == \
        lab.sensors - 1, lines


def test_collector_receives_rounds_from_the_fleet(lab: Provisioned) -> None:
    newest = max((r["round"] for r in rounds(lab)), default=-1)
    fresh = new_rounds_after(lab, newest, 3, 30)
    assert all(r["count"] == lab.sensors and r["source"] == "json" for r in fresh), fresh


def test_the_second_collector_lists_the_rounds_delivered_to_the_first(
        lab: Provisioned) -> None:
    """Whichever collector the fleet delivers to, the others read the same database, so
    each lists the rounds the first one lists (same id, same values)."""
    newest = max((r["round"] for r in rounds(lab)), default=-1)
    delivered = new_rounds_after(lab, newest, 1, 30)[0]
    for other in lab.collectors[1:]:
        listed = {(r["fleet"], r["round"], r["epoch"]): r for r in rounds(lab, other)}
        assert listed.get((delivered["fleet"], delivered["round"], delivered["epoch"])) \
            == delivered, (other, delivered)


def test_leader_journal_shows_its_leader_lines(lab: Provisioned) -> None:
    name = leader_machine(lab)
    journal = lab.lab.ssh(name, "journalctl", "-u", "zk-sensor", "--no-pager").stdout
    assert re.search(r"zk-sensor\[\d+\]: node \d+: I am the leader now "
                     r"\(epoch \d+, incarnation \w+\)", journal)
    assert re.search(rf"node \d+: round \d+: mean [\d.]+ over {lab.sensors} devices", journal)


def test_stopping_the_leaders_daemon_gives_another_leader(lab: Provisioned) -> None:
    name = leader_machine(lab)
    old_leader = json.loads(ctl(lab, "status", "--json").stdout)["leader"]
    newest = max(r["round"] for r in rounds(lab))
    lab.lab.ssh(name, "systemctl", "stop", "zk-sensor")
    try:
        wait_for(lambda: [n for n, s in status_lines(lab).items()
                          if n != name and s.startswith("leader")], 20, "another sensor to lead")
        fresh = new_rounds_after(lab, newest, 3, 30)
        assert fresh[-1]["leader"] != old_leader
        assert fresh[-1]["count"] == lab.sensors - 1
    finally:
        # Type=notify: returns once the node is READY (slower on the emulated machine).
        lab.lab.ssh(name, "systemctl", "start", "zk-sensor", timeout=120)


def test_powering_off_a_zookeeper_machine_does_not_stop_the_rounds(lab: Provisioned) -> None:
    by_address = dict(zip(lab.addresses("zookeeper"), lab.lab.groups["zookeeper"], strict=True))
    leader = next(by_address[a] for a in by_address if srvr_mode(a) == "leader")
    newest = max(r["round"] for r in rounds(lab))
    lab.lab.poweroff(leader)
    try:
        fresh = new_rounds_after(lab, newest, 5, 60)
        numbers = [r["round"] for r in fresh]
        assert numbers == sorted(set(numbers))
    finally:
        lab.lab.start(leader)
    address = lab.lab.hosts[leader].address
    wait_for(lambda: srvr_mode(address) in {"leader", "follower"}, 60,
             f"{leader} to rejoin the ensemble")


# ---------------------------------------------------------------- a Pi's architecture
# The arm64 sensor: its binaries are arm64 ones run by qemu-user, so what is checked here
# is the deployment onto that architecture (the wheelhouse, the venv, Debian's arm64
# packages, the unit, the daemon in the fleet), not the Pi's hardware (docs/explanation/testing.md:
# "What the lab proves on arm64").

VENV = "/opt/zk-sensor/venv"
NODE_CONFIG = "/etc/zk-sensor/zk-sensor.toml"
DEVICE_GROUPS = ("gpio", "spi", "i2c")


def node_id(env: Provisioned, name: str) -> str:
    """The node id the playbook gave a sensor machine (its config file's `id`)."""
    shown = env.lab.ssh(name, "cat", NODE_CONFIG).stdout
    return tomllib.loads(shown)["id"]


def test_the_arm64_sensor_runs_arm64_code_under_emulation(lab: Provisioned) -> None:
    assert lab.arm64_sensors, "the inventory should have an arm64 sensor (arch: arm64)"
    for name in lab.arm64_sensors:
        shown = lab.lab.ssh(
            name, f"uname -m; dpkg --print-architecture; {VENV}/bin/python -c "
                  "'import platform, sysconfig; print(platform.machine(), "
                  "sysconfig.get_platform())'").stdout.split()
        assert shown == ["aarch64", "arm64", "aarch64", "linux-aarch64"], (name, shown)
        pid = lab.lab.ssh(name, "systemctl", "show", "-P", "MainPID", "zk-sensor").stdout
        argv = lab.lab.ssh(name, f"tr '\\0' ' ' < /proc/{pid.strip()}/cmdline").stdout
        assert f"{VENV}/bin/zk-sensor" in argv, argv
    # ...on this machine, which is not arm64: the kernel hands the machine's binaries to
    # qemu-user (registered by the lab, usable in containers with the F flag).
    if os.uname().machine != "aarch64":
        entry = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64").read_text()
        flags = re.search(r"^flags: *(\S+)", entry, re.MULTILINE)
        assert entry.startswith("enabled") and flags and "F" in flags.group(1), entry


def test_the_arm64_sensors_readings_are_in_the_rounds(lab: Provisioned) -> None:
    newest = max(r["round"] for r in rounds(lab))
    fresh = new_rounds_after(lab, newest, 3, 60)
    assert all(r["count"] == lab.sensors for r in fresh), fresh
    status = fleet_status(lab)
    for name in lab.arm64_sensors:
        node = node_id(lab, name)
        device = next((d for d in status["devices"] if d["node"] == node), None)
        assert device and device["live"], (node, status["devices"])
        # It measures every round, like the others: its last reading is of a recent one.
        assert device["round"] >= status["round"] - 2, (device, status["round"])
        shown = ctl(lab, "status").stdout
        assert re.search(rf"^  {re.escape(node)} +[-\d.]+ ", shown, re.MULTILINE), shown


def test_the_venv_sees_the_machines_own_python_packages_where_asked(lab: Provisioned) -> None:
    """sensor4 asks for python3-spidev (zk_sensor_python_packages), as a Pi's mcp3008
    node gets python3-lgpio: an arm64 C extension from Debian, seen by the venv."""
    for name in lab.lab.groups["sensors"]:
        config = lab.lab.ssh(name, "cat", f"{VENV}/pyvenv.cfg").stdout
        found = lab.lab.ssh(name, f"{VENV}/bin/python", "-c",
                            "import spidev; print(spidev.__file__)", check=False)
        if name in lab.arm64_sensors:
            assert "include-system-site-packages = true" in config, config
            assert found.returncode == 0, found.stderr
            assert found.stdout.startswith("/usr/lib/python3/dist-packages/spidev"), found.stdout
            assert "aarch64" in found.stdout, found.stdout
        else:
            assert "include-system-site-packages = false" in config, (name, config)
            assert found.returncode == 1 and "ModuleNotFoundError" in found.stderr, found


def test_service_user_is_in_the_device_groups_that_exist(lab: Provisioned) -> None:
    """The arm64 root has Raspberry Pi OS's gpio, spi and i2c groups, the amd64 one none."""
    for name in lab.lab.groups["sensors"]:
        existing = {group for group in DEVICE_GROUPS
                    if lab.lab.ssh(name, "getent", "group", group, check=False).returncode == 0}
        member_of = set(lab.lab.ssh(name, "id", "-nG", "zk-sensor").stdout.split())
        assert member_of & set(DEVICE_GROUPS) == existing, (name, member_of, existing)
        assert existing == (set(DEVICE_GROUPS) if name in lab.arm64_sensors else set()), name


def test_check_config_guards_the_node_configuration(lab: Provisioned) -> None:
    for name in lab.lab.groups["sensors"]:
        good = lab.lab.ssh(name, f"{VENV}/bin/zk-sensor", "--check-config", "--config",
                           NODE_CONFIG, check=False)
        assert (good.returncode, good.stdout) == (0, "ok\n"), (name, good.stderr)
    name = lab.arm64_sensors[0]
    bad = lab.lab.ssh(name, f"sed 's/^sensor = .*/sensor = \"mcp3009\"/' {NODE_CONFIG} "
                            f"> /tmp/bad.toml && {VENV}/bin/zk-sensor --check-config "
                            "--config /tmp/bad.toml", check=False)
    assert bad.returncode == 2 and bad.stdout == "", bad
    assert len(bad.stderr.splitlines()) == 1 and "mcp3009" in bad.stderr, bad.stderr


def test_the_playbook_refuses_a_bad_configuration_and_keeps_the_node_running(
        lab: Provisioned) -> None:
    """The template's validate: is `zk-sensor --check-config`: an unknown driver fails
    the run on that task, and the node keeps its file and its daemon."""
    name = lab.lab.groups["sensors"][0]
    before = lab.lab.ssh(name, "sha256sum", NODE_CONFIG).stdout
    result = lab.lab.run_playbook("--limit", name, "-e", "zk_sensor_driver=mcp3009",
                                  check=False, capture=True)
    assert result.returncode != 0
    assert re.search(r"TASK \[zk_sensor : Write the node's configuration\].*?"
                     r"fatal: \[" + name + r"\].*?failed to validate", result.stdout, re.DOTALL), \
        result.stdout[-3000:]
    assert "mcp3009" in result.stdout
    assert lab.lab.ssh(name, "sha256sum", NODE_CONFIG).stdout == before
    assert lab.lab.ssh(name, "systemctl", "is-active", "zk-sensor").stdout.strip() == "active"


# ---------------------------------------------------------------- revocation (issue 18)
# A stolen sensor: revoked at once with `zk-sensorctl node revoke ID` on the operator's
# seat, for good with `zk_sensor_revoked: true` in the inventory. The fleet goes on without
# it; readmitted afterwards, so the fault matrix below has every sensor again.

SEAT_CTL = "/usr/local/sbin/zk-sensorctl"


def unit_state(env: Provisioned, name: str) -> tuple[str, str, str]:
    """zk-sensor's ActiveState, its main process's exit status and UnitFileState."""
    shown = env.lab.ssh(name, "systemctl", "show", "--property",
                        "ActiveState,ExecMainStatus,UnitFileState", "zk-sensor").stdout
    found = dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)
    return (found.get("ActiveState", ""), found.get("ExecMainStatus", ""),
            found.get("UnitFileState", ""))


def native_follower(env: Provisioned) -> str:
    """A follower's machine, not the emulated one (its restarts take minutes)."""
    leader = leader_machine(env)
    return next(name for name in env.lab.groups["sensors"]
                if name != leader and name not in env.arm64_sensors)


def readmit(env: Provisioned, name: str) -> None:
    """Undo a revocation by hand, as docs/how-to/operate/revoke-a-node.md says, and
    wait for full rounds again."""
    seat = env.lab.groups["collector"][0]
    env.lab.ssh(seat, SEAT_CTL, "node", "readmit", sensor_ids()[name])
    env.lab.ssh(seat, SEAT_CTL, "acl", "apply", "--members-file", "/etc/zk-sensorctl/members",
                "--lock-root", timeout=120)
    env.lab.ssh(name, "systemctl reset-failed zk-sensor; systemctl start zk-sensor",
                timeout=120)
    wait_full_rounds(env.collector, 2, devices=env.sensors, after=time.time(), timeout=90)


def test_a_sensor_revoked_with_zk_sensorctl_stops_and_the_others_deliver(
        lab: Provisioned) -> None:
    name = native_follower(lab)
    node = sensor_ids()[name]
    seat = lab.lab.groups["collector"][0]
    result = lab.lab.ssh(seat, SEAT_CTL, "node", "revoke", node, check=False, timeout=120)
    assert result.returncode == 0, result
    revoked_at = time.time()
    try:
        # Exit status 2, which systemd does not restart.
        wait_for(lambda: unit_state(lab, name)[:2] in {("failed", "2"), ("inactive", "2")},
                 60, f"zk-sensor on {name} to end with exit status 2")
        wait_full_rounds(lab.collector, 3, devices=lab.sensors - 1, after=revoked_at,
                         timeout=60)
        assert unit_state(lab, name)[0] != "active"
    finally:
        readmit(lab, name)


def revoked_inventory(directory: Path, name: str) -> Path:
    """A second inventory source that marks one sensor revoked."""
    path = directory / "revoked.yml"
    path.write_text(yaml.safe_dump({"all": {"hosts": {name: {"zk_sensor_revoked": True}}}}))
    return path


def test_the_playbook_revokes_a_sensor_even_when_its_machine_is_gone(
        lab: Provisioned, tmp_path: Path) -> None:
    """zk_sensor_revoked: its digest leaves the members file and the ACLs, its token the
    collectors; with its machine unplugged (stolen) the run still succeeds, and the
    machine's daemon, back on the network, can no longer write (exit 2); with the machine
    there, its daemon is stopped and disabled and its secrets removed."""
    name = native_follower(lab)
    node = sensor_ids()[name]
    seat = lab.lab.groups["collector"][0]
    extra = revoked_inventory(tmp_path, name)
    limit = ("-i", str(extra), "--limit", f"collector:{name}")
    lab.lab.cut(name)
    try:
        gone = lab.lab.run_playbook(*limit, check=False, capture=True)
    finally:
        lab.lab.restore(name)
    try:
        assert gone.returncode == 0, gone.stdout[-4000:]
        assert recap(gone.stdout)[name]["unreachable"] == 0, recap(gone.stdout)
        members = lab.lab.ssh(seat, "cat /etc/zk-sensorctl/members").stdout
        assert f"node-{node}:" not in members and members.strip(), members
        for collector in lab.lab.groups["collector"]:
            listed = lab.lab.ssh(collector, "cut -d' ' -f1 /etc/zk-collector/tokens").stdout
            assert node not in listed.split(), (collector, listed)
        token = (SECRETS / f"tokens/{node}.token").read_text().strip()
        assert post_round(lab.collector, token, {"mean": FORGED_MEAN, "round": 0,
                                                 "epoch": 0}) == 401
        wait_for(lambda: unit_state(lab, name)[:2] in {("failed", "2"), ("inactive", "2")},
                 120, f"the revoked daemon on {name} to end with exit status 2")
        wait_full_rounds(lab.collector, 3, devices=lab.sensors - 1, after=time.time(),
                         timeout=60)
        there = lab.lab.run_playbook(*limit, check=False, capture=True)
        assert there.returncode == 0, there.stdout[-4000:]
        assert unit_state(lab, name)[0] != "active"
        assert unit_state(lab, name)[2] == "disabled"
        assert lab.lab.ssh(name, "ls /etc/zk-sensor").stdout.split() == ["ca.pem"], name
    finally:
        lab.lab.ssh(seat, SEAT_CTL, "node", "readmit", node)
        again = lab.lab.run_playbook("--limit", f"collector:{name}", check=False, capture=True)
    assert again.returncode == 0, again.stdout[-4000:]
    assert unit_state(lab, name) == ("active", "0", "enabled")
    wait_full_rounds(lab.collector, 2, devices=lab.sensors, after=time.time(), timeout=90)


# ---------------------------------------------------------------- the fault matrix (issue 5)
# Faults 4 and 5 on the lab's real machines, after every test above (they reuse its
# fleet). Each lets full rounds arrive, injects the fault, recovers, waits until the
# collector has caught up, and checks the collector's rounds from just before the fault
# with zk_sensor.testing.faults.check_rounds (nothing lost, nothing twice, epochs never go down, the
# largest gap between arrivals below the bound stated here). `pytest -s` prints a
# `FAULT ...` line per fault.

# zk_sensor_session_timeout in ansible/roles/zk_sensor/defaults/main.yml.
LAB_SESSION_TIMEOUT_S = 15.0
# A machine cut off for longer than the session timeout, so its session surely expires.
LAB_CUT_S = 25.0
# Scheduling noise: eight machines (one emulated), three JVMs and the controller on one
# small box.
LAB_SLACK_S = 3.0
LAB_STEADY_ROUNDS = 3
LAB_CATCH_UP_TIMEOUT_S = 90.0
# The leader's machine cut: its lease lapses at once (it delivers nothing more); the next
# node leads once the cut leader's session expires on the ensemble, delivers what the cut
# leader left in the outbox and closes the open round: a session timeout and a few periods.
LAB_LEADER_CUT_GAP_S = LAB_SESSION_TIMEOUT_S + 3 * PERIOD + LAB_SLACK_S
# A follower's machine cut: the leader leaves its stale reading out and goes on.
LAB_FOLLOWER_CUT_GAP_S = 3 * PERIOD + LAB_SLACK_S
# A follower's machine powered off (a clean shutdown closes its session) and booted.
LAB_POWEROFF_GAP_S = 3 * PERIOD + LAB_SLACK_S


def fleet_status(env: Provisioned) -> dict[str, Any]:
    result = ctl(env, "status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def steady_since(env: Provisioned) -> int:
    """Wait for full rounds (the fleet healthy again after the tests before); the first of
    them, where the fault's check starts."""
    full = wait_full_rounds(env.collector, LAB_STEADY_ROUNDS, devices=env.sensors,
                            after=time.time(), timeout=90)
    return min(r["round"] for r in full)


def lab_check(fault: str, env: Provisioned, since: int, bound: float) -> list[dict[str, Any]]:
    """Wait for rounds past the fleet's current one, then check everything from `since`."""
    wait_caught_up(env.collector, fleet_status(env)["round"] + CATCH_UP_ROUNDS,
                   LAB_CATCH_UP_TIMEOUT_S)
    replies = collector_replies(env.collector)
    rows = fetch_rounds(env.collector)
    check_rounds(fault, rows, bound, since_round=since, replies=replies)
    outbox = fleet_status(env)["outbox"]
    assert outbox["dropped"] == 0 and outbox["rejected"] == 0, outbox
    return rows


def follower_machine(env: Provisioned) -> str:
    leader = leader_machine(env)
    return next(name for name in env.lab.groups["sensors"] if name != leader)


def cut_off_for_a_while(env: Provisioned, name: str) -> tuple[float, float]:
    """Unplug a machine's network for LAB_CUT_S (the fault's duration, not a wait for an
    event), always plug it back; returns when it was cut and restored."""
    cut_at = time.time()
    env.lab.cut(name)
    try:
        time.sleep(LAB_CUT_S)
    finally:
        env.lab.restore(name)
    return cut_at, time.time()


def test_fault_lab_leader_machine_cut_off(lab: Provisioned) -> None:
    since = steady_since(lab)
    name = leader_machine(lab)
    before = fleet_status(lab)
    node, old_epoch = before["leader"], before["epoch"]
    _, restored_at = cut_off_for_a_while(lab, name)
    wait_full_rounds(lab.collector, 2, devices=lab.sensors, after=restored_at, timeout=90)
    rows = lab_check(f"lab: leader's machine cut off {LAB_CUT_S:.0f} s", lab, since,
                     LAB_LEADER_CUT_GAP_S)
    assert_fenced(rows, node, old_epoch, restored_at)
    assert fleet_status(lab)["epoch"] > old_epoch


def test_fault_lab_follower_machine_cut_off(lab: Provisioned) -> None:
    since = steady_since(lab)
    name = follower_machine(lab)
    cut_at, restored_at = cut_off_for_a_while(lab, name)
    wait_full_rounds(lab.collector, 2, devices=lab.sensors, after=restored_at, timeout=90)
    rows = lab_check(f"lab: follower's machine cut off {LAB_CUT_S:.0f} s", lab, since,
                     LAB_FOLLOWER_CUT_GAP_S)
    during = [r["count"] for r in rows if cut_at < r["received_at"] < restored_at]
    assert lab.sensors - 1 in during, f"the cut sensor should have been left out: {during}"


def test_fault_lab_sensor_machine_powered_off_and_started(lab: Provisioned) -> None:
    since = steady_since(lab)
    name = follower_machine(lab)
    off_at = time.time()
    lab.lab.poweroff(name)
    try:
        wait_full_rounds(lab.collector, LAB_STEADY_ROUNDS, devices=lab.sensors - 1,
                         after=off_at, timeout=60)
    finally:
        lab.lab.start(name)
    wait_for(lambda: lab.lab.ssh(name, "systemctl", "is-active", "zk-sensor",
                                 check=False).stdout.strip() == "active", 60,
             f"zk-sensor active again on {name}")
    wait_full_rounds(lab.collector, 2, devices=lab.sensors, after=time.time(), timeout=90)
    lab_check("lab: sensor machine powered off and started", lab, since, LAB_POWEROFF_GAP_S)


# ---------------------------------------------------------------- a collector killed (issue 20)
# Every sensor's api_url lists both collectors; the leader sticks to the one that answered
# and, when it fails, sends the same round at once to the other (zk_sensor.node.collectors;
# tests/test_failover.py on loopback). Killed with SIGKILL, the collector in use refuses
# the next connection at once, so the rounds go on at the other one, read here through
# the shared database, with nothing lost and nothing stored twice.

# A refused connection costs no timeout: the round goes to the other collector within
# the same attempt, so the gap is the fleet's own few periods.
LAB_COLLECTOR_KILL_GAP_S = 3 * PERIOD + LAB_SLACK_S
COLLECTOR_RESTART_TIMEOUT_S = 60.0


def stored_by(env: Provisioned) -> dict[str, int]:
    """Rounds each collector stored since it started (its /metrics), by URL."""
    return {url: collector_replies(url).get("stored", 0) for url in env.collectors}


def collector_in_use(env: Provisioned) -> str:
    """The collector the fleet's leader delivers to: the one whose count of stored rounds
    grows while new rounds arrive (every one of them stored by it, none by the other)."""
    before = stored_by(env)
    newest = max(r["round"] for r in rounds(env))
    new_rounds_after(env, newest, 3, 30)
    after = stored_by(env)
    grew = [url for url in env.collectors if after[url] > before[url]]
    assert len(grew) == 1, f"not one collector in use: {before} then {after}"
    return grew[0]


def journal_since(env: Provisioned, name: str, unit: str, since: float) -> str:
    """A unit's journal on a machine from `since` (the machines share this host's clock)."""
    return env.lab.ssh(name, "journalctl", "-u", unit, "--no-pager", "-o", "cat",
                       f"--since=@{int(since) - 1}").stdout


def test_fault_lab_collector_in_use_killed(lab: Provisioned) -> None:
    since = steady_since(lab)
    in_use = collector_in_use(lab)
    other = next(url for url in lab.collectors if url != in_use)
    machine = lab.lab.groups["collector"][lab.collectors.index(in_use)]
    leader = leader_machine(lab)
    stored_before = collector_replies(other).get("stored", 0)
    killed_at = time.time()
    lab.lab.ssh(machine, "systemctl", "kill", "--signal=KILL", "zk-collector")
    try:
        # New full rounds keep arriving, stored by the other collector...
        wait_full_rounds(other, LAB_STEADY_ROUNDS, devices=lab.sensors, after=killed_at,
                         timeout=60)
        assert collector_replies(other).get("stored", 0) > stored_before
        # ...to which the leader moved when the killed one refused it.
        switched = re.compile(rf"delivering to {re.escape(other)}\S* "
                              rf"\({re.escape(in_use)}\S* failed: ")
        wait_for(lambda: switched.search(journal_since(lab, leader, "zk-sensor", killed_at)),
                 30, f"{leader}'s journal to say it moved to {other}", interval=1.0)
    finally:
        # systemd restarts it on its own after RestartSec (Restart=on-failure); `start`
        # makes sure, and returns at once if it did.
        lab.lab.ssh(machine, "systemctl", "start", "zk-collector", timeout=120)
    wait_for(lambda: lab.lab.ssh(machine, "systemctl", "is-active", "zk-collector",
                                 check=False).stdout.strip() == "active",
             COLLECTOR_RESTART_TIMEOUT_S, f"zk-collector active again on {machine}",
             interval=1.0)

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"{in_use}/healthz", timeout=5) as reply:
                return reply.status == 200
        except OSError:
            return False

    wait_for(healthy, COLLECTOR_RESTART_TIMEOUT_S, f"{in_use}/healthz to answer again",
             interval=0.5)
    # The whole window, from before the kill, through the other collector (the database
    # is shared): nothing lost, nothing twice, epochs never down, a short gap.
    wait_caught_up(other, fleet_status(lab)["round"] + CATCH_UP_ROUNDS,
                   LAB_CATCH_UP_TIMEOUT_S)
    rows = fetch_rounds(other)
    check_rounds(f"lab: the collector in use ({machine}) killed", rows,
                 LAB_COLLECTOR_KILL_GAP_S, since_round=since,
                 replies=collector_replies(other))
    assert [r for r in rows if r["received_at"] > killed_at], "no round after the kill"
    outbox = fleet_status(lab)["outbox"]
    assert outbox["dropped"] == 0 and outbox["rejected"] == 0, outbox


# ---------------------------------------------------------------- release upgrade (issue 20)
# Last, since it changes the machines' releases: ansible/upgrade.yml moves every bookworm
# ZooKeeper server and sensor to trixie, one machine at a time, while the fleet delivers.

UPGRADE_PLAYBOOK = REPO / "ansible" / "upgrade.yml"
# The ZooKeeper servers' leader goes last, so the ensemble elects once; the sensors'
# sessions move to another server meanwhile and the fleet's leader hands over on SIGTERM
# (it is upgraded last too). A session timeout and a few periods bound any pause.
LAB_UPGRADE_GAP_S = LAB_SESSION_TIMEOUT_S + 3 * PERIOD + LAB_SLACK_S


def test_rolling_release_upgrade_keeps_every_round(lab: Provisioned) -> None:
    """upgrade.yml upgrades the bookworm ZooKeeper servers and sensors to trixie host by
    host (ZooKeeper 3.8 to 3.9, the venvs' Python 3.11 to 3.13) under load, the fleet's
    leader on one of them (it goes last and hands over): afterwards
    every server runs 3.9 in one ensemble, every sensor's venv 3.13 with `pip check`
    clean, every sensor measures again, and the collectors stored every round of the whole
    upgrade once, with no pause beyond LAB_UPGRADE_GAP_S."""
    rows = release_rows()
    upgraded = [name for group in ("zookeeper", "sensors") for name in lab.lab.groups[group]
                if lab.lab.hosts[name].os != "trixie"]
    assert any(n in lab.lab.groups["zookeeper"] for n in upgraded), "no bookworm server"
    assert any(n in lab.lab.groups["sensors"] for n in upgraded), "no bookworm sensor"
    # The fleet's leader on a machine to upgrade, so the upgrade goes through its handover.
    leader = [n for n in upgraded if n in lab.lab.groups["sensors"]][-1]
    if leader_machine(lab) != leader:
        moved = ctl(lab, "switchover", "--to", sensor_ids()[leader], "--wait", "30")
        assert moved.returncode == 0, moved.stdout + moved.stderr
    since = steady_since(lab)
    started = time.monotonic()
    result = lab.lab.run_playbook("--limit", ",".join(upgraded), playbook=UPGRADE_PLAYBOOK,
                                  check=False, capture=True)
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    print(f"UPGRADE {', '.join(upgraded)} to trixie in {seconds:.0f} s")
    counts = recap(result.stdout)
    assert all(counts[name]["failed"] == 0 for name in upgraded), counts

    for name in upgraded:
        shown = lab.lab.ssh(name, ". /etc/os-release && echo $VERSION_CODENAME").stdout
        assert shown.strip() == "trixie", (name, shown)
    modes = {}
    for name in lab.lab.groups["zookeeper"]:
        reply = four_letter_word(lab.lab.hosts[name].address, "srvr", tls_context())
        version = re.search(r"^Zookeeper version: (\d+\.\d+)\.", reply, re.MULTILINE)
        assert version and version.group(1) == rows["trixie"]["zookeeper"], (name, reply)
        mode = re.search(r"^Mode: (\w+)", reply, re.MULTILINE)
        assert mode, (name, reply)
        modes[name] = mode.group(1)
    assert sorted(modes.values()) == ["follower", "follower", "leader"], modes
    for name in lab.lab.groups["sensors"]:
        python = lab.lab.ssh(name, f"{VENV}/bin/python", "-c",
                             "import sys; print('%d.%d' % sys.version_info[:2])").stdout
        assert python.strip() == rows["trixie"]["python"], (name, python)
        check = lab.lab.ssh(name, f"{VENV}/bin/pip", "--disable-pip-version-check", "check",
                            check=False, timeout=180)
        assert check.returncode == 0, (name, check.stdout, check.stderr)

    # Every sensor, the upgraded ones included, is in the rounds again; and nothing of
    # the whole upgrade was lost or stored twice.
    wait_full_rounds(lab.collector, LAB_STEADY_ROUNDS, devices=lab.sensors,
                     after=time.time(), timeout=120)
    rows = lab_check("lab: rolling release upgrade to trixie", lab, since, LAB_UPGRADE_GAP_S)
    # The leader was upgraded last and handed over: another node leads, in a later epoch.
    assert leader_machine(lab) != leader
    epochs = [r["epoch"] for r in rows if r["round"] >= since]
    assert max(epochs) > min(epochs), "no handover during the upgrade"

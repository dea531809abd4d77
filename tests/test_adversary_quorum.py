"""The quorum trusts only the servers: a learner needs a certificate of the quorum CA and
the quorum's SASL password, so a stolen sensor's key never buys a copy of the data tree
or a seat that could forward requests under any identity, `super` included.

Real 3-server ensembles on loopback, with the zookeeper role's quorum settings (quorum
TLS against the quorum CA only, DIGEST-MD5 quorum SASL required both ways) and
certificates made by the role's own fleet_pki.py. Servers 1 and 2 are the ensemble; the
third is the intruder, or, in the control, a genuine member. A member that joins writes
what the leader sends it (a snapshot, or the transactions) to its disk: the intruder's
disk must never hold the secret znode's data.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kazoo.client import KazooClient

from zk_sensor.testing.deploy import FLEET_PKI
from zk_sensor.testing.zookeeper import LOOPBACK, ZkEnsemble, ZkServer

pytestmark = pytest.mark.ensemble

START_TIMEOUT_S = 90.0
REFUSAL_TIMEOUT_S = 60.0
POLL_S = 0.2
INTRUDER = 3
SECRET_ZNODE = "/config-secret"
SECRET_DATA = b"api token 7f3c9a"
# What the members log when they turn a peer away (ZooKeeper 3.8): a quorum connection
# whose TLS handshake failed (accepted, then no cipher suite: the handshake never
# completed), or the quorum's SASL exchange failing.
TLS_REFUSAL = ("- NONE - SSL_NULL_WITH_NULL_NULL",)
SASL_REFUSAL = ("Failed to authenticate using SASL", "DIGEST-MD5: digest response format "
                "violation")


def make_pki(directory: Path) -> Path:
    """The fleet's CA and the quorum CA with fleet_pki.py: every host on loopback."""
    spec = {"dir": str(directory), "ca_name": "test fleet CA",
            "quorum_ca_name": "test quorum CA", "ca_days": 30, "cert_days": 2,
            "renew_days": 1, "curve": "P-256",
            "hosts": {"zk1": LOOPBACK, "zk2": LOOPBACK, "zk3": LOOPBACK,
                      "sensor1": LOOPBACK},
            "quorum_hosts": ["zk1", "zk2", "zk3"], "extra_names": {}, "clients": [],
            "passphrase_file": str(directory.parent / "pki.passphrase")}
    subprocess.run([sys.executable, str(FLEET_PKI)], input=json.dumps(spec), text=True,
                   capture_output=True, timeout=60, check=True,
                   env={**os.environ, "ZK_PKI_PASSPHRASE": secrets.token_hex(16)})
    return directory


def key_store(pki: Path, stem: str, dest: Path) -> Path:
    """ZooKeeper's PEM key store, as the role installs it: the key, then the certificate."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes((pki / f"{stem}.key").read_bytes() + (pki / f"{stem}.pem").read_bytes())
    dest.chmod(0o600)
    return dest


def jaas(path: Path, password: str, learner_password: str) -> Path:
    """The role's JAAS file: the quorum user as server (checks) and as learner (presents)."""
    path.write_text(
        "QuorumServer {\n"
        "  org.apache.zookeeper.server.auth.DigestLoginModule required\n"
        f'  user_zkquorum="{password}";\n}};\n'
        "QuorumLearner {\n"
        "  org.apache.zookeeper.server.auth.DigestLoginModule required\n"
        '  username="zkquorum"\n'
        f'  password="{learner_password}";\n}};\n')
    path.chmod(0o600)
    return path


def quorum_config(store: Path, trust: Path) -> list[str]:
    """The zookeeper role's quorum lines (templates/zoo.cfg.j2)."""
    return [
        "sslQuorum=true",
        f"ssl.quorum.keyStore.location={store}",
        "ssl.quorum.keyStore.type=PEM",
        f"ssl.quorum.trustStore.location={trust}",
        "ssl.quorum.trustStore.type=PEM",
        "quorum.auth.enableSasl=true",
        "quorum.auth.learnerRequireSasl=true",
        "quorum.auth.serverRequireSasl=true",
        "quorum.auth.learner.saslLoginContext=QuorumLearner",
        "quorum.auth.server.saslLoginContext=QuorumServer",
    ]


class Quorum:
    """Servers 1 and 2 genuine; server 3 with the key store and password it is given."""

    def __init__(self, base: Path, intruder_stem: str, intruder_password: str | None = None,
                 ) -> None:
        self.pki = make_pki(base / "pki")
        password = secrets.token_hex(16)
        stores = {myid: key_store(self.pki, f"quorum/zk{myid}", base / f"tls/zk{myid}.pem")
                  for myid in (1, 2)}
        stores[INTRUDER] = key_store(self.pki, intruder_stem, base / "tls/zk3.pem")
        self.intruder_store = stores[INTRUDER]
        logins = {myid: jaas(base / f"jaas-{myid}.conf", password, password)
                  for myid in (1, 2)}
        logins[INTRUDER] = jaas(base / "jaas-3.conf", password,
                                intruder_password or password)
        self.ensemble = ZkEnsemble(
            base / "zk", 3,
            extra_config=lambda myid: quorum_config(stores[myid], self.pki / "quorum-ca.pem"),
            jvm_options=lambda myid: [f"-Djava.security.auth.login.config={logins[myid]}"])

    @property
    def intruder(self) -> ZkServer:
        return self.ensemble.servers[INTRUDER - 1]

    @property
    def members(self) -> list[ZkServer]:
        return [s for s in self.ensemble.servers if s.myid != INTRUDER]

    def start_members_with_a_secret(self) -> None:
        """Servers 1 and 2 form the quorum (2 of 3) and hold a znode worth stealing."""
        for server in self.members:
            server.start()
        self.ensemble.wait_serving(START_TIMEOUT_S)
        client = KazooClient(hosts=",".join(s.address for s in self.members))
        client.start(timeout=30)
        try:
            client.create(SECRET_ZNODE, SECRET_DATA)
        finally:
            client.stop()
            client.close()

    def stop(self) -> None:
        self.ensemble.stop()


def holds_the_secret(server: ZkServer) -> bool:
    """Whether the server's snapshots or transaction logs (what a member gets from the
    leader when it syncs) hold the secret znode's data."""
    return any(SECRET_DATA in path.read_bytes()
               for path in server.data_dir.rglob("*") if path.is_file())


def log_text(servers: list[ZkServer]) -> str:
    return "".join(s.log_file.read_text(errors="replace") for s in servers
                   if s.log_file.is_file())


def wait_for_refusal(quorum: Quorum, marks: tuple[str, ...]) -> str:
    """Poll the members' logs until they turned a peer away (the line that says so), or
    the intruder got in (assert_kept_out then says how far)."""
    deadline = time.monotonic() + REFUSAL_TIMEOUT_S
    while time.monotonic() < deadline:
        for line in log_text(quorum.members).splitlines():
            if any(mark in line for mark in marks):
                return line
        assert quorum.intruder.is_running(), quorum.intruder.describe()
        if quorum.intruder.mode() is not None:
            return "not refused: the intruder serves"
        time.sleep(POLL_S)
    raise AssertionError("no refusal logged:\n" + "\n".join(
        s.describe() for s in quorum.ensemble.servers))


def wait_for_the_secret(server: ZkServer) -> bool:
    """A member that just joined writes what it got from the leader soon, not at once."""
    deadline = time.monotonic() + REFUSAL_TIMEOUT_S
    while not holds_the_secret(server):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)
    return True


def assert_kept_out(quorum: Quorum) -> None:
    """Not a member: not serving, and no copy of the data tree on its disk."""
    assert quorum.intruder.mode() is None, quorum.intruder.describe()
    assert not holds_the_secret(quorum.intruder)
    assert sorted(quorum.ensemble.modes(quorum.members).values()) == ["follower", "leader"]


QuorumFactory = Callable[..., Quorum]


@pytest.fixture
def quorum_factory(tmp_path: Path) -> Iterator[QuorumFactory]:
    """Quorum(intruder_stem, intruder_password) under tmp_path; every one stopped after."""
    made: list[Quorum] = []

    def factory(intruder_stem: str, intruder_password: str | None = None) -> Quorum:
        quorum = Quorum(tmp_path / f"q{len(made)}", intruder_stem, intruder_password)
        made.append(quorum)
        return quorum

    yield factory
    for quorum in made:
        quorum.stop()


def test_the_ensemble_forms_over_quorum_tls_and_sasl(quorum_factory: QuorumFactory) -> None:
    quorum = quorum_factory("quorum/zk3")
    quorum.ensemble.start()
    quorum.ensemble.wait_serving(START_TIMEOUT_S)
    assert sorted(quorum.ensemble.modes().values()) == ["follower", "follower", "leader"]
    # Every quorum connection was TLS and authenticated with the quorum's password.
    logs = log_text(quorum.ensemble.servers)
    assert "Accepted TLS connection from /127.0.0.1" in logs
    assert "Successfully authenticated learner: authenticationID=zkquorum" in logs


def test_a_learner_with_a_fleet_certificate_is_refused(quorum_factory: QuorumFactory) -> None:
    """A sensor's key (the fleet's CA), even with the quorum password, buys no seat; the
    same server with its quorum certificate joins and gets the data (so the refusal was the
    certificate's doing)."""
    quorum = quorum_factory("hosts/sensor1")
    quorum.start_members_with_a_secret()
    quorum.intruder.start()
    line = wait_for_refusal(quorum, TLS_REFUSAL)
    assert_kept_out(quorum)

    quorum.intruder.stop()
    key_store(quorum.pki, "quorum/zk3", quorum.intruder_store)
    quorum.intruder.start()
    quorum.ensemble.wait_serving(START_TIMEOUT_S)
    assert quorum.intruder.mode() == "follower", line
    assert wait_for_the_secret(quorum.intruder)


def test_a_learner_without_the_quorum_password_is_refused(quorum_factory: QuorumFactory) -> None:
    """A genuine quorum certificate (a server's stolen key) without the quorum password
    buys no seat either."""
    quorum = quorum_factory("quorum/zk3", intruder_password=secrets.token_hex(16))
    quorum.start_members_with_a_secret()
    quorum.intruder.start()
    wait_for_refusal(quorum, SASL_REFUSAL)
    assert_kept_out(quorum)

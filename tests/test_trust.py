"""Trust boundaries on a real ZooKeeper: digest ACLs (operator, fleet, anyone) applied by
`zk-sensorctl acl apply`, a fleet running on its own identity, refused credentials, and
TLS between clients and ZooKeeper with host name verification."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError
from kazoo.security import ACL, ANYONE_ID_UNSAFE, Permissions

from zk_sensor.fleet.layout import Layout
from zk_sensor.testing import pki as pki
from zk_sensor.testing.fleet import BIN, Fleet, Receiver, run_ctl
from zk_sensor.testing.identities import (
    FLEET,
    OPERATOR,
    Secured,
    identity_client,
    write_credentials,
)
from zk_sensor.testing.zookeeper import ZkEnsemble
from zk_sensor.zk.access import Credentials


@pytest.fixture
def secured(zk_hosts: str, zk_namespace: str, tmp_path: Path) -> Iterator[Secured]:
    """A namespace under `acl apply`, and a connected client per identity. Torn down with
    the operator's credentials: nobody else may delete it."""
    operator_file = write_credentials(tmp_path, OPERATOR)
    fleet_file = write_credentials(tmp_path, FLEET)
    clients = {"operator": identity_client(zk_hosts, OPERATOR),
               "fleet": identity_client(zk_hosts, FLEET),
               "anyone": identity_client(zk_hosts, None)}
    setup = Secured(zk_hosts, zk_namespace, operator_file, fleet_file, clients)
    applied = setup.as_operator("acl", "apply", "--fleet-auth-file", str(fleet_file))
    assert applied.returncode == 0, applied.stderr
    yield setup
    with contextlib.suppress(Exception):
        clients["operator"].delete(zk_namespace, recursive=True)
    for client in clients.values():
        client.stop()
        client.close()


def test_acl_apply_creates_the_namespace_and_is_idempotent(secured: Secured) -> None:
    again = secured.as_operator("acl", "apply", "--fleet-auth-file", str(secured.fleet_file))
    assert again.returncode == 0, again.stderr
    assert ", 0 changed" in again.stdout
    operator = secured.clients["operator"]
    for path in (secured.layout.config, secured.layout.readings, secured.layout.election,
                 secured.layout.barrier, secured.layout.epoch, secured.layout.outbox):
        acls, _ = operator.get_acls(path)
        assert ACL(Permissions.READ, ANYONE_ID_UNSAFE) in acls or path == secured.layout.config
        assert any(acl.id.id.startswith("operator:") and acl.perms == Permissions.ALL
                   for acl in acls), (path, acls)


# ------------------------------------------------------------- the matrix, row by row
Action = Callable[[KazooClient, Layout], object]


def new_config_key(client: KazooClient, layout: Layout) -> object:
    return client.create(layout.config_key("extra"), b"x", sequence=True)


def set_config(client: KazooClient, layout: Layout) -> object:
    client.ensure_path(layout.config_key("api_url"))
    return client.set(layout.config_key("api_url"), b"http://attacker.example/steal")


def read_config(client: KazooClient, layout: Layout) -> object:
    return client.get_children(layout.config)


def read_member_acl(client: KazooClient, layout: Layout) -> object:
    return client.get(layout.member_acl)


def write_member_acl(client: KazooClient, layout: Layout) -> object:
    return client.set(layout.member_acl, b"[[31, \"world\", \"anyone\"]]")


def change_acl(client: KazooClient, layout: Layout) -> object:
    return client.set_acls(layout.barrier, [ACL(Permissions.ALL, ANYONE_ID_UNSAFE)])


def delete_config_folder(client: KazooClient, layout: Layout) -> object:
    return client.delete(layout.config, recursive=True)


def publish_reading(client: KazooClient, layout: Layout) -> object:
    return client.create(layout.reading("intruder"), b"{}", sequence=True)


def stand_as_candidate(client: KazooClient, layout: Layout) -> object:
    return client.create(f"{layout.election}/n_intruder_", b"", ephemeral=True, sequence=True)


def release_barrier(client: KazooClient, layout: Layout) -> object:
    data, _ = client.get(layout.barrier)
    return client.set(layout.barrier, data)


def bump_epoch(client: KazooClient, layout: Layout) -> object:
    data, _ = client.get(layout.epoch)
    return client.set(layout.epoch, data)


def count(client: KazooClient, layout: Layout) -> object:
    return client.create(layout.counter_shard("intruder"), b"1", sequence=True)


def queue_in_outbox(client: KazooClient, layout: Layout) -> object:
    return client.create(layout.outbox_round(999_999), b"{}", sequence=True)


def read_status(client: KazooClient, layout: Layout) -> object:
    return [client.get(layout.barrier), client.get(layout.epoch), client.get(layout.outbox),
            client.get_children(layout.readings), client.get_children(layout.election)]


# Creating actions use sequential names: every identity gets its own attempt.
ALLOWED = "allowed"
REFUSED = "NoAuth"
MATRIX: list[tuple[str, Action, str, str, str]] = [
    # action                          operator fleet    anyone
    ("read the status", read_status, ALLOWED, ALLOWED, ALLOWED),
    ("read the config", read_config, ALLOWED, ALLOWED, REFUSED),
    ("change the config", set_config, ALLOWED, REFUSED, REFUSED),
    ("add a config key", new_config_key, ALLOWED, REFUSED, REFUSED),
    ("delete the config folder", delete_config_folder, ALLOWED, REFUSED, REFUSED),
    ("read the member ACL", read_member_acl, ALLOWED, ALLOWED, REFUSED),
    ("change the member ACL", write_member_acl, ALLOWED, REFUSED, REFUSED),
    ("change an ACL", change_acl, ALLOWED, REFUSED, REFUSED),
    ("publish a reading", publish_reading, ALLOWED, ALLOWED, REFUSED),
    ("stand as a candidate", stand_as_candidate, ALLOWED, ALLOWED, REFUSED),
    ("release the barrier", release_barrier, ALLOWED, ALLOWED, REFUSED),
    ("take the epoch", bump_epoch, ALLOWED, ALLOWED, REFUSED),
    ("count a measurement", count, ALLOWED, ALLOWED, REFUSED),
    ("queue a round in the outbox", queue_in_outbox, ALLOWED, ALLOWED, REFUSED),
]


@pytest.mark.parametrize(("action", "row"), [(row[0], row[1:]) for row in MATRIX],
                         ids=[row[0].replace(" ", "-") for row in MATRIX])
def test_acl_matrix_row(secured: Secured, action: str, row: tuple) -> None:
    act, *expected = row
    # The operator goes last: its writes (deleting the config) must not hide the others'.
    for identity, outcome in reversed(list(zip(("operator", "fleet", "anyone"), expected,
                                               strict=True))):
        client = secured.clients[identity]
        try:
            act(client, secured.layout)
            got = ALLOWED
        except NoAuthError:
            got = REFUSED
        assert got == outcome, f"{identity} may {'' if outcome == ALLOWED else 'not '}{action}"


# ------------------------------------------------------------- a fleet on its own identity
def test_a_fleet_runs_on_its_own_identity(secured: Secured, receiver: Receiver,
                                          tmp_path: Path) -> None:
    assert secured.as_operator("config", "set", "sampling_period", "0.5").returncode == 0
    fleet = Fleet(secured.hosts, secured.namespace, tmp_path, receiver.url("/rounds"))
    try:
        for node_id in ("a", "b"):
            fleet.start(node_id, "--zk-auth-file", str(secured.fleet_file))
        receiver.wait_rounds(3)
        operator = secured.clients["operator"]
        acls, _ = operator.get_acls(secured.layout.reading("a"))
        assert {acl.id.id.split(":")[0]: acl.perms for acl in acls} == {
            "operator": Permissions.ALL,
            "fleet": Permissions.READ | Permissions.WRITE,
            "anyone": Permissions.READ}
        anonymous = secured.ctl("status")
        assert anonymous.returncode == 0, anonymous.stderr
        assert "not readable without the fleet's or the operator's credentials" in \
            anonymous.stdout
        assert " a " in anonymous.stdout and " b " in anonymous.stdout
    finally:
        fleet.stop_all()
    for daemon in fleet.history:
        assert FLEET.password not in daemon.log()


def test_a_sensor_cannot_change_the_config(secured: Secured) -> None:
    before = secured.as_operator("config", "set", "sampling_period", "2")
    assert before.returncode == 0, before.stderr
    attempt = secured.ctl("--zk-auth-file", str(secured.fleet_file),
                          "config", "set", "api_url", "http://attacker.example/")
    assert attempt.returncode == 2
    assert "refused" in attempt.stderr and len(attempt.stderr.strip().splitlines()) == 1
    data, _ = secured.clients["operator"].get(secured.layout.config_key("sampling_period"))
    assert data == b"2"
    assert secured.clients["operator"].exists(secured.layout.config_key("api_url")) is None


def test_the_cli_without_credentials_is_refused(secured: Secured) -> None:
    attempt = secured.ctl("config", "set", "sampling_period", "3")
    assert attempt.returncode == 2
    assert "refused" in attempt.stderr and len(attempt.stderr.strip().splitlines()) == 1
    assert secured.clients["operator"].exists(
        secured.layout.config_key("sampling_period")) is None
    apply = secured.ctl("acl", "apply", "--fleet-auth-file", str(secured.fleet_file))
    assert apply.returncode == 2 and "needs the operator's credentials" in apply.stderr


def test_a_node_whose_credentials_are_refused_exits_2(secured: Secured,
                                                      tmp_path: Path) -> None:
    (tmp_path / "wrong").mkdir()
    wrong = write_credentials(tmp_path / "wrong", Credentials("fleet", "not-the-password"))
    fleet = Fleet(secured.hosts, secured.namespace, tmp_path, "http://127.0.0.1:9/")
    for extra in (("--zk-auth-file", str(wrong)), ()):
        daemon = fleet.start("refused", *extra)
        assert daemon.wait_exit(30) == 2
        errors = [line for line in daemon.log().splitlines() if " ERROR " in line]
        assert len(errors) == 1 and "ZooKeeper refused" in errors[0], daemon.log()
        assert "not-the-password" not in daemon.log()
    assert secured.clients["operator"].get_children(secured.layout.election) == []


@pytest.mark.parametrize("program", ["zk-sensor", "zk-sensorctl"])
def test_credentials_others_can_read_are_refused(program: str, tmp_path: Path,
                                                 zk_hosts: str) -> None:
    loose = write_credentials(tmp_path, FLEET, mode=0o644)
    command = [str(BIN / program), "--zookeeper", zk_hosts, "--zk-auth-file", str(loose)]
    command += ["--id", "n1"] if program == "zk-sensor" else ["status"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip().endswith(f"chmod 600 {loose}")
    assert len(result.stderr.strip().splitlines()) == 1
    assert FLEET.password not in result.stderr


# ------------------------------------------------------------- TLS to ZooKeeper
def tls_args(ca: Path, identity: pki.Issued) -> list[str]:
    return ["--zk-ca-file", str(ca), "--zk-cert-file", str(identity.cert),
            "--zk-key-file", str(identity.key)]


def test_a_fleet_talks_to_zookeeper_over_tls(tls_server: pki.TlsServer, receiver: Receiver,
                                             tmp_path: Path) -> None:
    fleet = Fleet(tls_server.hosts, "/tls-fleet", tmp_path, receiver.url("/rounds"))
    try:
        daemon = fleet.start("t1", *tls_args(tls_server.ca.cert, tls_server.client))
        daemon.wait_log(r"ZooKeeper 127\.0\.0\.1:\d+ \(no credentials, TLS\)")
        receiver.wait_rounds(2)
        status = run_ctl(tls_server.hosts, "/tls-fleet", *tls_args(tls_server.ca.cert,
                                                                   tls_server.client), "status")
        assert status.returncode == 0, status.stderr
        assert "t1" in status.stdout
    finally:
        fleet.stop_all()


def test_a_client_certificate_from_another_ca_is_refused(tls_server: pki.TlsServer,
                                                         tmp_path: Path) -> None:
    stranger = pki.CertificateAuthority(tmp_path / "other", "another CA").issue("stranger")
    result = run_ctl(tls_server.hosts, "/tls-fleet",
                     *tls_args(tls_server.ca.cert, stranger), "status")
    assert result.returncode == 1
    assert "cannot reach ZooKeeper" in result.stderr


def test_a_server_certificate_for_another_host_is_refused(tmp_path: Path) -> None:
    """The server's certificate is signed by the trusted CA but names another host: a CA
    alone would let any server it signed pose as any other."""
    ca = pki.CertificateAuthority(tmp_path / "pki")
    impostor = ca.issue("impostor", hosts=("zk9.example",))
    ensemble = ZkEnsemble.standalone_tls(tmp_path, impostor.combined, ca.cert)
    ensemble.start()
    try:
        ensemble.wait_serving()
        result = run_ctl(ensemble.secure_hosts, "/tls-fleet",
                         *tls_args(ca.cert, ca.issue("node")), "status")
        assert result.returncode == 1
        assert "cannot reach ZooKeeper" in result.stderr
    finally:
        ensemble.stop()


def test_tls_settings_are_checked_at_start(tmp_path: Path, zk_hosts: str) -> None:
    result = subprocess.run([str(BIN / "zk-sensor"), "--id", "n1", "--zookeeper", zk_hosts,
                             "--zk-cert-file", str(tmp_path / "x.pem")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip() == \
        "zk-sensor: zk_cert_file and zk_key_file go together: set both or neither"


def test_the_cli_reads_hosts_namespace_and_credentials_from_a_nodes_file(
        secured: Secured, tmp_path: Path) -> None:
    node_file = tmp_path / "zk-sensor.toml"
    node_file.write_text(f'id = "n1"\nzookeeper = "{secured.hosts}"\n'
                         f'namespace = "{secured.namespace}"\n'
                         f'zk_auth_file = "{secured.operator_file}"\n')
    result = subprocess.run([str(BIN / "zk-sensorctl"), "-c", str(node_file),
                             "config", "set", "sampling_period", "4"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    data, _ = secured.clients["fleet"].get(secured.layout.config_key("sampling_period"))
    assert data == b"4"


def test_a_garbage_member_acl_makes_a_node_create_nothing(secured: Secured,
                                                          tmp_path: Path) -> None:
    """Garbage must not turn into open znodes: the node refuses to register until the
    operator applies the ACLs again."""
    secured.clients["operator"].set(secured.layout.member_acl, b"[[31, \"world\"]]")
    fleet = Fleet(secured.hosts, secured.namespace, tmp_path, "http://127.0.0.1:9/")
    try:
        daemon = fleet.start("g1", "--zk-auth-file", str(secured.fleet_file))
        daemon.wait_log(r"ERROR .*member ACL is not a non-empty list .* creating nothing")
        operator = secured.clients["operator"]
        assert operator.exists(secured.layout.reading("g1")) is None
        assert operator.get_children(secured.layout.election) == []
    finally:
        fleet.stop_all()


def test_a_running_leader_whose_identity_is_revoked_exits_2(secured: Secured,
                                                            receiver: Receiver,
                                                            tmp_path: Path) -> None:
    """A refusal in the middle of a leader's transaction is neither a failed nor an unknown
    outcome: the node says it was refused and exits, instead of re-reading forever."""
    fleet = Fleet(secured.hosts, secured.namespace, tmp_path, receiver.url("/rounds"))
    try:
        leader = fleet.start("l1", "--zk-auth-file", str(secured.fleet_file))
        receiver.wait_rounds(2)
        (tmp_path / "rotated").mkdir()
        rotated = write_credentials(tmp_path / "rotated", Credentials("fleet", "new-password"))
        applied = secured.as_operator("acl", "apply", "--fleet-auth-file", str(rotated))
        assert applied.returncode == 0, applied.stderr
        assert leader.wait_exit(30) == 2
        refusals = [line for line in leader.log().splitlines() if "ZooKeeper refused" in line]
        assert len(refusals) == 1 and "NoAuthError" in refusals[0], leader.log()[-2000:]
        assert "the barrier moved" not in leader.log()
    finally:
        fleet.stop_all()


def test_revoking_a_node_of_a_shared_identity_only_records_it(secured: Secured) -> None:
    """No ACL names one node of a shared identity: `node revoke` records it for the
    later switch to per-node identities and leaves the shared matrix as it is."""
    revoked = secured.as_operator("node", "revoke", "7")
    assert revoked.returncode == 0, revoked.stderr
    assert "node-7 recorded in" in revoked.stdout
    assert "already" in secured.as_operator("node", "revoke", "7").stdout
    assert secured.clients["operator"].get(secured.layout.revoked)[0] == b'["node-7"]'
    again = secured.as_operator("acl", "apply", "--fleet-auth-file", str(secured.fleet_file))
    assert again.returncode == 0 and ", 0 changed" in again.stdout, again.stdout

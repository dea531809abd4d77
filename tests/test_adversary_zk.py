"""A stolen Pi and hostile clients on a real ZooKeeper: per-node identities, `node revoke`,
repairs by `acl apply` (and the break-glass identity), the locked root and the quota.

The server runs with a superDigest (the break-glass identity) and quota enforcement, as
the playbook configures production servers.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError, QuotaExceededError
from kazoo.security import ACL, OPEN_ACL_UNSAFE, Id, Permissions

from zk_sensor.config.sources import SettingsError
from zk_sensor.fleet.layout import Layout
from zk_sensor.fleet.members import InvalidRevoked, decode_revoked, read_members_file
from zk_sensor.testing.fleet import BIN, Fleet, Receiver, run_ctl, wait_for
from zk_sensor.testing.identities import OPERATOR, identity_client, write_credentials
from zk_sensor.testing.zookeeper import ZkEnsemble
from zk_sensor.zk.access import Credentials

SUPER = Credentials("super", "super-password-0123456789")
NODES = {node: Credentials(f"node-{node}", f"node-{node}-password-0123456789")
         for node in ("1", "2", "3")}
READ_WRITE = Permissions.READ | Permissions.WRITE


@pytest.fixture(scope="module")
def guarded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZkEnsemble]:
    options = [f"-Dzookeeper.DigestAuthenticationProvider.superDigest={SUPER.digest_id}",
               "-Dzookeeper.enforceQuota=true"]
    ensemble = ZkEnsemble(tmp_path_factory.mktemp("zk-guarded"), 1,
                          jvm_options=lambda _myid: options)
    ensemble.start()
    try:
        ensemble.wait_serving(60)
        yield ensemble
    finally:
        ensemble.stop()


@dataclass
class Members:
    hosts: str
    namespace: str
    directory: Path
    clients: dict[str, KazooClient]

    @property
    def layout(self) -> Layout:
        return Layout(self.namespace)

    def file(self, credentials: Credentials) -> Path:
        return write_credentials(self.directory, credentials)

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_ctl(self.hosts, self.namespace, *args)

    def as_identity(self, credentials: Credentials, *args: str) -> \
            subprocess.CompletedProcess[str]:
        return self.ctl("--zk-auth-file", str(self.file(credentials)), *args)

    def apply(self, *extra: str, identity: Credentials = OPERATOR) -> \
            subprocess.CompletedProcess[str]:
        return self.as_identity(identity, "acl", "apply", "--members-file",
                                str(self.directory / "members"), *extra)

    def fleet(self, receiver: Receiver) -> Fleet:
        return Fleet(self.hosts, self.namespace, self.directory, receiver.url("/rounds"))

    def start(self, fleet: Fleet, node: str) -> None:
        fleet.start(node, "--zk-auth-file", str(self.file(NODES[node])))


def members_line(directory: Path, credentials: Credentials) -> str:
    result = subprocess.run([str(BIN / "zk-sensorctl"), "acl", "digest", "--auth-file",
                             str(write_credentials(directory, credentials))],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture
def members(guarded_server: ZkEnsemble, tmp_path: Path) -> Iterator[Members]:
    """A namespace under `acl apply --members-file` with three nodes' identities; a
    client per identity. Torn down by the break-glass identity."""
    hosts = guarded_server.hosts
    namespace = f"/adversary-{secrets.token_hex(3)}"
    lines = [members_line(tmp_path, credentials) for credentials in NODES.values()]
    (tmp_path / "members").write_text("# the fleet\n" + "\n".join(lines) + "\n")
    clients = {"operator": identity_client(hosts, OPERATOR),
               "super": identity_client(hosts, SUPER), "anyone": identity_client(hosts, None)}
    clients.update({node: identity_client(hosts, credentials)
                    for node, credentials in NODES.items()})
    setup = Members(hosts, namespace, tmp_path, clients)
    applied = setup.apply()
    assert applied.returncode == 0, applied.stderr
    yield setup
    with contextlib.suppress(Exception):
        clients["super"].delete(namespace, recursive=True)
    with contextlib.suppress(Exception):
        clients["super"].delete(f"/zookeeper/quota{namespace}", recursive=True)
    for client in clients.values():
        client.stop()
        client.close()


def refused(action: object) -> bool:
    try:
        action()  # type: ignore[operator]
    except NoAuthError:
        return True
    return False


def perms_by_user(client: KazooClient, path: str) -> dict[str, int]:
    acls, _ = client.get_acls(path)
    return {acl.id.id.split(":")[0]: acl.perms for acl in acls}


def candidate_of(client: KazooClient, layout: Layout, node: str) -> str | None:
    names = [name for name in client.get_children(layout.election)
             if name.startswith(f"n_{node}_")]
    return f"{layout.election}/{names[0]}" if names else None


# ------------------------------------------------------------- identities and the files
def test_acl_digest_is_zookeepers_digest_and_garbage_members_are_refused(
        members: Members, tmp_path: Path) -> None:
    assert members_line(tmp_path, NODES["1"]) == NODES["1"].digest_id
    fresh = f"/adversary-unwritten-{secrets.token_hex(3)}"
    garbage = tmp_path / "garbage-members"
    garbage.write_text(f"{NODES['1'].digest_id}\nnode-2:not-base64!\n")
    result = subprocess.run(
        [str(BIN / "zk-sensorctl"), "--zookeeper", members.hosts, "--namespace", fresh,
         "--zk-auth-file", str(members.file(OPERATOR)), "acl", "apply", "--members-file",
         str(garbage)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "line 2" in result.stderr
    assert members.clients["operator"].exists(fresh) is None


# ------------------------------------------------------------- one stolen Pi
def test_a_stolen_pi_cannot_touch_another_nodes_znodes_or_the_operators(
        members: Members, receiver: Receiver) -> None:
    fleet = members.fleet(receiver)
    assert members.as_identity(OPERATOR, "config", "set", "sampling_period", "0.5")\
        .returncode == 0
    try:
        for node in ("1", "2"):
            members.start(fleet, node)
        receiver.wait_rounds(2)
        layout, operator, stolen = members.layout, members.clients["operator"], \
            members.clients["2"]
        reading, candidate = layout.reading("1"), candidate_of(operator, layout, "1")
        assert candidate is not None
        for path in (reading, candidate):
            assert perms_by_user(operator, path) == {
                "operator": Permissions.ALL, "node-1": READ_WRITE, "anyone": Permissions.READ}
        assert refused(lambda: stolen.set(reading, b'{"value": 1e9}'))
        assert refused(lambda: stolen.delete(reading))
        assert refused(lambda: stolen.set(candidate, b"2"))
        assert refused(lambda: stolen.set_acls(layout.reading("2"), OPEN_ACL_UNSAFE))
        assert refused(lambda: stolen.set_acls(layout.barrier, OPEN_ACL_UNSAFE))
        assert refused(lambda: stolen.create(f"{layout.barrier}/child", b""))
        assert refused(lambda: stolen.set(layout.config_key("sampling_period"), b"0.01"))
        assert refused(lambda: stolen.create(layout.config_key("api_url"), b"http://evil/"))
        assert refused(lambda: stolen.set(layout.member_acl, b"[[31, \"world\", \"anyone\"]]"))
        assert refused(lambda: stolen.set(layout.revoked, b"[]"))
        assert refused(lambda: stolen.delete(layout.revoked))
        again = members.apply()
        assert again.returncode == 0 and ", 0 changed" in again.stdout, again.stdout
    finally:
        fleet.stop_all()


def test_revoking_a_node_cuts_it_off_and_the_fleet_goes_on(
        members: Members, receiver: Receiver) -> None:
    fleet = members.fleet(receiver)
    layout, operator = members.layout, members.clients["operator"]
    try:
        members.start(fleet, "2")
        wait_for(lambda: candidate_of(operator, layout, "2"), 20, "node 2 to stand")
        for node in ("1", "3"):
            members.start(fleet, node)
        receiver.wait_rounds(2)
        revoked = members.as_identity(OPERATOR, "node", "revoke", "2")
        assert revoked.returncode == 0, revoked.stderr
        assert "node-2 recorded in" in revoked.stdout and "already" not in revoked.stdout
        assert fleet.daemons["2"].wait_exit(30) == 2
        refusals = [line for line in fleet.daemons["2"].log().splitlines()
                    if "ZooKeeper refused" in line]
        assert len(refusals) == 1, fleet.daemons["2"].log()[-2000:]
        assert refused(lambda: members.clients["2"].set(layout.reading("2"), b"{}"))
        assert candidate_of(operator, layout, "2") is None
        receiver.wait_rounds(3, after=time.time())
        assert fleet.daemons["1"].running and fleet.daemons["3"].running
        assert "already" in members.as_identity(OPERATOR, "node", "revoke", "2").stdout
        stale = members.apply()
        assert stale.returncode == 0 and "skipped revoked member node-2" in stale.stdout
        assert refused(lambda: members.clients["2"].set(layout.reading("2"), b"{}"))
        readmitted = members.as_identity(OPERATOR, "node", "readmit", "2")
        assert readmitted.returncode == 0 and "readmitted" in readmitted.stdout
        assert members.apply().returncode == 0
        members.clients["2"].set(layout.reading("2"), b"{}")
    finally:
        fleet.stop_all()


def test_a_member_can_neither_revoke_nor_apply_acls(members: Members) -> None:
    """A member has DELETE on the election folder: were `acl apply` to treat its refusals
    as hostile znodes, it would delete the others' candidates."""
    layout = members.layout
    candidate = members.clients["1"].create(
        f"{layout.election}/n_1_", b"1", ephemeral=True, sequence=True,
        acl=[ACL(Permissions.ALL, Id("digest", OPERATOR.digest_id)),
             ACL(READ_WRITE, Id("digest", NODES["1"].digest_id))])
    attempt = members.as_identity(NODES["2"], "node", "revoke", "1")
    assert attempt.returncode == 2 and len(attempt.stderr.strip().splitlines()) == 1
    assert b"node-1" not in members.clients["operator"].get(layout.revoked)[0]
    attempt = members.apply(identity=NODES["2"])
    assert attempt.returncode == 2 and "refused" in attempt.stderr
    assert members.clients["operator"].exists(candidate) is not None


# ------------------------------------------------------------- the operator can repair
def test_acl_apply_removes_a_hostile_leaf_and_super_repairs_a_hostile_folder(
        members: Members) -> None:
    layout, stolen = members.layout, members.clients["2"]
    own = [ACL(Permissions.ALL, Id("digest", NODES["2"].digest_id))]
    squat = stolen.create(layout.reading("99"), b'{"value": 1e9}', acl=own)
    readable = stolen.create(layout.reading("98"), b'{"value": 1e9}',
                             acl=[*own, ACL(Permissions.READ, Id("world", "anyone"))])
    folder = stolen.create(f"{layout.outbox}/junk", b"", acl=own)
    stolen.create(f"{folder}/child", b"", acl=own)
    applied = members.apply()
    assert applied.returncode == 3, applied.stderr
    assert f"removed hostile znode {squat}" in applied.stdout
    assert (f"cannot repair {folder}: run acl apply with the break-glass identity (super)"
            in applied.stdout)
    assert f"removed hostile znode {readable}" in applied.stdout
    assert members.clients["operator"].exists(squat) is None
    assert "changed" in applied.stdout.splitlines()[-1]
    repaired = members.apply("--operator-auth-file", str(members.file(OPERATOR)),
                             identity=SUPER)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert perms_by_user(members.clients["operator"], folder)["operator"] == Permissions.ALL
    assert members.apply().returncode == 0


def test_super_must_name_the_operator(members: Members) -> None:
    attempt = members.apply(identity=SUPER)
    assert attempt.returncode == 2 and "--operator-auth-file" in attempt.stderr


def test_the_operators_password_rotates_through_operator_auth_file(
        members: Members, tmp_path: Path) -> None:
    rotated = Credentials("operator", "a-new-operator-password-0123456789")
    (tmp_path / "new").mkdir()
    new_file = write_credentials(tmp_path / "new", rotated)
    applied = members.apply("--operator-auth-file", str(new_file))
    assert applied.returncode == 0, applied.stderr
    old = members.as_identity(OPERATOR, "config", "set", "sampling_period", "3")
    assert old.returncode == 2
    new = members.ctl("--zk-auth-file", str(new_file), "config", "set", "sampling_period", "3")
    assert new.returncode == 0, new.stderr
    again = members.ctl("--zk-auth-file", str(new_file), "acl", "apply", "--members-file",
                        str(members.directory / "members"))
    assert again.returncode == 0 and ", 0 changed" in again.stdout, again.stdout


# ------------------------------------------------------------- the root and the quota
def test_lock_root_shuts_anonymous_clients_out_of_the_root(members: Members) -> None:
    anyone, root_before = members.clients["anyone"], members.clients["super"].get_children("/")
    try:
        locked = members.apply("--lock-root")
        assert locked.returncode == 0 and "locked /" in locked.stdout, locked.stdout
        assert sorted(members.clients["super"].get_children("/")) == sorted(root_before)
        assert refused(lambda: anyone.create(f"/squat-{secrets.token_hex(3)}", b""))
        assert refused(lambda: anyone.set_acls("/", OPEN_ACL_UNSAFE))
        assert refused(lambda: anyone.set_acls("/zookeeper", OPEN_ACL_UNSAFE))
        assert refused(lambda: members.clients["2"].create("/squat-member", b""))
        assert ", 0 changed" in members.apply("--lock-root").stdout
    finally:
        for path in ("/", "/zookeeper"):
            members.clients["super"].set_acls(path, OPEN_ACL_UNSAFE)


def test_the_quota_refuses_a_flood_and_a_member_cannot_lift_it(members: Members) -> None:
    limit = 40
    applied = members.apply("--max-znodes", str(limit), "--max-bytes", "100000")
    assert applied.returncode == 0 and f"set to {limit} znodes" in applied.stdout
    stolen, layout = members.clients["2"], members.layout
    limits = f"/zookeeper/quota{layout.namespace}/zookeeper_limits"
    assert refused(lambda: stolen.set(limits, b"count=-1,bytes=-1"))
    assert refused(lambda: stolen.delete(limits))
    assert refused(lambda: stolen.set_acls(limits, OPEN_ACL_UNSAFE))
    assert refused(lambda: stolen.delete("/zookeeper/quota", recursive=True))
    created = 0
    with pytest.raises(QuotaExceededError):
        for created in range(limit + 1):  # noqa: B007 - the count is checked below
            stolen.create(f"{layout.outbox}/flood-", b"x", sequence=True)
    assert created < limit
    stats, _ = members.clients["anyone"].get(
        f"/zookeeper/quota{layout.namespace}/zookeeper_stats")
    assert stats.startswith(f"count={limit},".encode()), stats


# ------------------------------------------------------------- the files, pure logic
def test_a_members_file_skips_comments_and_refuses_duplicates(tmp_path: Path) -> None:
    good = tmp_path / "members"
    good.write_text(f"# sensors\n\n{NODES['1'].digest_id}\n  {NODES['2'].digest_id}  \n")
    assert read_members_file(str(good)) == [NODES["1"].digest_id, NODES["2"].digest_id]
    for text, problem in ((f"{NODES['1'].digest_id}\n{NODES['1'].digest_id}\n", "twice"),
                          ("node-1:c2hvcnQ=\n", "line 1"), ("# nobody\n", "no member"),
                          ("node-1\n", "line 1")):
        good.write_text(text)
        with pytest.raises(SettingsError, match=problem):
            read_members_file(str(good))


@pytest.mark.parametrize("data", [b"{}", b'["ok", 3]', b'["a b"]', b"[" * 50, b"\xff",
                                  b'["' + b"9" * 5000 + b'"]x'])
def test_a_garbage_revoked_list_is_refused(data: bytes) -> None:
    with pytest.raises(InvalidRevoked):
        decode_revoked(data)

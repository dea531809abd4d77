"""Who may do what in a fleet's namespace: ZooKeeper digest ACLs.

Three identities (README, "Access control"):
- the operator may do everything, ACLs included;
- the fleet (every node shares one identity) reads the config and does everything a node
  does (readings, election, barrier, epoch, counter, outbox), but may not change the
  config, request a switchover or change any ACL;
- anyone else may read what `zk-sensorctl status` shows, except the config, and write
  nothing.

ZooKeeper ACLs are per znode and not inherited, so `zk-sensorctl acl apply` walks the
whole namespace, and a node gives every znode it creates the member ACL, which it reads
at registration from the znode `member-acl` (config's ACL: the fleet reads it, nobody
else). It cannot copy a folder's ACL instead: ZooKeeper 3.6+ masks the digests of an
ACL to clients without ADMIN on the znode, and the fleet must not have ADMIN. The
fleet thus sees the operator's digest (unsalted SHA-1 of user:password): the operator's
password must be long and random, as the playbook makes it.
The namespace root lets the fleet create (a repair recreates a folder) but not delete, so
a node cannot remove the config folder and recreate it under its own ACL.
"""

import json
from collections import deque
from dataclasses import dataclass

from kazoo.exceptions import NodeExistsError, NoNodeError
from kazoo.security import ACL, ANYONE_ID_UNSAFE, Id, Permissions

from .access import Credentials
from .coordination import prepare_namespace
from .layout import Layout
from .validation import InvalidValue
from .zk import Zk

NODE_PERMS = Permissions.READ | Permissions.WRITE | Permissions.CREATE | Permissions.DELETE


class InvalidMemberAcl(InvalidValue):
    """member-acl holds garbage: a node must create nothing rather than open znodes."""


@dataclass(frozen=True)
class AclMatrix:
    root: list[ACL]
    config: list[ACL]
    member: list[ACL]

    def for_path(self, layout: Layout, path: str) -> list[ACL]:
        if path == layout.namespace:
            return self.root
        if path in (layout.config, layout.member_acl, layout.switchover) \
                or path.startswith(layout.config + "/"):
            return self.config
        return self.member


def digest(credentials: Credentials, perms: int) -> ACL:
    return ACL(perms, Id("digest", credentials.digest_id))


def acl_matrix(operator: Credentials, fleet: Credentials) -> AclMatrix:
    if operator.digest_id == fleet.digest_id:
        raise ValueError("the operator and the fleet must be different identities")
    anyone_reads = ACL(Permissions.READ, ANYONE_ID_UNSAFE)
    return AclMatrix(
        root=[digest(operator, Permissions.ALL),
              digest(fleet, Permissions.READ | Permissions.CREATE), anyone_reads],
        config=[digest(operator, Permissions.ALL), digest(fleet, Permissions.READ)],
        member=[digest(operator, Permissions.ALL), digest(fleet, NODE_PERMS), anyone_reads],
    )


@dataclass
class AclReport:
    znodes: int = 0
    changed: int = 0


def same_acl(left: list[ACL], right: list[ACL]) -> bool:
    return {(acl.perms, acl.id.scheme, acl.id.id) for acl in left} == \
        {(acl.perms, acl.id.scheme, acl.id.id) for acl in right}


def apply_acls(zk: Zk, layout: Layout, matrix: AclMatrix) -> AclReport:
    """Create the namespace if needed, then set the matrix on every znode of it, parents
    first (the operator's own entry then covers listing their children). Idempotent: a
    znode whose ACL is already right is not written. Znodes that vanish during the walk
    (a candidate's session ending, a round delivered) are skipped."""
    prepare_namespace(zk, layout)
    publish_member_acl(zk, layout, matrix.member)
    report = AclReport()
    if create_switchover(zk, layout, matrix.config):
        report.changed += 1
    pending = deque([layout.namespace])
    while pending:
        path = pending.popleft()
        wanted = matrix.for_path(layout, path)
        try:
            current, _ = zk.get_acls(path)
            if not same_acl(current, wanted):
                zk.set_acls(path, wanted)
                report.changed += 1
            children = zk.children(path)
        except NoNodeError:
            continue
        report.znodes += 1
        pending.extend(f"{path}/{child}" for child in children)
    return report


def create_switchover(zk: Zk, layout: Layout, acls: list[ACL]) -> bool:
    """The switchover request's znode, empty, under the operator's ACL: were it missing,
    the fleet (which may create in the namespace root) could create it and request
    switchovers itself. True if it was created."""
    if zk.exists(layout.switchover) is not None:
        return False
    try:
        zk.create(layout.switchover, b"", acl=acls)
    except NodeExistsError:
        return False
    return True


def encode_acl(acls: list[ACL]) -> bytes:
    return json.dumps([[acl.perms, acl.id.scheme, acl.id.id] for acl in acls]).encode()


def decode_acl(data: bytes) -> list[ACL]:
    """InvalidMemberAcl for anything but a non-empty list of [perms, scheme, id]."""
    try:
        items = json.loads(data)
    except ValueError as error:
        raise InvalidMemberAcl(f"member ACL is not JSON: {error}") from None
    if not isinstance(items, list) or not items or not all(map(is_acl_entry, items)):
        raise InvalidMemberAcl("member ACL is not a non-empty list of [perms 1..31, scheme, id]")
    return [ACL(perms, Id(scheme, ident)) for perms, scheme, ident in items]


def is_acl_entry(item: object) -> bool:
    if not isinstance(item, list) or len(item) != 3:
        return False
    perms, scheme, ident = item
    return (type(perms) is int and 0 < perms <= Permissions.ALL
            and isinstance(scheme, str) and bool(scheme) and isinstance(ident, str))


def publish_member_acl(zk: Zk, layout: Layout, acls: list[ACL]) -> None:
    data = encode_acl(acls)
    try:
        current, _ = zk.get(layout.member_acl)
    except NoNodeError:
        zk.create(layout.member_acl, data)
        return
    if current != data:
        zk.set(layout.member_acl, data)


def creation_acl(zk: Zk, layout: Layout) -> list[ACL] | None:
    """The ACL for the znodes a node creates, as `acl apply` published it; None
    (ZooKeeper's open default) for a fleet without ACLs. InvalidMemberAcl for garbage: the
    node then creates nothing rather than open znodes."""
    try:
        data, _ = zk.get(layout.member_acl)
    except NoNodeError:
        return None
    return decode_acl(data)

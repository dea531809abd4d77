"""Who may do what in a fleet's namespace: ZooKeeper digest ACLs.

Three kinds of identity (docs/explanation/trust.md):
- the operator may do everything, ACLs included;
- the members: either one identity all nodes share (`--fleet-auth-file`), or one per node,
  `node-<id>` (`--members-file`). Members read the config and do everything a node does
  (readings, election, barrier, epoch, outbox), but may not change the config, the member
  list, request a switchover or change any ACL. With per-node identities a node's own
  reading, candidate and counter shard are writable by that node only, and no member may
  delete a reading (ZooKeeper checks DELETE on the parent, so a member with DELETE on
  `readings` could delete another node's reading and recreate it as its own);
- anyone else may read what `zk-sensorctl status` shows, except the config, and write
  nothing.

ZooKeeper ACLs are per znode and not inherited, so `zk-sensorctl acl apply` walks the
whole namespace (repair.py), and a node gives what it creates the ACL derived from the
znode `member-acl`, which it reads at registration. It cannot copy a folder's ACL instead:
ZooKeeper 3.6+ masks the digests of an ACL to clients without ADMIN, and members must not
have ADMIN. Members thus see the operator's digest (unsalted SHA-1 of user:password): the
operator's password must be long and random, as the playbook makes it.
"""

from dataclasses import dataclass

from zk_sensor.fleet.election import node_of
from zk_sensor.fleet.layout import Layout
from zk_sensor.fleet.payloads import Garbage, MemberAcl
from zk_sensor.fleet.validation import InvalidValue
from zk_sensor.zk.access import Credentials
from zk_sensor.zk.errors import NoNodeError
from zk_sensor.zk.interface import ACL, ANYONE_ID_UNSAFE, Id, Permissions, Zk

NODE_PERMS = Permissions.READ | Permissions.WRITE | Permissions.CREATE | Permissions.DELETE
OWN_PERMS = Permissions.READ | Permissions.WRITE
NODE_USER_PREFIX = "node-"
ANYONE_READS = ACL(Permissions.READ, ANYONE_ID_UNSAFE)


class InvalidMemberAcl(InvalidValue):
    """member-acl holds garbage: a node must create nothing rather than open znodes."""


def node_user(node_id: str) -> str:
    return f"{NODE_USER_PREFIX}{node_id}"


def user_of(digest_id: str) -> str:
    return digest_id.partition(":")[0]


def digest_acl(digest_id: str, perms: int) -> ACL:
    return ACL(perms, Id("digest", digest_id))


@dataclass(frozen=True)
class AclMatrix:
    """The ACL every znode of the namespace should have. `per_node`: members are the
    nodes' own identities (`node-<id>`), each owning its reading, candidates and shard;
    otherwise one shared identity owns them all, as before per-node identities."""

    operator: str
    members: tuple[str, ...]
    per_node: bool = False

    def __post_init__(self) -> None:
        if not self.members:
            raise ValueError("the fleet needs at least one member identity")
        if user_of(self.operator) in {user_of(member) for member in self.members}:
            raise ValueError("the operator and the members must be different identities")

    def acl(self, member_perms: int, owners: tuple[str, ...] = (),
            anyone: bool = True) -> list[ACL]:
        """Operator ALL, the members (or `owners` with OWN_PERMS), and anyone READ."""
        acls = [digest_acl(self.operator, Permissions.ALL)]
        if member_perms:
            acls += [digest_acl(member, member_perms) for member in self.members]
        acls += [digest_acl(owner, OWN_PERMS) for owner in owners]
        return [*acls, ANYONE_READS] if anyone else acls

    @property
    def member(self) -> list[ACL]:
        """What `member-acl` holds: the ACL of shared znodes a node creates (outbox rounds,
        a repaired folder), from which a node also derives the ACL of its own."""
        return self.acl(NODE_PERMS)

    @property
    def config(self) -> list[ACL]:
        return self.acl(Permissions.READ, anyone=False)

    def owner_of(self, node_id: str | None) -> tuple[str, ...]:
        if node_id is None:
            return ()
        if not self.per_node:
            return self.members
        return tuple(member for member in self.members if user_of(member) == node_user(node_id))

    def for_path(self, layout: Layout, path: str) -> list[ACL]:
        if path == layout.namespace:
            return self.acl(Permissions.READ | Permissions.CREATE)
        if path in layout.operator_znodes() or path.startswith(layout.config + "/"):
            return self.config
        parent, _, name = path.rpartition("/")
        if parent == layout.election:
            return self.acl(0, self.owner_of(node_of(name)))
        if parent in (layout.readings, layout.counter):
            return self.acl(0, self.owner_of(name))
        if not self.per_node:
            return self.member
        return self.per_node_shared(layout, path)

    def per_node_shared(self, layout: Layout, path: str) -> list[ACL]:
        """Folders give members no more than they need; leaves no CREATE, so no member
        can hang a znode under them; znodes the fleet never makes are the operator's."""
        if path == layout.readings:
            return self.acl(Permissions.READ | Permissions.CREATE)
        if path == layout.counter:
            return self.acl(Permissions.READ)
        if path in (layout.barrier, layout.epoch, layout.incarnation):
            return self.acl(OWN_PERMS)
        if path in (layout.election, layout.outbox) or path.startswith(layout.outbox + "/"):
            return self.member
        return self.acl(0)


def acl_matrix(operator: Credentials, fleet: Credentials) -> AclMatrix:
    """The matrix of a fleet sharing one identity (`--fleet-auth-file`)."""
    return AclMatrix(operator.digest_id, (fleet.digest_id,))


def members_matrix(operator: str, members: list[str]) -> AclMatrix:
    """The matrix of a fleet with an identity per node (`--members-file`)."""
    return AclMatrix(operator, tuple(members), per_node=True)


def same_acl(left: list[ACL], right: list[ACL]) -> bool:
    return {(acl.perms, acl.id.scheme, acl.id.id) for acl in left} == \
        {(acl.perms, acl.id.scheme, acl.id.id) for acl in right}


def set_acl_if_needed(zk: Zk, path: str, wanted: list[ACL],
                      current: list[ACL] | None = None) -> bool:
    """Idempotent: writes only an ACL that differs (`current`, if already read); True if
    it wrote."""
    if current is None:
        current, _ = zk.get_acls(path)
    if same_acl(current, wanted):
        return False
    zk.set_acls(path, wanted)
    return True


def encode_acl(acls: list[ACL]) -> bytes:
    return MemberAcl(tuple(acls)).encode()


def decode_acl(data: bytes) -> list[ACL]:
    """Raises InvalidMemberAcl for anything but a non-empty list of [perms, scheme, id]:
    the member ACL is refused whole (`MemberAcl.decode` says why), and the node creates
    nothing rather than open znodes."""
    member = MemberAcl.decode(data)
    if isinstance(member, Garbage):
        raise InvalidMemberAcl(member.reason)
    return list(member.acls)


def matrix_of_member_acl(acls: list[ACL]) -> AclMatrix:
    """The per-node matrix a published member ACL stands for (`node revoke`): the
    operator is the entry with ADMIN, the members the other digests."""
    operators = [acl.id.id for acl in acls
                 if acl.id.scheme == "digest" and acl.perms & Permissions.ADMIN]
    members = [acl.id.id for acl in acls
               if acl.id.scheme == "digest" and not acl.perms & Permissions.ADMIN]
    if len(operators) != 1:
        raise InvalidMemberAcl("member ACL does not name exactly one operator")
    try:
        return members_matrix(operators[0], members)
    except ValueError as error:
        raise InvalidMemberAcl(f"member ACL: {error}") from None


@dataclass(frozen=True)
class CreationAcls:
    """What a node gives the znodes it creates: `shared` for the fleet's (kazoo's default
    ACL), `own` for its reading and candidates. None: ZooKeeper's open default, for a
    fleet without ACLs."""

    shared: list[ACL] | None = None
    own: list[ACL] | None = None


def own_acl(member: list[ACL], own_digest: str) -> list[ACL]:
    """The operator's entries, this node READ|WRITE, anyone READ if the fleet has it:
    exactly what `acl apply` sets on a node's own znodes."""
    kept = [acl for acl in member
            if acl.perms & Permissions.ADMIN or acl == ANYONE_READS]
    return [*kept, digest_acl(own_digest, OWN_PERMS)]


def creation_acls(zk: Zk, layout: Layout, credentials: Credentials | None) -> CreationAcls:
    """From `member-acl` as `acl apply` published it. InvalidMemberAcl for garbage: the
    node then creates nothing rather than open znodes."""
    try:
        data, _ = zk.get(layout.member_acl)
    except NoNodeError:
        return CreationAcls()
    member = decode_acl(data)
    if credentials is None:
        return CreationAcls(member, member)
    return CreationAcls(member, own_acl(member, credentials.digest_id))

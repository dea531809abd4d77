"""The operator's znodes' payloads, which members may read but not write: a switchover
request (`switchover`), the revoked member list (`revoked`) and the member ACL
(`member-acl`). What they are for: switchover.py, members.py and acl.py.
"""

import json
from dataclasses import dataclass

from zk_sensor.codec import Undecodable, decode_json, json_object, text_field, whole_number
from zk_sensor.fleet.election import node_of
from zk_sensor.fleet.payloads.garbage import Garbage
from zk_sensor.zk.access import USER_PATTERN_FORBIDDEN
from zk_sensor.zk.interface import ACL, Id, Permissions


@dataclass(frozen=True)
class Request:
    """A switchover request: hand over from the leader of `epoch`, to node `to` (whose
    candidate znode is `candidate`), or to the next in line when both are None; `by` is
    who asked, for the nodes' log lines."""

    epoch: int
    to: str | None
    candidate: str | None
    by: str = ""

    def encode(self) -> bytes:
        return json.dumps({"epoch": self.epoch, "to": self.to,
                           "candidate": self.candidate, "by": self.by}).encode()

    @classmethod
    def decode(cls, data: bytes | None) -> "Request | Garbage | None":
        """None for no request (the znode is empty between requests)."""
        if not data or not data.strip():
            return None
        try:
            payload = json_object(data)
            epoch = whole_number(payload.get("epoch"), "epoch")
            by = text_field(payload.get("by", ""), "by")
        except Undecodable as error:
            return Garbage(str(error))
        to, candidate = payload.get("to"), payload.get("candidate")
        if to is None and candidate is None:
            return cls(epoch, None, None, by)
        if not isinstance(to, str) or not isinstance(candidate, str) \
                or node_of(candidate) != to:
            return Garbage("to and candidate do not name one node's candidate")
        return cls(epoch, to, candidate, by)


@dataclass(frozen=True)
class Revoked:
    """The revoked list: the member user names `node revoke` cut off, so a later `acl
    apply` with a stale members file does not admit them again."""

    users: tuple[str, ...] = ()

    def encode(self) -> bytes:
        return json.dumps(sorted(set(self.users))).encode()

    @classmethod
    def decode(cls, data: bytes | None) -> "Revoked | Garbage":
        """An empty znode is an empty list; anything but a list of user names is Garbage."""
        try:
            users = decode_json(data) if data else []
        except Undecodable as error:
            return Garbage(f"revoked list is not JSON: {error}")
        if not isinstance(users, list) or not all(
                isinstance(user, str) and user and not USER_PATTERN_FORBIDDEN & set(user)
                for user in users):
            return Garbage("revoked list is not a list of user names")
        return cls(tuple(users))


@dataclass(frozen=True)
class MemberAcl:
    """The member ACL `acl apply` publishes: what a node gives the znodes it creates, and
    (without ADMIN, ZooKeeper masks digests) the only way a node learns it."""

    acls: tuple[ACL, ...]

    def encode(self) -> bytes:
        return json.dumps([[acl.perms, acl.id.scheme, acl.id.id] for acl in self.acls]).encode()

    @classmethod
    def decode(cls, data: bytes | None) -> "MemberAcl | Garbage":
        """Anything but a non-empty list of [perms, scheme, id] is Garbage."""
        try:
            items = decode_json(data)
        except Undecodable as error:
            return Garbage(f"member ACL is not JSON: {error}")
        if not isinstance(items, list) or not items or not all(map(is_acl_entry, items)):
            return Garbage("member ACL is not a non-empty list of [perms 1..31, scheme, id]")
        return cls(tuple(ACL(perms, Id(scheme, ident)) for perms, scheme, ident in items))


def is_acl_entry(item: object) -> bool:
    if not isinstance(item, list) or len(item) != 3:
        return False
    perms, scheme, ident = item
    return (type(perms) is int and 0 < perms <= Permissions.ALL
            and isinstance(scheme, str) and bool(scheme) and isinstance(ident, str))

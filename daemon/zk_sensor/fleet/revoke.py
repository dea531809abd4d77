"""`zk-sensorctl node revoke ID` and `node readmit ID`: cut one stolen node off at once.

Revoking removes `node-<ID>`'s digest from the member ACL and from every ACL of the
namespace (the walk of `acl apply`, repair.py), and records the user in `<ns>/revoked`,
so a later `acl apply` with a stale members file does not admit it again. Then its
candidates are deleted: the fleet elects without it at once, and the node, whose
digest no ZooKeeper ACL names any more, is refused on its next write and exits 2.

Its persistent reading stays, readable and writable by the operator only: it carries the
node's count, which the fleet's counter sums, and deleting it would make the counter go
back. A reading of an earlier release (ephemeral, bound to the node's session) is
deleted with the candidates.
"""

import contextlib
from dataclasses import dataclass, field

from zk_sensor.fleet.acl import (
    NODE_USER_PREFIX,
    AclMatrix,
    InvalidMemberAcl,
    decode_acl,
    matrix_of_member_acl,
    members_matrix,
    node_user,
    user_of,
)
from zk_sensor.fleet.election import is_candidate_of
from zk_sensor.fleet.layout import Layout
from zk_sensor.fleet.members import encode_revoked, read_revoked
from zk_sensor.fleet.repair import AclReport, apply_acls, put_operator_znode
from zk_sensor.zk.errors import NoNodeError
from zk_sensor.zk.interface import Zk


@dataclass
class Outcome:
    """What `node revoke` did: one line per change, and the walk's report when it set the
    namespace's ACLs (None when it only recorded the revocation)."""

    lines: list[str] = field(default_factory=list)
    report: AclReport | None = None


def revoke_node(zk: Zk, layout: Layout, node_id: str) -> Outcome:
    """InvalidMemberAcl when the member ACL is garbage or would be left empty."""
    user = node_user(node_id)
    outcome = Outcome()
    try:
        data, _ = zk.get(layout.member_acl)
    except NoNodeError:
        outcome.lines.append(f"{user} is already not a member: no member ACL yet "
                             "(`acl apply` writes it)")
        return outcome
    matrix = matrix_of_member_acl(decode_acl(data))
    revoked = read_revoked(zk, layout)
    if not any(user_of(member).startswith(NODE_USER_PREFIX) for member in matrix.members):
        return record_only(zk, layout, matrix, revoked, user)
    kept = [member for member in matrix.members if user_of(member) != user]
    if not kept:
        raise InvalidMemberAcl(f"{user} is the fleet's last member: nothing would be left")
    if user not in revoked:
        revoked.append(user)
        outcome.lines.append(f"{user} recorded in {layout.revoked}")
    if len(kept) < len(matrix.members):
        outcome.lines.append(f"{user} removed from the member ACL and every ACL of "
                             f"{layout.namespace}")
    outcome.report = apply_acls(zk, layout, members_matrix(matrix.operator, kept), revoked)
    outcome.lines += outcome.report.lines
    outcome.lines += remove_presence(zk, layout, node_id)
    if not outcome.lines and not outcome.report.changed:
        outcome.lines.append(f"{user} is already revoked: nothing changed")
    return outcome


def record_only(zk: Zk, layout: Layout, matrix: AclMatrix, revoked: list[str],
                user: str) -> Outcome:
    """A fleet still sharing one identity: no ACL names the node alone, so the revocation
    is only recorded, for the `acl apply --members-file` that gives nodes their own."""
    if user in revoked:
        return Outcome([f"{user} is already revoked: nothing changed"])
    report = AclReport()
    put_operator_znode(zk, layout.revoked, encode_revoked([*revoked, user]), matrix.config,
                       report)
    return Outcome([f"{user} recorded in {layout.revoked} (the fleet still shares one "
                    "identity: `acl apply --members-file` leaves it out)"], report)


def remove_presence(zk: Zk, layout: Layout, node_id: str) -> list[str]:
    """Delete the node's candidates and an ephemeral reading; one line each."""
    paths = [f"{layout.election}/{name}" for name in zk.children(layout.election)
             if is_candidate_of(name, node_id)]
    reading = zk.exists(layout.reading(node_id))
    if reading is not None and reading.ephemeralOwner:
        paths.append(layout.reading(node_id))
    lines = []
    for path in paths:
        with contextlib.suppress(NoNodeError):
            zk.delete(path)
            lines.append(f"deleted {path}")
    return lines


def readmit_node(zk: Zk, layout: Layout, node_id: str) -> str:
    user = node_user(node_id)
    revoked = read_revoked(zk, layout)
    if user not in revoked:
        return f"{user} is not revoked: nothing changed"
    zk.set(layout.revoked, encode_revoked([name for name in revoked if name != user]))
    return (f"{user} readmitted: `acl apply --members-file` with its digest gives it its "
            "ACLs again")

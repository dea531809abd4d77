"""`acl apply`: set the matrix (acl.py) on every znode of the namespace, and repair what a
member made hostile.

A member chooses the ACL of every znode it creates, so it can create one that excludes
the operator: its ACL and children can then be neither read nor set (NoAuth). Such a znode
never stops the walk. A leaf is deleted (ZooKeeper checks DELETE on the parent, which the
operator holds everywhere); a znode with children cannot be deleted without reading them,
so it is reported for the break-glass identity (ZooKeeper's superDigest), which passes
every ACL check. The exit status tells the two apart (ctl.py).

The namespace root is the exception: a refusal there means this is not the operator (or
the root is beyond repair without super), and nothing at all is touched.
"""

from collections import deque
from dataclasses import dataclass, field

from zk_sensor.fleet.acl import AclMatrix, encode_acl, set_acl_if_needed
from zk_sensor.fleet.coordination import prepare_namespace
from zk_sensor.fleet.layout import Layout
from zk_sensor.fleet.members import encode_revoked
from zk_sensor.zk.errors import AccessRefused, NodeExistsError, NoNodeError, NotEmptyError
from zk_sensor.zk.interface import ACL, Zk

BREAK_GLASS_HINT = "run acl apply with the break-glass identity (super)"


@dataclass
class AclReport:
    """What `acl apply` did: znodes walked and changed, hostile ones left for the
    break-glass identity (which decide the exit status), and one line per change."""

    znodes: int = 0
    changed: int = 0
    unrepaired: int = 0
    lines: list[str] = field(default_factory=list)

    def remove_hostile(self, zk: Zk, path: str) -> bool:
        """Delete a znode the operator may not read or change; False if it has children
        (or its parent is hostile too), which only the break-glass identity can fix."""
        try:
            zk.delete(path)
        except NoNodeError:
            return True
        except (AccessRefused, NotEmptyError):
            self.lines.append(f"cannot repair {path}: {BREAK_GLASS_HINT}")
            self.unrepaired += 1
            return False
        self.lines.append(f"removed hostile znode {path}")
        self.changed += 1
        return True


def write_operator_znode(zk: Zk, path: str, data: bytes | None, acls: list[ACL]) -> bool:
    """Create it (empty if `data` is None) or bring its data to `data`; True if written."""
    try:
        current, _ = zk.get(path)
    except NoNodeError:
        try:
            zk.create(path, data or b"", acl=acls)
        except NodeExistsError:
            return False
        return True
    if data is None or current == data:
        return False
    zk.set(path, data)
    return True


def put_operator_znode(zk: Zk, path: str, data: bytes | None, acls: list[ACL],
                       report: AclReport) -> None:
    """An operator's znode that a member squatted (created before `acl apply` did, under
    an ACL of its own) is removed and created again."""
    try:
        written = write_operator_znode(zk, path, data, acls)
    except AccessRefused:
        if not report.remove_hostile(zk, path):
            return
        written = write_operator_znode(zk, path, data, acls)
    report.changed += written


def check_admin(zk: Zk, layout: Layout) -> None:
    """AccessRefused unless this identity may change the namespace root's ACL: written
    back as it is, a no-op for the operator (or super). Nothing is touched before it, so a
    member running `acl apply` can neither write nor delete anything."""
    current, _ = zk.get_acls(layout.namespace)
    zk.set_acls(layout.namespace, current)


def apply_acls(zk: Zk, layout: Layout, matrix: AclMatrix,
               revoked: list[str] | None = None) -> AclReport:
    """Create the namespace if needed, publish the member ACL and the revoked list, then
    set the matrix on every znode. Idempotent: a znode whose ACL is already right is not
    written. Znodes that vanish during the walk are skipped."""
    if zk.exists(layout.namespace) is None:
        zk.ensure_path(layout.namespace)
    check_admin(zk, layout)
    prepare_namespace(zk, layout)
    report = AclReport()
    put_operator_znode(zk, layout.member_acl, encode_acl(matrix.member), matrix.config, report)
    put_operator_znode(zk, layout.revoked, encode_revoked(revoked or []), matrix.config,
                       report)
    put_operator_znode(zk, layout.switchover, None, matrix.config, report)
    for path, current in reversed(list_namespace(zk, layout, report)):
        try:
            report.changed += set_acl_if_needed(zk, path, matrix.for_path(layout, path),
                                                current)
        except NoNodeError:
            continue
        except AccessRefused:
            report.remove_hostile(zk, path)
    return report


def list_namespace(zk: Zk, layout: Layout, report: AclReport) -> list[tuple[str, list[ACL]]]:
    """Every znode with its ACL, parents first, all read before any ACL is set: an
    operator rotating its own identity (`--operator-auth-file`) loses the right to list a
    folder once its ACL names the new identity. The ACLs are then set children first. A
    znode the operator may not read is hostile (AclReport.remove_hostile)."""
    found = []
    pending = deque([layout.namespace])
    while pending:
        path = pending.popleft()
        try:
            current, _ = zk.get_acls(path)
            children = zk.children(path)
        except NoNodeError:
            continue
        except AccessRefused:
            report.remove_hostile(zk, path)
            continue
        found.append((path, current))
        pending.extend(f"{path}/{child}" for child in children)
    report.znodes = len(found)
    return found

"""zk-sensorctl's commands over identities: `acl apply`, `acl digest`, `node revoke`,
`node readmit`.

Exit status as ctl's others (0 done, 1 ZooKeeper unreachable or failing, 2 invalid or
refused, nothing written), plus 3 for `acl apply` and `node revoke`: everything was
applied but a znode only the break-glass identity (ZooKeeper's superDigest) can repair.
"""

import argparse
import sys

from zk_sensor.config.sources import SettingsError
from zk_sensor.fleet.acl import AclMatrix, acl_matrix, members_matrix, user_of
from zk_sensor.fleet.layout import Layout
from zk_sensor.fleet.members import read_members_file, read_revoked
from zk_sensor.fleet.quota import DEFAULT_MAX_BYTES, DEFAULT_MAX_ZNODES, Quota, lock_root, set_quota
from zk_sensor.fleet.repair import AclReport, apply_acls
from zk_sensor.fleet.revoke import readmit_node, revoke_node
from zk_sensor.fleet.validation import InvalidValue
from zk_sensor.zk.access import USER_PATTERN_FORBIDDEN, ZkAccess, read_credentials
from zk_sensor.zk.errors import AccessRefused
from zk_sensor.zk.interface import Zk

NEEDS_BREAK_GLASS = 3


def positive_int(text: str) -> int:
    """An argparse type."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a positive whole number: {text!r}")
    return int(text)


def node_id(text: str) -> str:
    if not text or (USER_PATTERN_FORBIDDEN | {"/"}) & set(text):
        raise argparse.ArgumentTypeError(f"not a node id: {text!r}")
    return text


def prepare_acl_apply(args: argparse.Namespace, access: ZkAccess) -> None:
    """Every file is read and checked before connecting: nothing is written with a matrix
    that could lock the operator out."""
    if access.credentials is None:
        raise SettingsError("acl apply needs the operator's credentials: --zk-auth-file")
    if args.operator_auth_file:
        operator = read_credentials(args.operator_auth_file, "--operator-auth-file")
    elif access.credentials.user == "super":
        raise SettingsError("connected as super: name the operator with --operator-auth-file")
    else:
        operator = access.credentials
    args.operator = operator
    try:
        if args.fleet_auth_file:
            fleet = read_credentials(args.fleet_auth_file, "--fleet-auth-file")
            args.matrix = acl_matrix(operator, fleet)
            args.members = None
        else:
            args.members = read_members_file(args.members_file)
            members_matrix(operator.digest_id, args.members)
    except ValueError as error:
        raise SettingsError(str(error)) from None
    wants_quota = args.max_znodes is not None or args.max_bytes is not None
    args.quota = Quota(args.max_znodes or DEFAULT_MAX_ZNODES,
                       args.max_bytes or DEFAULT_MAX_BYTES) if wants_quota else None


def admitted_matrix(args: argparse.Namespace, revoked: list[str]) -> AclMatrix:
    """The members file less the revoked users, each skip said on its own line."""
    admitted = []
    for member in args.members:
        if user_of(member) in revoked:
            print(f"skipped revoked member {user_of(member)} (`node readmit` to undo)")
        else:
            admitted.append(member)
    if not admitted:
        raise InvalidValue("every member of --members-file is revoked")
    return members_matrix(args.operator.digest_id, admitted)


def readable_revoked(zk: Zk, layout: Layout) -> list[str]:
    """A revoked list the operator may not read was never the operator's (a member
    squatted the name): `acl apply` replaces it, so it counts as empty."""
    try:
        return read_revoked(zk, layout)
    except AccessRefused:
        return []


def summary(layout: Layout, report: AclReport, who: str) -> str:
    return (f"ACLs of {layout.namespace}: {report.znodes} znodes checked, {report.changed} "
            f"changed ({who})")


def cmd_acl_apply(zk: Zk, layout: Layout, args: argparse.Namespace) -> int:
    try:
        revoked = readable_revoked(zk, layout)
        matrix = args.matrix if args.members is None else admitted_matrix(args, revoked)
    except InvalidValue as error:
        print(f"zk-sensorctl: refused: {error}", file=sys.stderr)
        return 2
    report = apply_acls(zk, layout, matrix, revoked)
    around = lock_root(zk, matrix.operator) if args.lock_root else []
    if args.quota is not None:
        around += set_quota(zk, layout, args.quota, matrix.operator)
    for line in report.lines + around:
        print(line)
    report.changed += len(around)
    who = (f"fleet {user_of(matrix.members[0])!r}" if args.members is None
           else f"{len(matrix.members)} members")
    print(summary(layout, report, f"operator {args.operator.user!r}, {who}"))
    return NEEDS_BREAK_GLASS if report.unrepaired else 0


def cmd_acl_digest(args: argparse.Namespace) -> int:
    """No connection: the members-file line for a credentials file."""
    print(read_credentials(args.auth_file, "--auth-file").digest_id)
    return 0


def cmd_node_revoke(zk: Zk, layout: Layout, args: argparse.Namespace) -> int:
    try:
        outcome = revoke_node(zk, layout, args.node_id)
    except InvalidValue as error:
        print(f"zk-sensorctl: refused: {error}", file=sys.stderr)
        return 2
    for line in outcome.lines:
        print(line)
    report = outcome.report
    if report is None:
        return 0
    if report.changed:
        print(summary(layout, report, f"node-{args.node_id} revoked"))
    return NEEDS_BREAK_GLASS if report.unrepaired else 0


def cmd_node_readmit(zk: Zk, layout: Layout, args: argparse.Namespace) -> int:
    try:
        print(readmit_node(zk, layout, args.node_id))
    except InvalidValue as error:
        print(f"zk-sensorctl: refused: {error}", file=sys.stderr)
        return 2
    return 0


def add_acl_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    acl = commands.add_parser("acl", help="ZooKeeper ACLs of the fleet's namespace")
    acl_commands = acl.add_subparsers(dest="acl_command", required=True)
    apply = acl_commands.add_parser(
        "apply", help="create the namespace if needed and set the operator/members/anyone "
        "ACLs on every znode of it, repairing hostile ones (idempotent; exit 3: a znode "
        "needs the break-glass identity)")
    members = apply.add_mutually_exclusive_group(required=True)
    members.add_argument("--fleet-auth-file", dest="fleet_auth_file",
                         help="one identity all nodes share: its credentials file")
    members.add_argument("--members-file", dest="members_file",
                         help="one identity per node: a file of USER:BASE64DIGEST lines")
    apply.add_argument("--operator-auth-file", dest="operator_auth_file",
                       help="the identity the ACLs name as operator (default: the "
                       "connecting one); with super, or to rotate the operator's password")
    apply.add_argument("--lock-root", action="store_true",
                       help="give ZooKeeper's / and /zookeeper to the operator, anyone reads")
    apply.add_argument("--max-znodes", type=positive_int,
                       help=f"quota: znodes in the namespace (default {DEFAULT_MAX_ZNODES} "
                       "when a quota is set)")
    apply.add_argument("--max-bytes", type=positive_int,
                       help=f"quota: bytes of data in the namespace (default "
                       f"{DEFAULT_MAX_BYTES} when a quota is set)")
    apply.set_defaults(handler=cmd_acl_apply, prepare=prepare_acl_apply)
    digest = acl_commands.add_parser(
        "digest", help="print the members-file line (USER:BASE64DIGEST) of a credentials file")
    digest.add_argument("--auth-file", dest="auth_file", required=True)
    digest.set_defaults(handler=cmd_acl_digest, offline=True)
    node = commands.add_parser("node", help="revoke or readmit one node's identity")
    node_commands = node.add_subparsers(dest="node_command", required=True)
    revoke = node_commands.add_parser(
        "revoke", help="remove node-ID from every ACL, record it as revoked, delete its "
        "candidates (needs the operator's --zk-auth-file)")
    revoke.add_argument("node_id", type=node_id, metavar="ID")
    revoke.set_defaults(handler=cmd_node_revoke)
    readmit = node_commands.add_parser(
        "readmit", help="undo a revocation; the next acl apply --members-file admits it")
    readmit.add_argument("node_id", type=node_id, metavar="ID")
    readmit.set_defaults(handler=cmd_node_readmit)

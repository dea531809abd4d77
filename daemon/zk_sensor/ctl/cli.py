"""zk-sensorctl: the operator's view of the fleet and its config, from ZooKeeper alone,
and the operator's levers: the config, the ACLs, a switchover.

Exit status: 0 done, 1 ZooKeeper unreachable or failing (or a switchover not done in
time), 2 invalid usage or value (refused before anything is written) or refused by
ZooKeeper's ACLs, 3 `acl apply` or `node revoke` done but for a znode that needs the
break-glass identity (acl_commands.py). `check` follows the Nagios plugin convention
instead (check.py).

Where to connect and as whom are the node's own settings, layered as the node layers
them: its TOML file (`-c /etc/zk-sensor/zk-sensor.toml`), then ZK_SENSOR_* variables,
then the command line, so an operator on a node types no host list and no credentials.
"""

import argparse
import json
import os
import sys
import time

from zk_sensor.config.sources import SettingsError, layered
from zk_sensor.ctl.acl_commands import add_acl_commands
from zk_sensor.ctl.check import UNKNOWN, add_arguments, cmd_check
from zk_sensor.ctl.status import format_status, watch_status
from zk_sensor.fleet.layout import CONFIG_KEYS, Layout
from zk_sensor.fleet.status import fleet_status, read_config
from zk_sensor.fleet.switchover import cmd_switchover
from zk_sensor.fleet.validation import CONFIG_PARSERS, InvalidValue, format_config_value
from zk_sensor.node.settings import TABLE, Settings
from zk_sensor.zk.access import zk_access
from zk_sensor.zk.client import KazooZk, new_client
from zk_sensor.zk.errors import ZK_ERRORS, AccessRefused
from zk_sensor.zk.interface import Zk

CONNECT_TIMEOUT = 10.0
CALL_DEADLINE = 5.0
# The node's settings that say where to connect and as whom: flags of zk-sensorctl too.
CONNECTION_SETTINGS = ("zookeeper", "namespace", "zk_auth_file", "zk_ca_file",
                       "zk_cert_file", "zk_key_file")
# And what `check` compares the fleet with; the node's other settings are left unread.
NODE_SETTINGS = (*CONNECTION_SETTINGS, "sampling_period", "outbox_limit")


def cmd_status(zk: Zk, layout: Layout, args: argparse.Namespace) -> int:
    if args.watch:
        return watch_status(zk, layout, args.interval, args.json, sys.stdout)
    try:
        status = fleet_status(zk, layout, time.time())
    except LookupError as error:
        print(f"zk-sensorctl: {error}", file=sys.stderr)
        return 1
    print(format_status(status, args.json))
    return 0


def cmd_config_get(zk: Zk, layout: Layout, args: argparse.Namespace) -> int:
    config = read_config(zk, layout)
    keys = [args.key] if args.key else list(CONFIG_KEYS)
    if args.json:
        print(json.dumps({key: config[key] for key in keys}, indent=2))
        return 0
    for key in keys:
        entry = config[key]
        note = f"  ({entry['error']})" if entry["error"] else ""
        print(f"{key} = {entry['value'] if entry['value'] is not None else '-'}{note}")
    return 0


def validated_value(key: str, value: str) -> str:
    """The text to store, or InvalidValue: checked before any connection is made."""
    return format_config_value(CONFIG_PARSERS[key](value))


def cmd_config_set(zk: Zk, layout: Layout, args: argparse.Namespace) -> int:
    """A new key gets the config folder's ACL, as `acl apply` set it."""
    path = layout.config_key(args.key)
    zk.ensure_path(layout.config)
    data = args.text.encode()
    if zk.exists(path) is None:
        zk.create(path, data, acl=zk.get_acls(layout.config)[0])
    else:
        zk.set(path, data)
    print(f"{args.key} = {args.text}")
    return 0


def seconds(text: str) -> float:
    """An argparse type: a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"not a positive number of seconds: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zk-sensorctl", description="Status, config, switchover and health check of a "
        "zk-sensor fleet. Where to connect and as whom comes, as for a node, from the node's "
        "TOML file (--config), then ZK_SENSOR_<NAME> environment variables, then the flags."
    )
    parser.add_argument("-c", "--config", help="a node's TOML file (also ZK_SENSOR_CONFIG): "
                        "ZooKeeper hosts, namespace, credentials and TLS files are read from "
                        "it (default: none)")
    TABLE.add_arguments(parser, CONNECTION_SETTINGS)
    commands = parser.add_subparsers(dest="command", required=True)
    status = commands.add_parser("status", help="leader, devices, counter, config, last mean")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--watch", action="store_true",
                        help="refresh in place until Ctrl-C (which exits 0)")
    status.add_argument("--interval", type=seconds, default=2.0,
                        help="seconds between refreshes with --watch (default 2)")
    status.set_defaults(handler=cmd_status)
    switchover = commands.add_parser(
        "switchover", help="the leader hands over between two rounds, to --to ID or the next "
        "in line (exit 0 done, 1 not done in time, 2 refused)")
    switchover.add_argument("--to", metavar="ID", help="a live candidate other than the leader")
    switchover.add_argument("--wait", type=seconds, default=5.0,
                            help="seconds to wait for the new leader (default 5)")
    switchover.set_defaults(handler=cmd_switchover)
    check = commands.add_parser(
        "check", help="the fleet's health as a Nagios plugin: one line, exit 0 OK, 1 WARNING, "
        "2 CRITICAL, 3 UNKNOWN")
    add_arguments(check)
    check.add_argument("--timeout", type=seconds, default=4.0,
                       help="seconds for connecting, and again for the reads (default 4: "
                       "Nagios gives a plugin 10)")
    check.set_defaults(handler=cmd_check)
    config = commands.add_parser("config", help="read or change the fleet's live config")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    get = config_commands.add_parser("get", help="show config values")
    get.add_argument("key", nargs="?", choices=CONFIG_KEYS)
    get.add_argument("--json", action="store_true")
    get.set_defaults(handler=cmd_config_get)
    set_ = config_commands.add_parser("set", help="validate, then write a config value")
    set_.add_argument("key", choices=CONFIG_KEYS)
    set_.add_argument("value")
    set_.set_defaults(handler=cmd_config_set)
    add_acl_commands(commands)
    return parser


def node_settings(args: argparse.Namespace) -> Settings:
    """The node's NODE_SETTINGS, from its file (`-c` or ZK_SENSOR_CONFIG), ZK_SENSOR_*
    variables and the flags; a key the node does not know is refused, as the node would."""
    return layered(TABLE, TABLE.from_args(args), os.environ, args.config,
                   only=NODE_SETTINGS).settings


def connection_settings(node: Settings) -> dict[str, str]:
    return {name: str(getattr(node, name)) for name in CONNECTION_SETTINGS}


def failure(args: argparse.Namespace, status: int, message: str) -> int:
    """One line and the exit status; `check` answers as a Nagios plugin: on stdout, and
    UNKNOWN, since it could not tell how the fleet is."""
    if args.handler is cmd_check:
        print(f"UNKNOWN: {message}")
        return UNKNOWN
    print(f"zk-sensorctl: {message}", file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.node = node_settings(args)
        chosen = connection_settings(args.node)
        access = zk_access(chosen["zk_auth_file"], chosen["zk_ca_file"],
                           chosen["zk_cert_file"], chosen["zk_key_file"])
        args.access = access
        if args.handler is cmd_config_set:
            args.text = validated_value(args.key, args.value)
        if getattr(args, "prepare", None):
            args.prepare(args, access)
        if getattr(args, "offline", False):
            offline: int = args.handler(args)
            return offline
    except (InvalidValue, SettingsError) as error:
        return failure(args, 2, f"refused: {error}")
    hosts = chosen["zookeeper"]
    connect_timeout = getattr(args, "timeout", CONNECT_TIMEOUT)
    zk = KazooZk(new_client(hosts, CONNECT_TIMEOUT, access), CALL_DEADLINE)
    try:
        zk.start(connect_timeout)
    except ZK_ERRORS:
        return failure(args, 1, f"cannot reach ZooKeeper at {hosts} ({access.describe()})")
    try:
        status: int = args.handler(zk, Layout(chosen["namespace"]), args)
        return status
    except AccessRefused as error:
        return failure(args, 2, f"ZooKeeper refused this as {access.describe()} ({error}); "
                                "an operator's --zk-auth-file is needed")
    except ZK_ERRORS as error:
        return failure(args, 1, f"ZooKeeper error: {type(error).__name__} {error}".rstrip())
    finally:
        zk.close()


if __name__ == "__main__":
    sys.exit(main())

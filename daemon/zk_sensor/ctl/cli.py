"""zk-sensorctl: the operator's view of the fleet and its config, from ZooKeeper alone,
and the operator's levers: the config, the ACLs, a switchover.

Exit status: 0 done, 1 ZooKeeper unreachable or failing (or a switchover not done in
time), 2 invalid usage or value (refused before anything is written) or refused by
ZooKeeper's ACLs, 3 `acl apply` or `node revoke` done but for a znode that needs the
break-glass identity (acl_commands.py). `check` follows the Nagios plugin convention
instead (check.py).

Where to connect and as whom comes from the command line, then ZK_SENSOR_* variables,
then a node's TOML file (`-c /etc/zk-sensor/zk-sensor.toml`), so an operator on a node
types no host list and no credentials.
"""

import argparse
import json
import os
import sys
import time
import tomllib
from typing import Any

from kazoo.client import KazooClient

from zk_sensor.config.sources import SettingsError
from zk_sensor.ctl.acl_commands import add_acl_commands
from zk_sensor.ctl.check import UNKNOWN, add_arguments, cmd_check
from zk_sensor.fleet.layout import CONFIG_KEYS, Layout
from zk_sensor.fleet.status import fleet_status, format_status, read_config, watch_status
from zk_sensor.fleet.switchover import cmd_switchover
from zk_sensor.fleet.validation import CONFIG_PARSERS, InvalidValue, format_config_value
from zk_sensor.zk.access import add_access_arguments, zk_access
from zk_sensor.zk.client import ZK_ERRORS, AccessRefused, Zk

CONNECT_TIMEOUT = 10.0
CALL_DEADLINE = 5.0
# (setting, default): read from the command line, ZK_SENSOR_<SETTING>, the node's file.
CONNECTION_SETTINGS = {
    "zookeeper": "127.0.0.1:2181",
    "namespace": "/zk-sensor",
    "zk_auth_file": "",
    "zk_ca_file": "",
    "zk_cert_file": "",
    "zk_key_file": "",
}


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
        "zk-sensor fleet."
    )
    parser.add_argument("-c", "--config", help="a node's TOML file: ZooKeeper hosts, "
                        "namespace, credentials and TLS files are read from it")
    parser.add_argument("--zookeeper", help="connection string (default: "
                        "$ZK_SENSOR_ZOOKEEPER, the node's file, or 127.0.0.1:2181)")
    parser.add_argument("--namespace", help="root znode of the fleet (default /zk-sensor)")
    add_access_arguments(parser)
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


def node_file(args: argparse.Namespace) -> dict[str, Any]:
    """The node's TOML file (`-c` or ZK_SENSOR_CONFIG), or nothing."""
    config_file = args.config or os.environ.get("ZK_SENSOR_CONFIG")
    if not config_file:
        return {}
    try:
        with open(config_file, "rb") as handle:
            return tomllib.load(handle)
    except OSError as error:
        raise SettingsError(f"cannot read {config_file}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise SettingsError(f"{config_file} is not valid TOML: {error}") from None


def connection_settings(args: argparse.Namespace, from_file: dict[str, Any]) -> dict[str, str]:
    """Command line, then ZK_SENSOR_* variables, then the node's file, then defaults."""
    chosen = {}
    for name, default in CONNECTION_SETTINGS.items():
        value = getattr(args, name) or os.environ.get(f"ZK_SENSOR_{name.upper()}") \
            or from_file.get(name) or default
        chosen[name] = str(value)
    return chosen


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
        args.node_file = node_file(args)
        chosen = connection_settings(args, args.node_file)
        access = zk_access(chosen["zk_auth_file"], chosen["zk_ca_file"],
                           chosen["zk_cert_file"], chosen["zk_key_file"])
        args.access = access
        if args.handler is cmd_config_set:
            args.text = validated_value(args.key, args.value)
        if getattr(args, "prepare", None):
            args.prepare(args, access)
        if getattr(args, "offline", False):
            return args.handler(args)
    except (InvalidValue, SettingsError) as error:
        return failure(args, 2, f"refused: {error}")
    hosts = chosen["zookeeper"]
    connect_timeout = getattr(args, "timeout", CONNECT_TIMEOUT)
    client = KazooClient(hosts=hosts, timeout=CONNECT_TIMEOUT, **access.client_options())
    try:
        client.start(timeout=connect_timeout)
    except ZK_ERRORS:
        return failure(args, 1, f"cannot reach ZooKeeper at {hosts} ({access.describe()})")
    try:
        return args.handler(Zk(client, CALL_DEADLINE), Layout(chosen["namespace"]), args)
    except AccessRefused as error:
        return failure(args, 2, f"ZooKeeper refused this as {access.describe()} ({error}); "
                                "an operator's --zk-auth-file is needed")
    except ZK_ERRORS as error:
        return failure(args, 1, f"ZooKeeper error: {type(error).__name__} {error}".rstrip())
    finally:
        client.stop()
        client.close()


if __name__ == "__main__":
    sys.exit(main())

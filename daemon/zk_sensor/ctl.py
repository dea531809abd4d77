"""zk-sensorctl: the operator's view of the fleet and its config, from ZooKeeper alone.

Exit status: 0 done, 1 ZooKeeper unreachable or failing, 2 invalid usage or value
(refused before anything is written) or refused by ZooKeeper's ACLs.

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

from .access import ZkAccess, read_credentials, zk_access
from .acl import acl_matrix, apply_acls
from .layout import CONFIG_KEYS, Layout
from .sources import SettingsError
from .status import fleet_status, read_config, render_status
from .validation import CONFIG_PARSERS, InvalidValue, format_config_value
from .zk import ZK_ERRORS, AccessRefused, Zk

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
    try:
        status = fleet_status(zk, layout, time.time())
    except LookupError as error:
        print(f"zk-sensorctl: {error}", file=sys.stderr)
        return 1
    print(json.dumps(status, indent=2) if args.json else render_status(status))
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


def cmd_acl_apply(zk: Zk, layout: Layout, args: argparse.Namespace) -> int:
    report = apply_acls(zk, layout, args.matrix)
    print(f"ACLs of {layout.namespace}: {report.znodes} znodes checked, {report.changed} "
          f"changed (operator {args.operator!r}, fleet {args.fleet!r})")
    return 0


def prepare_acl_apply(args: argparse.Namespace, access: ZkAccess) -> None:
    """Both identities are read and checked before connecting: nothing is written with
    a matrix that could lock the operator out."""
    if access.credentials is None:
        raise SettingsError("acl apply needs the operator's credentials: --zk-auth-file")
    fleet = read_credentials(args.fleet_auth_file, "--fleet-auth-file")
    try:
        args.matrix = acl_matrix(access.credentials, fleet)
    except ValueError as error:
        raise SettingsError(str(error)) from None
    args.operator, args.fleet = access.credentials.user, fleet.user


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zk-sensorctl", description="Status and config of a zk-sensor fleet."
    )
    parser.add_argument("-c", "--config", help="a node's TOML file: ZooKeeper hosts, "
                        "namespace, credentials and TLS files are read from it")
    parser.add_argument("--zookeeper", help="connection string (default: "
                        "$ZK_SENSOR_ZOOKEEPER, the node's file, or 127.0.0.1:2181)")
    parser.add_argument("--namespace", help="root znode of the fleet (default /zk-sensor)")
    parser.add_argument("--zk-auth-file", dest="zk_auth_file",
                        help="file holding one line user:password (mode 0600)")
    parser.add_argument("--zk-ca-file", dest="zk_ca_file",
                        help="CA certificate (PEM): turns on TLS to ZooKeeper")
    parser.add_argument("--zk-cert-file", dest="zk_cert_file",
                        help="TLS client certificate (PEM)")
    parser.add_argument("--zk-key-file", dest="zk_key_file",
                        help="the key of --zk-cert-file (PEM, mode 0600)")
    commands = parser.add_subparsers(dest="command", required=True)
    status = commands.add_parser("status", help="leader, devices, counter, config, last mean")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=cmd_status)
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
    acl = commands.add_parser("acl", help="ZooKeeper ACLs of the fleet's namespace")
    acl_commands = acl.add_subparsers(dest="acl_command", required=True)
    apply = acl_commands.add_parser(
        "apply", help="create the namespace if needed and set the operator/fleet/anyone ACLs "
        "on every znode of it (idempotent; needs the operator's --zk-auth-file)")
    apply.add_argument("--fleet-auth-file", dest="fleet_auth_file", required=True,
                       help="the fleet identity's credentials file (user:password, 0600)")
    apply.set_defaults(handler=cmd_acl_apply)
    return parser


def connection_settings(args: argparse.Namespace) -> dict[str, str]:
    """Command line, then ZK_SENSOR_* variables, then the node's file, then defaults."""
    from_file: dict[str, Any] = {}
    config_file = args.config or os.environ.get("ZK_SENSOR_CONFIG")
    if config_file:
        try:
            with open(config_file, "rb") as handle:
                from_file = tomllib.load(handle)
        except OSError as error:
            raise SettingsError(f"cannot read {config_file}: {error.strerror}") from None
        except tomllib.TOMLDecodeError as error:
            raise SettingsError(f"{config_file} is not valid TOML: {error}") from None
    chosen = {}
    for name, default in CONNECTION_SETTINGS.items():
        value = getattr(args, name) or os.environ.get(f"ZK_SENSOR_{name.upper()}") \
            or from_file.get(name) or default
        chosen[name] = str(value)
    return chosen


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        chosen = connection_settings(args)
        access = zk_access(chosen["zk_auth_file"], chosen["zk_ca_file"],
                           chosen["zk_cert_file"], chosen["zk_key_file"])
        if args.handler is cmd_config_set:
            args.text = validated_value(args.key, args.value)
        if args.handler is cmd_acl_apply:
            prepare_acl_apply(args, access)
    except (InvalidValue, SettingsError) as error:
        print(f"zk-sensorctl: refused: {error}", file=sys.stderr)
        return 2
    hosts = chosen["zookeeper"]
    client = KazooClient(hosts=hosts, timeout=CONNECT_TIMEOUT, **access.client_options())
    try:
        client.start(timeout=CONNECT_TIMEOUT)
    except ZK_ERRORS:
        print(f"zk-sensorctl: cannot reach ZooKeeper at {hosts} ({access.describe()})",
              file=sys.stderr)
        return 1
    try:
        return args.handler(Zk(client, CALL_DEADLINE), Layout(chosen["namespace"]), args)
    except AccessRefused as error:
        print(f"zk-sensorctl: ZooKeeper refused this as {access.describe()} "
              f"({error}); an operator's --zk-auth-file is needed",
              file=sys.stderr)
        return 2
    except ZK_ERRORS as error:
        print(f"zk-sensorctl: ZooKeeper error: {type(error).__name__} {error}".rstrip(),
              file=sys.stderr)
        return 1
    finally:
        client.stop()
        client.close()


if __name__ == "__main__":
    sys.exit(main())

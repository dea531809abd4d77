"""zk-sensorctl: the operator's view of the fleet and its config, from ZooKeeper alone.

Exit status: 0 done, 1 ZooKeeper unreachable or failing, 2 invalid usage or value
(refused before anything is written).
"""

import argparse
import json
import os
import sys
import time
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError

from .barrier import decode_barrier
from .coordination import decode_epoch, decode_incarnation, epoch_holder
from .counter import fleet_total
from .election import current_leader, live_nodes
from .layout import CONFIG_KEYS, Layout
from .outbox import decode_stats
from .readings import collect_readings
from .validation import CONFIG_PARSERS, InvalidValue, format_config_value
from .zk import ZK_ERRORS, Zk

CONNECT_TIMEOUT = 10.0
CALL_DEADLINE = 5.0


def read_config(zk: Zk, layout: Layout) -> dict[str, dict[str, Any]]:
    config: dict[str, dict[str, Any]] = {}
    for key in CONFIG_KEYS:
        try:
            data, _ = zk.get(layout.config_key(key))
        except NoNodeError:
            config[key] = {"value": None, "error": "not set (nodes use their local default)"}
            continue
        text = data.decode(errors="replace")
        try:
            CONFIG_PARSERS[key](text)
            config[key] = {"value": text, "error": None}
        except InvalidValue as error:
            config[key] = {"value": text, "error": f"invalid, ignored by nodes: {error}"}
    return config


def fleet_status(zk: Zk, layout: Layout, now: float) -> dict[str, Any]:
    if zk.exists(layout.namespace) is None:
        raise LookupError(f"no fleet at namespace {layout.namespace}")
    collection = collect_readings(zk, layout)
    found = zk.get_many([layout.epoch, layout.barrier, layout.incarnation])
    epoch, barrier_found = found[layout.epoch], found[layout.barrier]
    barrier = decode_barrier(barrier_found[0]) if barrier_found else None
    incarnation = found[layout.incarnation]
    first_in_line = current_leader(zk, layout)
    live = set(live_nodes(zk.children_or_none(layout.election)))
    holder = epoch_holder(epoch[0]) if epoch else None
    return {
        "namespace": layout.namespace,
        "incarnation": decode_incarnation(incarnation[0]) if incarnation else None,
        "leader": first_in_line if first_in_line is not None and first_in_line == holder
        else None,
        "first_in_line": first_in_line,
        "epoch": decode_epoch(epoch[0], epoch[1].version) if epoch else None,
        "round": barrier.round if barrier else None,
        "round_released_at": barrier.released_at if barrier else None,
        "last_aggregate": barrier.last if barrier else None,
        "counter": fleet_total(zk, layout, collection),
        "config": read_config(zk, layout),
        "devices": [
            {"node": r.node, "value": r.value, "age": round(now - r.taken_at, 3), "round": r.round,
             "live": r.node in live}
            for r in collection.readings
        ],
        "garbage_readings": collection.garbage,
        "outbox": outbox_status(zk, layout),
    }


def outbox_status(zk: Zk, layout: Layout) -> dict[str, Any]:
    if zk.exists(layout.outbox) is None:
        return {"pending": 0, "oldest": None, "dropped": 0, "rejected": 0}
    data, _ = zk.get(layout.outbox)
    stats = decode_stats(data)
    pending = sorted(int(name) for name in zk.children(layout.outbox) if name.isdigit())
    return {"pending": len(pending), "oldest": pending[0] if pending else None,
            "dropped": stats.dropped, "rejected": stats.rejected}


def render_status(status: dict[str, Any]) -> str:
    lines = [f"fleet      {status['namespace']}"]
    lines.append(f"incarnation {status['incarnation'] or '-'}")
    leader, first = status["leader"], status["first_in_line"]
    waiting = f" (node {first} is first in line, not yet in office)" if first else ""
    lines.append(f"leader     {'node ' + leader if leader else 'none' + waiting}"
                 + (f" (epoch {status['epoch']})" if leader else ""))
    lines.append(f"round      {status['round'] if status['round'] is not None else '-'}")
    last = status["last_aggregate"]
    if last:
        lines.append(
            f"last mean  {last['mean']:.2f} over {last['count']} devices "
            f"(min {last['min']:.2f}, max {last['max']:.2f}), round {last['round']}, "
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(last['time']))}"
        )
    else:
        lines.append("last mean  none yet")
    lines.append(f"counter    {status['counter']} measurements")
    box = status["outbox"]
    oldest = f" (oldest round {box['oldest']})" if box["oldest"] is not None else ""
    lines.append(f"outbox     {box['pending']} rounds waiting for the collector{oldest}, "
                 f"{box['dropped']} dropped, {box['rejected']} refused by it")
    for key, entry in status["config"].items():
        value = entry["value"] if entry["value"] is not None else "-"
        note = f"  ({entry['error']})" if entry["error"] else ""
        lines.append(f"config     {key} = {value}{note}")
    gone = sum(1 for device in status["devices"] if not device["live"])
    lines.append(f"devices    {len(status['devices']) - gone} live"
                 + (f", {gone} gone (their last reading and count are kept)" if gone else ""))
    if status["devices"]:
        lines.append(f"  {'node':<16} {'reading':>10} {'age':>8} {'round':>7}")
        for device in status["devices"]:
            lines.append(
                f"  {device['node']:<16} {device['value']:>10.2f} "
                f"{device['age']:>7.1f}s {device['round']:>7}"
                + ("" if device["live"] else "  gone")
            )
    if status["garbage_readings"]:
        lines.append(f"garbage    {', '.join(status['garbage_readings'])} (skipped by the leader)")
    return "\n".join(lines)


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
    path = layout.config_key(args.key)
    zk.ensure_path(layout.config)
    data = args.text.encode()
    if zk.exists(path) is None:
        zk.create(path, data)
    else:
        zk.set(path, data)
    print(f"{args.key} = {args.text}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zk-sensorctl", description="Status and config of a zk-sensor fleet."
    )
    parser.add_argument("--zookeeper",
                        default=os.environ.get("ZK_SENSOR_ZOOKEEPER", "127.0.0.1:2181"),
                        help="connection string (default: $ZK_SENSOR_ZOOKEEPER or 127.0.0.1:2181)")
    parser.add_argument("--namespace",
                        default=os.environ.get("ZK_SENSOR_NAMESPACE", "/zk-sensor"),
                        help="root znode of the fleet (default /zk-sensor)")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.handler is cmd_config_set:
        try:
            args.text = validated_value(args.key, args.value)
        except InvalidValue as error:
            print(f"zk-sensorctl: refused: {error}", file=sys.stderr)
            return 2
    client = KazooClient(hosts=args.zookeeper, timeout=CONNECT_TIMEOUT)
    try:
        client.start(timeout=CONNECT_TIMEOUT)
    except ZK_ERRORS:
        print(f"zk-sensorctl: cannot reach ZooKeeper at {args.zookeeper}", file=sys.stderr)
        return 1
    try:
        return args.handler(Zk(client, CALL_DEADLINE), Layout(args.namespace), args)
    except ZK_ERRORS as error:
        print(f"zk-sensorctl: ZooKeeper error: {type(error).__name__} {error}".rstrip(),
              file=sys.stderr)
        return 1
    finally:
        client.stop()
        client.close()


if __name__ == "__main__":
    sys.exit(main())

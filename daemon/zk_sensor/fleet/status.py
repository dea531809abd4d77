"""What `zk-sensorctl status` shows: the fleet as ZooKeeper holds it, read without
writing anything, and rendered for a terminal, once or refreshed in place (`--watch`)."""

import json
import time
from typing import Any, TextIO

from kazoo.exceptions import NoNodeError

from zk_sensor.fleet.barrier import decode_barrier
from zk_sensor.fleet.coordination import decode_epoch, decode_incarnation, epoch_holder
from zk_sensor.fleet.counter import fleet_total
from zk_sensor.fleet.election import current_leader, live_nodes
from zk_sensor.fleet.layout import CONFIG_KEYS, Layout
from zk_sensor.fleet.outbox import load_outbox
from zk_sensor.fleet.readings import collect_readings
from zk_sensor.fleet.validation import CONFIG_PARSERS, InvalidValue
from zk_sensor.waker import SignalStop
from zk_sensor.zk.client import ZK_ERRORS, AccessRefused, Zk

# Cursor home, then clear the screen: each refresh replaces the last, as watch(1) does.
CLEAR = "\x1b[H\x1b[2J"


def read_config(zk: Zk, layout: Layout) -> dict[str, dict[str, Any]]:
    config: dict[str, dict[str, Any]] = {}
    for key in CONFIG_KEYS:
        try:
            data, _ = zk.get(layout.config_key(key))
        except NoNodeError:
            config[key] = {"value": None, "error": "not set (nodes use their local default)"}
            continue
        except AccessRefused:
            config[key] = {"value": None, "error": "not readable without the fleet's or the "
                                                   "operator's credentials"}
            continue
        text = data.decode(errors="replace")
        try:
            CONFIG_PARSERS[key](text)
            config[key] = {"value": text, "error": None}
        except InvalidValue as error:
            config[key] = {"value": text, "error": f"invalid, ignored by nodes: {error}"}
    return config


def clock_label(synced: bool) -> str:
    return "synced" if synced else "unsynced"


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
    fleet_id = decode_incarnation(incarnation[0]) if incarnation else None
    epoch_number = decode_epoch(epoch[0], epoch[1].version) if epoch else None
    return {
        "namespace": layout.namespace,
        "incarnation": fleet_id,
        "leader": first_in_line if first_in_line is not None and first_in_line == holder
        else None,
        "first_in_line": first_in_line,
        "epoch": epoch_number,
        "round": barrier.round if barrier else None,
        "round_released_at": barrier.released_at if barrier else None,
        "round_released_clock": clock_label(barrier.clock_synced) if barrier else None,
        "round_changed_at": barrier_found[1].mtime / 1000 if barrier_found else None,
        "last_aggregate": barrier.last if barrier else None,
        "counter": fleet_total(zk, layout, collection),
        "config": read_config(zk, layout),
        "devices": [
            {"node": r.node, "value": r.value, "age": round(now - r.taken_at, 3), "round": r.round,
             "failures": r.failures, "clock": clock_label(r.clock_synced),
             "live": r.node in live}
            for r in collection.readings
        ],
        "without_reading": sorted(live - {r.node for r in collection.readings}
                                  - set(collection.garbage)),
        "garbage_readings": collection.garbage,
        "garbage_znodes": holding_garbage(("incarnation", incarnation, fleet_id),
                                          ("epoch", epoch, epoch_number),
                                          ("barrier", barrier_found, barrier)),
        "outbox": outbox_status(zk, layout),
    }


def holding_garbage(*znodes: tuple[str, object, object]) -> list[str]:
    """The names of those present (read) that did not decode."""
    return [name for name, read, decoded in znodes if read is not None and decoded is None]


def outbox_status(zk: Zk, layout: Layout) -> dict[str, Any]:
    """Entries that are not rounds are listed, not counted: the next leader removes them."""
    try:
        loaded = load_outbox(zk, layout)
    except NoNodeError:
        return {"pending": 0, "oldest": None, "dropped": 0, "rejected": 0, "garbage": []}
    rounds = loaded.rounds
    return {"pending": len(rounds), "oldest": rounds[0].round if rounds else None,
            "dropped": loaded.stats.dropped, "rejected": loaded.stats.rejected,
            "garbage": loaded.garbage}


def format_status(status: dict[str, Any], as_json: bool) -> str:
    return json.dumps(status, indent=2) if as_json else render_status(status)


def watch_status(zk: Zk, layout: Layout, interval: float, as_json: bool, out: TextIO) -> int:
    """Refresh until Ctrl-C (or SIGTERM), which is how one leaves it: exit 0. A failed read
    is shown in its refresh and the next one tries again (kazoo reconnects meanwhile)."""
    clear = CLEAR if out.isatty() else ""
    with SignalStop() as stop:
        while not stop.stopped:
            out.write(clear + refresh(zk, layout, interval, as_json) + "\n")
            out.flush()
            stop.wait(interval)
    return 0


def refresh(zk: Zk, layout: Layout, interval: float, as_json: bool) -> str:
    now = time.time()
    header = (f"Every {interval:g} s: zk-sensorctl status {layout.namespace}    "
              f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(now))}")
    try:
        body = format_status(fleet_status(zk, layout, now), as_json)
    except LookupError as error:
        body = str(error)
    except (*ZK_ERRORS, AccessRefused) as error:
        body = f"cannot read the fleet: {type(error).__name__} {error}".rstrip()
    return f"{header}\n\n{body}"


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
            f"{local_time(last['time'])}"
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
        lines.append(f"  {'node':<16} {'reading':>10} {'age':>8} {'round':>7} {'failures':>8}")
        lines.extend(device_line(device) for device in status["devices"])
    if status["without_reading"]:
        lines.append(f"  {', '.join(status['without_reading'])}: live, no reading yet "
                     "(a sensor that has never read fails unseen here: see the node's log)")
    if status["garbage_readings"]:
        lines.append(f"garbage    {', '.join(status['garbage_readings'])} (skipped by the leader)")
    if status["garbage_znodes"]:
        lines.append(f"garbage    {', '.join(status['garbage_znodes'])} znode (repaired by the "
                     "leader)")
    if box["garbage"]:
        lines.append(f"garbage    outbox entries {', '.join(box['garbage'])} (removed by the "
                     "next leader)")
    return "\n".join(lines)


def local_time(timestamp: float) -> str:
    """A leader's clock may be years off (clock.py), past what the platform's time_t holds."""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))
    except (OverflowError, OSError, ValueError):
        return f"time {timestamp:g}"


def device_line(device: dict[str, Any]) -> str:
    """An unsynchronised node's `taken_at` is from a clock that may be off by years, so
    its age means nothing: shown as `?`, and the row says why."""
    unsynced = device["clock"] == "unsynced"
    age = f"{'?':>8}" if unsynced else f"{device['age']:>7.1f}s"
    notes = [note for note, shown in (("clock unsynced", unsynced), ("gone", not device["live"]))
             if shown]
    return (f"  {device['node']:<16} {device['value']:>10.2f} {age} {device['round']:>7} "
            f"{device['failures']:>8}" + "".join(f"  {note}" for note in notes))

"""`zk-sensorctl status`: the fleet's status (fleet/status.py) rendered for a terminal,
once or refreshed in place (`--watch`), or as JSON."""

import json
import time
from typing import TextIO

from zk_sensor.fleet.layout import Layout
from zk_sensor.fleet.status import DeviceStatus, FleetStatus, fleet_status
from zk_sensor.waker import SignalStop
from zk_sensor.zk.errors import UNKNOWN_OR_REFUSED
from zk_sensor.zk.interface import Zk

# Cursor home, then clear the screen: each refresh replaces the last, as watch(1) does.
CLEAR = "\x1b[H\x1b[2J"


def format_status(status: FleetStatus, as_json: bool) -> str:
    return json.dumps(status.as_json(), indent=2) if as_json else render_status(status)


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
    except UNKNOWN_OR_REFUSED as error:
        body = f"cannot read the fleet: {type(error).__name__} {error}".rstrip()
    return f"{header}\n\n{body}"


def render_status(status: FleetStatus) -> str:
    lines = [f"fleet      {status.namespace}"]
    lines.append(f"incarnation {status.incarnation or '-'}")
    leader, first = status.leader, status.first_in_line
    waiting = f" (node {first} is first in line, not yet in office)" if first else ""
    lines.append(f"leader     {'node ' + leader if leader else 'none' + waiting}"
                 + (f" (epoch {status.epoch})" if leader else ""))
    lines.append(f"round      {status.round if status.round is not None else '-'}")
    last = status.last_aggregate
    if last:
        lines.append(
            f"last mean  {last.mean:.2f} over {last.count} devices "
            f"(min {last.min:.2f}, max {last.max:.2f}), round {last.round}, "
            f"{local_time(last.time)}"
        )
    else:
        lines.append("last mean  none yet")
    lines.append(f"counter    {status.counter} measurements")
    box = status.outbox
    oldest = f" (oldest round {box.oldest})" if box.oldest is not None else ""
    lines.append(f"outbox     {box.pending} rounds waiting for the collector{oldest}, "
                 f"{box.dropped} dropped, {box.rejected} refused by it")
    for key, entry in status.config.items():
        value = entry.value if entry.value is not None else "-"
        note = f"  ({entry.error})" if entry.error else ""
        lines.append(f"config     {key} = {value}{note}")
    gone = len(status.gone)
    lines.append(f"devices    {len(status.devices) - gone} live"
                 + (f", {gone} gone (their last reading and count are kept)" if gone else ""))
    if status.devices:
        lines.append(f"  {'node':<16} {'reading':>10} {'age':>8} {'round':>7} {'failures':>8}")
        lines.extend(device_line(device) for device in status.devices)
    if status.without_reading:
        lines.append(f"  {', '.join(status.without_reading)}: live, no reading yet "
                     "(a sensor that has never read fails unseen here: see the node's log)")
    if status.garbage_readings:
        lines.append(f"garbage    {', '.join(status.garbage_readings)} (skipped by the leader)")
    if status.garbage_znodes:
        lines.append(f"garbage    {', '.join(status.garbage_znodes)} znode (repaired by the "
                     "leader)")
    if box.garbage:
        lines.append(f"garbage    outbox entries {', '.join(box.garbage)} (removed by the "
                     "next leader)")
    return "\n".join(lines)


def local_time(timestamp: float) -> str:
    """A leader's clock may be years off (clock.py), past what the platform's time_t holds."""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))
    except (OverflowError, OSError, ValueError):
        return f"time {timestamp:g}"


def device_line(device: DeviceStatus) -> str:
    """An unsynchronised node's `taken_at` is from a clock that may be off by years, so
    its age means nothing: shown as `?`, and the row says why."""
    unsynced = not device.clock_synced
    age = f"{'?':>8}" if unsynced else f"{device.age:>7.1f}s"
    notes = [note for note, shown in (("clock unsynced", unsynced), ("gone", not device.live))
             if shown]
    return (f"  {device.node:<16} {device.value:>10.2f} {age} {device.round:>7} "
            f"{device.failures:>8}" + "".join(f"  {note}" for note in notes))

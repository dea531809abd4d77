"""`zk-sensorctl check`: the fleet's health for a monitoring system, as a Nagios plugin
reports it (Icinga, Sensu, Zabbix and others run those too): one line on stdout, with
performance data after `|`, and the exit status 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.

UNKNOWN is for when the check cannot tell: ZooKeeper unreachable or failing, no fleet at
the namespace, unusable credentials. The other commands exit 1 or 2 for those; a monitor
must not page "critical" because its own check is broken, nor "ok".

What is wrong, worst first:
- CRITICAL: no leader; no round released for `--stalled-periods` sampling periods (the
  live period from ZooKeeper, else the node file's, else the default), measured on the
  barrier's modification time, the ZooKeeper server's clock; more than `--outbox-critical`
  rounds waiting for the collector (default: half the node file's outbox_limit, where the
  oldest start being dropped).
- WARNING: more than `--outbox-warning` rounds waiting; rounds dropped from a full outbox;
  devices gone (a reading whose node no longer stands as a candidate); znodes holding
  garbage (the leader repairs or skips them).
The dropped count only grows, so it would stay a warning for good: `--dropped-since N`
acknowledges the first N (the count the operator has seen), and a retired node keeps its
reading (its count is part of the fleet's), so `--gone-allowed N` tolerates N gone.
"""

import argparse
import time
from dataclasses import dataclass

from zk_sensor.fleet.layout import Layout
from zk_sensor.fleet.status import FleetStatus, OutboxStatus, fleet_status
from zk_sensor.fleet.validation import CONFIG_PARSERS, InvalidValue
from zk_sensor.node.settings import Settings
from zk_sensor.zk.interface import Zk

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
STATES = ("OK", "WARNING", "CRITICAL", "UNKNOWN")


@dataclass(frozen=True)
class Limits:
    """Where the check draws its lines: the command's flags, with their defaults."""

    stalled_periods: float = 3.0
    outbox_warning: int = 10
    outbox_critical: int = Settings.outbox_limit // 2
    dropped_since: int = 0
    gone_allowed: int = 0


@dataclass(frozen=True)
class Finding:
    """One thing wrong: its Nagios state and the text the line gives it."""

    state: int
    text: str


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stalled-periods", type=float, default=Limits.stalled_periods,
                        help="critical when no round was released for this many sampling "
                        "periods (default 3)")
    parser.add_argument("--outbox-warning", type=int, default=Limits.outbox_warning,
                        help="warning above this many rounds waiting for the collector "
                        "(default 10)")
    parser.add_argument("--outbox-critical", type=int,
                        help="critical above this many (default: half the outbox_limit of "
                        "the node file given with -c, else 500)")
    parser.add_argument("--dropped-since", type=int, default=0, metavar="N",
                        help="warn only about rounds dropped beyond the first N "
                        "(acknowledged ones; default 0)")
    parser.add_argument("--gone-allowed", type=int, default=0, metavar="N",
                        help="devices gone tolerated, such as retired nodes (default 0)")


def cmd_check(zk: Zk, layout: Layout, args: argparse.Namespace) -> int:
    zk.begin_step(args.timeout)
    try:
        status = fleet_status(zk, layout, time.time())
    except LookupError as error:
        print(f"UNKNOWN: {error}")
        return UNKNOWN
    state, line = assess(status, sampling_period(status, args.node.sampling_period),
                         time.time(), limits(args))
    print(line)
    return state


def limits(args: argparse.Namespace) -> Limits:
    critical = args.outbox_critical
    if critical is None:
        critical = args.node.outbox_limit // 2
    return Limits(args.stalled_periods, args.outbox_warning, critical, args.dropped_since,
                  args.gone_allowed)


def sampling_period(status: FleetStatus, node_period: float) -> float:
    """The period the nodes use: ZooKeeper's when set and valid (readable with the fleet's
    or the operator's credentials), else the node's own setting (its file, environment),
    else the default."""
    entry = status.config_entry("sampling_period")
    if entry.value is not None and entry.error is None:
        return float(entry.value)
    try:
        return float(CONFIG_PARSERS["sampling_period"](str(node_period)))
    except InvalidValue:
        return Settings.sampling_period


def assess(status: FleetStatus, period: float, now: float, limits: Limits) -> tuple[int, str]:
    """The exit status and the line: what is wrong, worst first, then the summary."""
    age = round_age(status, now)
    findings = [*leader_findings(status), *stall_findings(age, period, limits),
                *outbox_findings(status.outbox, limits), *gone_findings(status, limits),
                *garbage_findings(status)]
    findings.sort(key=lambda finding: -finding.state)
    worst = findings[0].state if findings else OK
    texts = [finding.text for finding in findings] + [summary(status, age)]
    return worst, f"{STATES[worst]}: {'; '.join(texts)} | {perfdata(status, age, period, limits)}"


def round_age(status: FleetStatus, now: float) -> float | None:
    changed = status.round_changed_at
    return None if changed is None else max(0.0, now - changed)


def leader_findings(status: FleetStatus) -> list[Finding]:
    if status.leader is not None:
        return []
    first = status.first_in_line
    waiting = f" (node {first} is first in line, not yet in office)" if first else ""
    return [Finding(CRITICAL, f"no leader{waiting}")]


def stall_findings(age: float | None, period: float, limits: Limits) -> list[Finding]:
    if age is None or age <= limits.stalled_periods * period:
        return []
    return [Finding(CRITICAL, f"rounds stalled: none released for {age:.1f} s "
                              f"({limits.stalled_periods:g} periods of {period:g} s allowed)")]


def outbox_findings(outbox: OutboxStatus, limits: Limits) -> list[Finding]:
    found = []
    pending = outbox.pending
    if pending > limits.outbox_critical:
        found.append(Finding(CRITICAL, f"{pending} rounds waiting for the collector "
                                       f"(critical above {limits.outbox_critical})"))
    elif pending > limits.outbox_warning:
        found.append(Finding(WARNING, f"{pending} rounds waiting for the collector "
                                      f"(warning above {limits.outbox_warning})"))
    dropped = outbox.dropped - limits.dropped_since
    if dropped > 0:
        since = f" beyond the {limits.dropped_since} acknowledged" if limits.dropped_since else ""
        found.append(Finding(WARNING, f"{dropped} rounds dropped from the full outbox{since} "
                                      f"(--dropped-since {outbox.dropped} acknowledges them)"))
    return found


def gone_findings(status: FleetStatus, limits: Limits) -> list[Finding]:
    gone = status.gone
    if len(gone) <= limits.gone_allowed:
        return []
    return [Finding(WARNING, f"{len(gone)} {'device' if len(gone) == 1 else 'devices'} gone "
                             f"({', '.join(gone)})")]


def garbage_findings(status: FleetStatus) -> list[Finding]:
    """Unreadable znodes: what a faulty or hostile writer left; the fleet repairs or skips
    them, so a warning, which should clear by itself within a few rounds."""
    garbage = [f"the {name} znode" for name in status.garbage_znodes]
    garbage += [f"reading {node}" for node in status.garbage_readings]
    garbage += [f"outbox entry {name}" for name in status.outbox.garbage]
    if not garbage:
        return []
    return [Finding(WARNING, f"garbage in {', '.join(garbage)}")]


def live_devices(status: FleetStatus) -> tuple[int, int]:
    """Live and known devices: readings, plus live nodes that have none yet."""
    devices, fresh = status.devices, len(status.without_reading)
    return sum(1 for device in devices if device.live) + fresh, len(devices) + fresh


def summary(status: FleetStatus, age: float | None) -> str:
    parts = []
    if status.leader is not None:
        parts.append(f"leader node {status.leader} (epoch {status.epoch})")
    if status.round is not None and age is not None:
        parts.append(f"round {status.round} released {age:.1f} s ago")
    live, known = live_devices(status)
    parts.append(f"{live}/{known} devices live")
    parts.append(f"outbox {status.outbox.pending}")
    return ", ".join(parts)


def perfdata(status: FleetStatus, age: float | None, period: float, limits: Limits) -> str:
    """Nagios performance data: label=value[unit];warn;crit;min;max."""
    live, known = live_devices(status)
    outbox = status.outbox
    stalled = limits.stalled_periods * period
    return " ".join([
        f"round_age={'U' if age is None else f'{age:.1f}'}s;;{stalled:g};0",
        f"devices_live={live};;;0;{known}",
        f"outbox={outbox.pending};{limits.outbox_warning};{limits.outbox_critical};0",
        f"dropped={outbox.dropped}c",
    ])

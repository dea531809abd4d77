"""A randomized nemesis in the spirit of Jepsen: a seeded schedule of faults against a real
fleet, a real 3-server ZooKeeper and a real zk-collector, then checks on the whole history.

test_faults.py injects one fault per test and checks what follows it. Real outages are not
that tidy: a reply gets lost while a leader is being replaced, a ZooKeeper server goes away
just after a collector outage. Here one `random.Random(seed)` draws a schedule mixing every
kind of fault, with random durations within the bounds below, and the daemons run through
all of it. The daemons reach ZooKeeper only through one ZkProxy per server (proxy.py), so
faults can be aimed at single requests in any node's conversation:

- lost reply: the release transaction, a candidate create, a reading `set` or the outbox
  clean-up lands, but its reply is cut with the connection (ZooKeeper's unknown outcome);
- slow commit: a release's reply held longer than the daemons' 1 s ZooKeeper deadline;
- leader SIGKILL (restarted with the same id a moment later) and leader SIGSTOP;
- one ZooKeeper server stopped and started again (the leading one or a follower);
- the collector stopped and started again on the same port and database.

A lost reply or slow commit is armed on every proxy (nobody knows which server the target
talks to); the first proxy whose rule acts retires the others, so each is one fault. It
stays armed until it acts, beyond its own step if need be: a candidate create only happens
when a node registers, after a restart or a lost session, so it fires within a later fault.
After each fault the nemesis waits for the fleet to release rounds again, then stays quiet
for a random time (and until the next fault's planned offset, so a run lasts about as long
as planned): faults overlap only through a reply still armed, so the gap bound below is
that of one fault, not of several stacked.

At the end everything is healed, the collector catches up past the fleet's current round,
the fleet is stopped cleanly (SIGTERM), and the whole history is checked:

1. per (fleet, incarnation) the collector holds every round between the first and the
   last it stored, none twice, and there is one incarnation (nothing here rebuilds the
   namespace, so a second one is the fleet forgetting its identity);
2. no two leaders under one epoch: each stored epoch names one leader, who announced it
   (`I am the leader now (epoch N`), and no epoch was announced twice across all nodes
   and process lives: the epoch is the fence, a shared one fences nothing;
3. the longest leaderless gap (arrival time between consecutive stored rounds, less any
   span in which the collector was down on purpose) stays under LEADERLESS_GAP_S;
4. after the clean stop the fleet's counter (`zk-sensorctl status`) equals the readings
   the daemons logged as published over every process ever started (give or take one
   per SIGKILL that fell between a reading landing and its log line: never fewer).

Reproducible: the schedule is a function of (seed, seconds) only and is printed before the
run; the fleet's leader, the ZooKeeper server in a role and all timings are found at run
time. Every failure carries the seed, the schedule, the run's timeline and the faults the
proxies applied, with daemon log lines as evidence.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import re
import signal
import subprocess
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError

from zk_sensor.fleet.layout import Layout
from zk_sensor.testing.collector import CollectorProcess, fetch_rounds, restart_collector
from zk_sensor.testing.faults import (
    BACKOFF_MAX_S,
    CATCH_UP_ROUNDS,
    HTTP_TIMEOUT_S,
    SIGKILL_GAP_S,
    SIGSTOP_GAP_S,
    STEADY_ROUNDS,
    ZK_LEADER_GAP_S,
    wait_caught_up,
    wait_full_rounds,
)
from zk_sensor.testing.fleet import Daemon, Fleet, status, wait_for
from zk_sensor.testing.proxy import Rule, ZkProxy
from zk_sensor.testing.zookeeper import ZkEnsemble, ZkServer

NAMESPACE = "/nemesis"
NODE_COUNTS = (3, 4)
READY = r"ready: first reading published"
MEASURED = re.compile(r" measured \S+ for round")  # as Fleet.measurements() counts them
MEASURED_LINE = re.compile(r"^.* measured \S+ for round .*$", re.MULTILINE)
TAKING_OFFICE = re.compile(r"I am the leader now \(epoch (\d+)")
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
LOG_TIME_FORMAT = "%Y-%m-%d %H:%M:%S,%f"

# --- the fleet's timing (fleet.py's Fleet starts every daemon with these)
ZK_DEADLINE_S = 1.0  # --zk-deadline 1
# kazoo's first reconnect after a dropped connection comes within 0.1-0.5 s.
RECONNECT_S = 0.5
# zk_sensor.node.daemon.RETRY_AFTER_ERROR: a loop step that failed on ZooKeeper runs again after it.
RETRY_AFTER_ERROR_S = 1.0
# zk_sensor.node.leader.OFFICE_BACKOFF_FIRST: taking office again after stepping down waits this.
OFFICE_BACKOFF_FIRST_S = 0.5

# --- the faults' durations, drawn uniformly within these bounds (deliberate waits)
QUIET_S = (0.5, 3.0)
# How long a lost-reply or slow-commit step waits for its rule to act before moving on
# (the rule stays armed until it acts).
ARMED_WAIT_S = (1.0, 4.0)
# The held reply of a slow commit: longer than the daemons' ZooKeeper deadline.
SLOW_COMMIT_S = 1.5 * ZK_DEADLINE_S
PAUSE_S = (1.0, 6.0)
# Below and above the session timeout: the reading, persistent, holds the node's count
# (counter.py) either way.
RESTART_DELAY_S = (0.5, 6.0)
ZK_DOWN_S = (1.0, 8.0)
COLLECTOR_DOWN_S = (2.0, 10.0)
LOST_REPLY_TARGETS = ("release", "candidate create", "reading set", "outbox clean-up")
ZK_ROLES = ("leader", "follower")

# --- the leaderless gap (check 3)
# A reply still armed when a leader changes may hit the new one: a reconnect, the call
# running into its deadline, the failed loop step run again, and the first office backoff.
LINGERING_FAULT_S = RECONNECT_S + ZK_DEADLINE_S + RETRY_AFTER_ERROR_S + OFFICE_BACKOFF_FIRST_S
# The worst single fault (faults.py gives each bound's reasoning): a SIGKILLed leader
# or one paused past its session is noticed only when its session expires (session timeout,
# then the next in line takes office and closes the open round within two periods); the
# ZooKeeper server leading the ensemble stopped costs its quorum's election on top of that.
# Lost replies, slow commits and ZooKeeper followers cost less; collector outages are not
# leaderless and their spans are taken out of the arrival gaps (see COURIER_RESUME_S).
# With the loopback fleet's figures: 4 + 5 + 2 x 0.5 + 2 = 12 s, plus 3 s: 15 s.
LEADERLESS_GAP_S = max(SIGKILL_GAP_S, SIGSTOP_GAP_S, ZK_LEADER_GAP_S) + LINGERING_FAULT_S
# After a collector outage the courier's next attempt comes at most one backoff interval
# after the collector is back and may run into its timeout: until then the fleet cannot
# deliver, whoever leads it.
COURIER_RESUME_S = BACKOFF_MAX_S + HTTP_TIMEOUT_S

# --- settling between faults, and the end
# The barrier released this many rounds after a fault healed: a leader is in office again.
SETTLE_ROUNDS = 2
LIVENESS_TIMEOUT_S = 60.0
ZK_SERVING_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
TRIPWIRE_POLL_S = 0.05
# The outbox clean-up's guard: a rule that holds a reply this long lets it pass untouched.
GUARD_HOLD_S = 0.0
# The observer's own ZooKeeper calls retry through a server restart, for a bounded time.
OBSERVER_RETRY = {"max_tries": -1, "max_delay": 1.0, "deadline": LIVENESS_TIMEOUT_S}
EVIDENCE_LINES = 40


class Kind(StrEnum):
    LOST_REPLY = "lost reply"
    SLOW_COMMIT = "slow commit"
    LEADER_KILL = "leader SIGKILL"
    LEADER_PAUSE = "leader SIGSTOP"
    ZK_RESTART = "ZooKeeper restart"
    COLLECTOR_OUTAGE = "collector outage"


WEIGHTS: dict[Kind, int] = {
    Kind.LOST_REPLY: 3,  # four targets share it
    Kind.SLOW_COMMIT: 1,
    Kind.LEADER_KILL: 1,
    Kind.LEADER_PAUSE: 1,
    Kind.ZK_RESTART: 1,
    Kind.COLLECTOR_OUTAGE: 1,
}
DURATIONS: dict[Kind, tuple[float, float]] = {
    Kind.LOST_REPLY: ARMED_WAIT_S,
    Kind.SLOW_COMMIT: ARMED_WAIT_S,
    Kind.LEADER_KILL: RESTART_DELAY_S,
    Kind.LEADER_PAUSE: PAUSE_S,
    Kind.ZK_RESTART: ZK_DOWN_S,
    Kind.COLLECTOR_OUTAGE: COLLECTOR_DOWN_S,
}
# What a fault typically costs beyond its own duration (starting processes, elections, the
# settling rounds) on the 2-core machine: the planned offsets allow for it, and the run
# waits for each offset, so it lasts about as long as planned.
OVERHEAD_S: dict[Kind, float] = {
    Kind.LOST_REPLY: 1.0,
    Kind.SLOW_COMMIT: 1.5,
    Kind.LEADER_KILL: 2.5,
    Kind.LEADER_PAUSE: 2.0,
    Kind.ZK_RESTART: 6.0,
    Kind.COLLECTOR_OUTAGE: 2.0,
}


def keep_fault_for(seconds: float) -> None:
    """A fault's deliberate duration, or a quiet time: a sleep that synchronises nothing."""
    time.sleep(seconds)


def clock(at: float) -> str:
    """Wall-clock time as the daemons' log lines show it, to find them side by side."""
    return datetime.fromtimestamp(at).strftime("%H:%M:%S.%f")[:-3]


# ---------------------------------------------------------------- the schedule


@dataclass(frozen=True)
class Fault:
    at: float  # planned offset from the nemesis's start (later if the fleet was slow)
    kind: Kind
    seconds: float
    target: str = ""
    quiet: float = 0.0
    node: str = ""  # whose reading, for a lost reading `set`

    @property
    def aim(self) -> str:
        return f"{self.target} of node {self.node}" if self.node else self.target

    def describe(self) -> str:
        match self.kind:
            case Kind.LOST_REPLY:
                what = f"lost reply: {self.aim} (waits up to {self.seconds:.1f} s to act)"
            case Kind.SLOW_COMMIT:
                what = (f"slow commit: a release's reply held {SLOW_COMMIT_S:.1f} s "
                        f"(waits up to {self.seconds:.1f} s to act)")
            case Kind.LEADER_KILL:
                what = f"leader SIGKILL, restarted after {self.seconds:.1f} s"
            case Kind.LEADER_PAUSE:
                what = f"leader SIGSTOP for {self.seconds:.1f} s"
            case Kind.ZK_RESTART:
                what = f"ZooKeeper {self.target} server stopped for {self.seconds:.1f} s"
            case Kind.COLLECTOR_OUTAGE:
                what = f"collector down for {self.seconds:.1f} s"
        return what


@dataclass(frozen=True)
class Schedule:
    seed: int
    seconds: float
    nodes: tuple[str, ...]
    faults: tuple[Fault, ...]

    def lines(self) -> list[str]:
        return [f"  #{number:<3} t+{fault.at:6.1f} s  {fault.describe()}; quiet {fault.quiet:.1f} s"
                for number, fault in enumerate(self.faults, 1)]

    def replay(self) -> str:
        return (f"NEMESIS_SEED={self.seed} NEMESIS_SECONDS={self.seconds:g} make test  (or "
                f"NEMESIS_SEED={self.seed} NEMESIS_SECONDS={self.seconds:g} .venv/bin/pytest -s "
                "tests/test_nemesis.py::test_nemesis)")

    def header(self) -> str:
        return (f"NEMESIS seed {self.seed}, {self.seconds:g} s, {len(self.nodes)} daemons, "
                f"{len(self.faults)} faults; replay: {self.replay()}")


def plan(seed: int, seconds: float) -> Schedule:
    """The whole schedule from the seed alone: faults until their planned time fills
    `seconds`."""
    rng = random.Random(seed)
    nodes = tuple(str(n) for n in range(1, rng.choice(NODE_COUNTS) + 1))
    faults: list[Fault] = []
    at = 0.0
    while at < seconds:
        fault = draw_fault(rng, at, nodes)
        faults.append(fault)
        at += fault.seconds + fault.quiet + OVERHEAD_S[fault.kind]
    return Schedule(seed, seconds, nodes, tuple(faults))


def draw_fault(rng: random.Random, at: float, nodes: tuple[str, ...]) -> Fault:
    """One fault; a lost reading `set` aims at one node, as every node writes its reading
    at the same moment of each round."""
    (kind,) = rng.choices(list(WEIGHTS), weights=list(WEIGHTS.values()))
    targets = {Kind.LOST_REPLY: LOST_REPLY_TARGETS, Kind.ZK_RESTART: ZK_ROLES}.get(kind, ("",))
    target = rng.choice(targets)
    node = rng.choice(nodes) if target == "reading set" else ""
    seconds = round(rng.uniform(*DURATIONS[kind]), 1)
    quiet = round(rng.uniform(*QUIET_S), 1)
    return Fault(round(at, 1), kind, seconds, target, quiet, node)


PLURALS: dict[Kind, str] = {
    Kind.LOST_REPLY: "lost replies", Kind.SLOW_COMMIT: "slow commits",
    Kind.LEADER_KILL: "leader SIGKILLs", Kind.LEADER_PAUSE: "leader SIGSTOPs",
    Kind.ZK_RESTART: "ZooKeeper restarts", Kind.COLLECTOR_OUTAGE: "collector outages",
}


def fault_counts(schedule: Schedule) -> str:
    counts = Counter(fault.kind for fault in schedule.faults)
    return ", ".join(f"{counts[kind]} {kind if counts[kind] == 1 else PLURALS[kind]}"
                     for kind in Kind)


# ---------------------------------------------------------------- what happened, when


class Timeline:
    """The run's events with their wall-clock times, printed as they happen."""

    def __init__(self) -> None:
        self.start = time.time()
        self.events: list[tuple[float, str]] = []
        self.lock = threading.Lock()

    def begin(self) -> None:
        """From now on t+ counts from here, as the schedule's planned offsets do."""
        self.start = time.time()

    def note(self, text: str) -> None:
        at = time.time()
        with self.lock:
            self.events.append((at, text))
        print(self.line(at, text), flush=True)

    def line(self, at: float, text: str) -> str:
        return f"  t+{at - self.start:6.1f} s ({clock(at)})  {text}"

    def lines(self) -> list[str]:
        with self.lock:
            return [self.line(at, text) for at, text in self.events]


@dataclass
class Tripwire:
    """One lost reply or slow commit, armed on every proxy; `guards` are rules placed
    before it on each proxy to keep it off requests it must not take."""

    label: str
    rules: list[tuple[str, Rule]]  # (the server its proxy is in front of, the rule)
    guards: list[Rule]
    acted: threading.Event = field(default_factory=threading.Event)

    def has_acted(self) -> bool:
        return any(rule.fired.is_set() for _, rule in self.rules)

    def retire(self) -> None:
        for _, rule in self.rules:
            rule.cancel()
        for guard in self.guards:
            guard.cancel()

    def where(self) -> str:
        return ", ".join(f"via {server} x{rule.count}" for server, rule in self.rules
                         if rule.count)


class Tripwires:
    """Watches the armed tripwires: once one proxy's rule acts, the others are retired, so
    a lost reply is one lost reply and not one per server the target reconnects to."""

    def __init__(self, timeline: Timeline) -> None:
        self.timeline = timeline
        self.armed: list[Tripwire] = []
        self.acted: list[Tripwire] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.watch, name="nemesis-tripwires", daemon=True)

    def __enter__(self) -> Tripwires:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stopping.set()
        self.thread.join()
        self.disarm_all()

    def arm(self, wire: Tripwire) -> None:
        with self.lock:
            self.armed.append(wire)

    def watch(self) -> None:
        while not self.stopping.wait(TRIPWIRE_POLL_S):
            self.sweep()

    def sweep(self) -> None:
        with self.lock:
            acted = [wire for wire in self.armed if wire.has_acted()]
            self.armed = [wire for wire in self.armed if wire not in acted]
            self.acted += acted
        for wire in acted:
            wire.retire()
            wire.acted.set()
            self.timeline.note(f"{wire.label}: acted ({wire.where()})")

    def disarm_all(self) -> None:
        self.sweep()
        with self.lock:
            left, self.armed = self.armed, []
        for wire in left:
            wire.retire()
            self.timeline.note(f"{wire.label}: never acted; disarmed")


# ---------------------------------------------------------------- the rig


class Collector:
    """The zk-collector under test. An outage stops it and starts a new process on the same
    port and database; `blackouts` are the spans in which the fleet could not deliver."""

    def __init__(self, work_dir: Path) -> None:
        self.process = CollectorProcess(work_dir / "rounds.sqlite3",
                                        work_dir / "collector.log").start()
        self.blackouts: list[tuple[float, float]] = []
        self.down_at: float | None = None

    @property
    def base_url(self) -> str:
        return self.process.url("")

    @property
    def api_url(self) -> str:
        return self.process.url("/api/rounds")

    @property
    def running(self) -> bool:
        return self.process.process is not None and self.process.process.poll() is None

    def take_down(self) -> None:
        self.down_at = time.time()
        self.process.stop()

    def bring_back(self) -> None:
        assert self.down_at is not None, "take it down first"
        self.process = restart_collector(self.process)
        self.blackouts.append((self.down_at, time.time() + COURIER_RESUME_S))
        self.down_at = None

    def stop(self) -> None:
        self.process.stop()


@dataclass
class Rig:
    ensemble: ZkEnsemble
    proxies: list[ZkProxy]  # one per server, in the ensemble's order
    fleet: Fleet  # the daemons, connected through the proxies only
    observer: Fleet  # the same namespace straight to the servers: ctl's view, never faulted
    zk: KazooClient  # straight to the servers, with retries: the barrier's version
    collector: Collector
    layout: Layout

    def proxied(self) -> list[tuple[str, ZkProxy]]:
        return [(f"server {server.myid}", proxy)
                for server, proxy in zip(self.ensemble.servers, self.proxies, strict=True)]


@contextlib.contextmanager
def open_rig(ensemble: ZkEnsemble, zk: KazooClient, work_dir: Path) -> Iterator[Rig]:
    """A proxy per server, a collector and an empty fleet; all stopped on the way out,
    the fleet first (SIGCONT then SIGTERM, so a paused daemon ends too)."""
    with contextlib.ExitStack() as cleanup:
        proxies = [cleanup.enter_context(ZkProxy(server.address)) for server in ensemble.servers]
        collector = Collector(work_dir)
        cleanup.callback(collector.stop)
        hosts = ",".join(proxy.address for proxy in proxies)
        fleet = Fleet(hosts, NAMESPACE, work_dir, collector.api_url)
        cleanup.callback(fleet.stop_all)
        observer = Fleet(ensemble.hosts, NAMESPACE, work_dir, collector.api_url)
        yield Rig(ensemble, proxies, fleet, observer, zk, collector, Layout(NAMESPACE))


# ---------------------------------------------------------------- the nemesis


def under(folder: str) -> re.Pattern[str]:
    return re.compile(f"^{re.escape(folder)}/")


class Nemesis:
    """Runs a schedule against a rig and collects the history to check."""

    def __init__(self, rig: Rig, schedule: Schedule) -> None:
        self.rig = rig
        self.schedule = schedule
        self.timeline = Timeline()
        self.tripwires = Tripwires(self.timeline)

    def __enter__(self) -> Nemesis:
        self.tripwires.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.tripwires.__exit__(*exc)

    @contextlib.contextmanager
    def reported(self) -> Iterator[None]:
        """Any failure inside carries the seed, the schedule and what happened so far."""
        try:
            yield
        except Exception as error:
            error.add_note(self.report())
            raise

    def report(self) -> str:
        proxy_lines = [f"  {server}: {line}" for server, proxy in self.rig.proxied()
                       for line in proxy.history
                       if not line.endswith(f"for {GUARD_HOLD_S:g} s")]  # guards' passes
        return "\n".join([
            self.schedule.header(), "schedule (planned offsets):", *self.schedule.lines(),
            "timeline:", *self.timeline.lines(), "faults the proxies applied:", *proxy_lines,
        ])

    # Running.

    def start_fleet(self) -> None:
        nodes = self.schedule.nodes
        self.rig.fleet.start_ready(*nodes)
        wait_full_rounds(self.rig.collector.base_url, STEADY_ROUNDS, devices=len(nodes))
        self.timeline.begin()
        self.timeline.note(f"{len(nodes)} daemons steady: the schedule starts")

    def run(self) -> None:
        """Each fault, then the fleet settles, then quiet: for the fault's quiet time at
        least, and until the next fault's planned offset (t+ since start_fleet)."""
        faults = self.schedule.faults
        next_offsets = [*(fault.at for fault in faults[1:]), self.schedule.seconds]
        for number, (fault, next_at) in enumerate(zip(faults, next_offsets, strict=True), 1):
            self.timeline.note(f"#{number} {fault.describe()}")
            self.inject(fault)
            self.settle()
            keep_fault_for(max(fault.quiet, self.timeline.start + next_at - time.time()))

    def inject(self, fault: Fault) -> None:
        match fault.kind:
            case Kind.LOST_REPLY:
                self.lose_reply(fault)
            case Kind.SLOW_COMMIT:
                self.slow_commit(fault)
            case Kind.LEADER_KILL:
                self.kill_leader(fault)
            case Kind.LEADER_PAUSE:
                self.pause_leader(fault)
            case Kind.ZK_RESTART:
                self.restart_zookeeper(fault)
            case Kind.COLLECTOR_OUTAGE:
                self.collector_outage(fault)

    def lose_reply(self, fault: Fault) -> None:
        """Cut the connection after the target request lands. The outbox clean-up is told
        from a release (both touch outbox/<round>) by a guard: a pass-through rule (a 0 s
        delay) placed first on each proxy takes every release, so the cut cannot. A release
        fault armed while the guard stands waits behind it, until the clean-up is cut."""
        layout = self.rig.layout
        targets: dict[str, tuple[str, str | re.Pattern[str]]] = {
            "release": ("multi", layout.barrier),
            "candidate create": ("create", under(layout.election)),
            "reading set": ("set", layout.reading(fault.node)),
            "outbox clean-up": ("multi", under(layout.outbox)),
        }
        op, path = targets[fault.target]
        guards = [proxy.delay_reply("multi", layout.barrier, GUARD_HOLD_S, times=-1)
                  for proxy in self.rig.proxies] if fault.target == "outbox clean-up" else []
        rules = [(server, proxy.cut_after(op, path, times=1))
                 for server, proxy in self.rig.proxied()]
        self.arm(Tripwire(f"lost reply ({fault.aim})", rules, guards), fault.seconds)

    def slow_commit(self, fault: Fault) -> None:
        barrier = self.rig.layout.barrier
        rules = [(server, proxy.delay_reply("multi", barrier, seconds=SLOW_COMMIT_S, times=1))
                 for server, proxy in self.rig.proxied()]
        self.arm(Tripwire("slow commit (release)", rules, []), fault.seconds)

    def arm(self, wire: Tripwire, wait: float) -> None:
        self.tripwires.arm(wire)
        if not wire.acted.wait(wait):
            self.timeline.note(f"{wire.label}: not acted within {wait:.1f} s; stays armed")

    def leader(self) -> Daemon:
        node = wait_for(lambda: status(self.rig.observer)["leader"], LIVENESS_TIMEOUT_S,
                        "the fleet to have a leader", interval=0.5)
        return self.rig.fleet.daemons[node]

    def kill_leader(self, fault: Fault) -> None:
        victim = self.leader()
        victim.signal(signal.SIGKILL)
        victim.wait_exit()
        self.timeline.note(f"node {victim.node_id} SIGKILLed ({victim.log_file.name}); its "
                           f"reading in ZooKeeper: {self.reading_of(victim.node_id)}")
        keep_fault_for(fault.seconds)
        restarted = self.rig.fleet.start(victim.node_id)
        self.timeline.note(f"node {victim.node_id} restarted ({restarted.log_file.name})")
        restarted.wait_log(READY)

    def reading_of(self, node: str) -> str:
        """A node's reading as ZooKeeper holds it: after a SIGKILL, the count its life
        published last, which its log may not show if it died between the two."""
        zk, path = self.rig.zk, self.rig.layout.reading(node)
        with contextlib.suppress(NoNodeError):
            data: bytes = zk.retry(zk.get, path)[0]
            return data.decode(errors="replace")
        return "none"

    def pause_leader(self, fault: Fault) -> None:
        victim = self.leader()
        victim.signal(signal.SIGSTOP)
        self.timeline.note(f"node {victim.node_id} SIGSTOPped")
        keep_fault_for(fault.seconds)
        victim.signal(signal.SIGCONT)
        self.timeline.note(f"node {victim.node_id} SIGCONTinued")

    def zookeeper_server(self, role: str) -> ZkServer:
        ensemble = self.rig.ensemble
        return ensemble.leader() if role == "leader" else ensemble.followers()[0]

    def restart_zookeeper(self, fault: Fault) -> None:
        server = self.zookeeper_server(fault.target)
        server.stop()
        self.timeline.note(f"ZooKeeper server {server.myid} ({fault.target}) stopped")
        self.rig.ensemble.wait_serving(ZK_SERVING_TIMEOUT_S)
        keep_fault_for(fault.seconds)
        server.start()
        self.rig.ensemble.wait_serving(ZK_SERVING_TIMEOUT_S)
        self.timeline.note(f"ZooKeeper server {server.myid} back, the ensemble serving")

    def collector_outage(self, fault: Fault) -> None:
        self.rig.collector.take_down()
        self.timeline.note("collector stopped")
        keep_fault_for(fault.seconds)
        self.rig.collector.bring_back()
        self.timeline.note("collector back on its port and database")

    # Settling and the end.

    def released(self) -> int:
        """Rounds the fleet has released: the barrier znode's version, read straight from
        the servers (the client retries through a server restart)."""
        stat = self.rig.zk.retry(self.rig.zk.exists, self.rig.layout.barrier)
        assert stat is not None, f"{self.rig.layout.barrier} is gone"
        return int(stat.version)

    def settle(self) -> None:
        """Wait until every server serves, every process the nemesis did not stop runs,
        and the fleet released SETTLE_ROUNDS rounds: a leader is in office again."""
        self.rig.ensemble.wait_serving(ZK_SERVING_TIMEOUT_S)
        dead = [d for d in self.rig.fleet.daemons.values() if not d.running]
        assert not dead, "daemons exited by themselves: " + "; ".join(
            f"node {d.node_id} (code {d.process.returncode}), log tail:\n{d.log()[-3000:]}"
            for d in dead)
        assert self.rig.collector.running, "the collector exited by itself"
        baseline = self.released()
        wait_for(lambda: self.released() >= baseline + SETTLE_ROUNDS, LIVENESS_TIMEOUT_S,
                 f"the fleet to release {SETTLE_ROUNDS} rounds after the fault", interval=0.1)

    def finish(self) -> History:
        """Heal, let the collector catch up past the fleet's current round, stop the fleet
        cleanly, and gather the history."""
        self.tripwires.disarm_all()
        self.settle()
        target = status(self.rig.observer)["round"] + CATCH_UP_ROUNDS
        wait_caught_up(self.rig.collector.base_url, target)
        self.timeline.note(f"healed; the collector holds round {target}")
        exits = self.stop_fleet()
        rows = fetch_rounds(self.rig.collector.base_url)
        assert len(rows) >= 2, f"too few rounds stored to check: {rows}"
        return History(
            namespace=NAMESPACE, rows=rows, lives=list(self.rig.fleet.history),
            exit_codes=exits, blackouts=list(self.rig.collector.blackouts),
            counter=status(self.rig.observer)["counter"],
            published=self.rig.fleet.measurements(),
            kills=sum(1 for daemon in self.rig.fleet.history
                      if daemon.process.returncode == -signal.SIGKILL),
        )

    def stop_fleet(self) -> dict[str, int | None]:
        """SIGTERM to every running daemon; each one's exit code (None: it did not exit)."""
        running = [d for d in self.rig.fleet.daemons.values() if d.running]
        for daemon in running:
            daemon.signal(signal.SIGTERM)
        exits: dict[str, int | None] = {}
        for daemon in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                exits[daemon.log_file.name] = daemon.wait_exit(STOP_TIMEOUT_S)
            exits.setdefault(daemon.log_file.name, None)
        self.timeline.note(f"fleet stopped: {exits}")
        return exits

    def armed_summary(self) -> str:
        armed = sum(f.kind in (Kind.LOST_REPLY, Kind.SLOW_COMMIT) for f in self.schedule.faults)
        return f"{len(self.tripwires.acted)} of {armed} armed faults acted"


# ---------------------------------------------------------------- the history and its checks


@dataclass(frozen=True)
class Gap:
    seconds: float
    before: dict[str, Any]
    after: dict[str, Any]

    def describe(self) -> str:
        start, end = self.before["received_at"], self.after["received_at"]
        return (f"{self.seconds:.1f} s between round {self.before['round']} (arrived "
                f"{clock(start)}) and round {self.after['round']} (arrived {clock(end)})")


def overlap(start: float, end: float, span: tuple[float, float]) -> float:
    return max(0.0, min(end, span[1]) - max(start, span[0]))


def abbreviate(numbers: list[int], limit: int = 20) -> str:
    shown = ", ".join(map(str, numbers[:limit]))
    return shown + (f", ... ({len(numbers)} in all)" if len(numbers) > limit else "")


def log_time(line: str) -> float | None:
    found = LOG_TIME.match(line)
    return datetime.strptime(found[1], LOG_TIME_FORMAT).timestamp() if found else None


@dataclass(frozen=True)
class History:
    namespace: str
    rows: list[dict[str, Any]]
    lives: list[Daemon]
    exit_codes: dict[str, int | None]
    blackouts: list[tuple[float, float]]
    counter: int
    published: int
    kills: int

    # Evidence from the daemons' logs.

    def evidence(self, keep: Callable[[str], bool]) -> str:
        """The daemons' log lines that `keep` picks, in time order across all lives."""
        picked = sorted(((log_time(line) or 0.0, daemon.log_file.name, line)
                         for daemon in self.lives for line in daemon.log().splitlines()
                         if keep(line)), key=lambda item: item[0])
        lines = [f"    {name}: {line}" for _, name, line in picked[:EVIDENCE_LINES]]
        more = len(picked) - EVIDENCE_LINES
        return "\n".join(lines + ([f"    ... {more} more"] if more > 0 else []))

    def mentions(self, pattern: str) -> str:
        regex = re.compile(pattern)
        return self.evidence(lambda line: bool(regex.search(line)))

    # 1. every round, once, in one incarnation.

    def lineages(self) -> dict[tuple[str, str], list[int]]:
        rounds: dict[tuple[str, str], list[int]] = defaultdict(list)
        for row in self.rows:
            rounds[(row.get("fleet") or "", row.get("incarnation") or "")].append(row["round"])
        return {key: sorted(numbers) for key, numbers in rounds.items()}

    def rounds_problem(self) -> str | None:
        problems = []
        lineages = self.lineages()
        if len(lineages) != 1 or next(iter(lineages))[0] != self.namespace:
            problems.append(f"expected one lineage ({self.namespace}, <incarnation>), the "
                            "collector holds: " + "; ".join(
                                f"{key}: rounds {numbers[0]}..{numbers[-1]}"
                                for key, numbers in lineages.items()))
        for key, numbers in lineages.items():
            lost, duplicated = missing(numbers), twice(numbers)
            if lost:
                problems.append(f"{key}: rounds lost between {numbers[0]} and {numbers[-1]}: "
                                f"{abbreviate(lost)}\n"
                                + self.mentions(rf"\bround ({'|'.join(map(str, lost[:3]))})\b"))
            if duplicated:
                problems.append(f"{key}: rounds stored twice: {abbreviate(duplicated)}")
        return "\n".join(problems) or None

    # 2. one leader per epoch.

    def announced(self) -> dict[int, list[tuple[str, str]]]:
        """epoch -> (node, log file) of every `I am the leader now (epoch N` line."""
        epochs: dict[int, list[tuple[str, str]]] = defaultdict(list)
        for daemon in self.lives:
            for epoch in TAKING_OFFICE.findall(daemon.log()):
                epochs[int(epoch)].append((daemon.node_id, daemon.log_file.name))
        return epochs

    def epochs_problem(self) -> str | None:
        stored: dict[int, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        for row in self.rows:
            stored[row["epoch"]][row["leader"]].append(row["round"])
        announced = self.announced()
        shared = {epoch: leaders for epoch, leaders in stored.items() if len(leaders) > 1}
        twice_announced = {epoch: who for epoch, who in announced.items() if len(who) > 1}
        unannounced = sorted((epoch, leader) for epoch, leaders in stored.items()
                             for leader in leaders
                             if leader not in {node for node, _ in announced.get(epoch, [])})
        problems = []
        if shared:
            problems.append("stored rounds name several leaders under one epoch: " + "; ".join(
                f"epoch {epoch}: {by_leader(shared[epoch])}" for epoch in sorted(shared)))
        if twice_announced:
            problems.append(f"epochs taken more than once: {twice_announced}")
        if unannounced:
            problems.append("stored rounds whose leader never announced their epoch "
                            f"(epoch, leader): {unannounced}")
        if not problems:
            return None
        epochs = sorted({*shared, *twice_announced, *(epoch for epoch, _ in unannounced)})[:5]
        odd_rounds = [n for epoch, leader in unannounced for n in stored[epoch][leader]][:3]
        pattern = "|".join([rf"epoch ({'|'.join(map(str, epochs))})\b",
                            *(rf"\bround {n}\b|\({n}\.\.|\.\.{n}\)" for n in odd_rounds)])
        return "\n".join(problems) + "\n" + self.mentions(pattern)

    def epoch_range(self) -> tuple[int, int]:
        epochs = [row["epoch"] for row in self.rows]
        return min(epochs), max(epochs)

    # 3. the longest leaderless gap.

    def longest_gap(self) -> Gap:
        """The largest gap in arrival time between consecutive stored rounds, less the spans
        in which the collector was down on purpose (and the courier's way back from it)."""
        arrivals = sorted(self.rows, key=lambda row: row["received_at"])
        gaps = []
        for before, after in itertools.pairwise(arrivals):
            start, end = before["received_at"], after["received_at"]
            hidden = sum(overlap(start, end, span) for span in self.blackouts)
            gaps.append(Gap(end - start - hidden, before, after))
        return max(gaps, key=lambda gap: gap.seconds)

    def gap_problem(self) -> str | None:
        gap = self.longest_gap()
        if gap.seconds < LEADERLESS_GAP_S:
            return None
        start, end = gap.before["received_at"], gap.after["received_at"]

        def in_gap(line: str) -> bool:
            at = log_time(line)
            return (at is not None and start <= at <= end
                    and bool(re.search(r"WARNING|ERROR|leader", line)))

        outages = ", ".join(f"{clock(down)}-{clock(up)}" for down, up in self.blackouts)
        return (f"leaderless for {gap.describe()} (collector outages taken out: "
                f"{outages or 'none'}); bound {LEADERLESS_GAP_S:.1f} s\n" + self.evidence(in_gap))

    # 4. the counter.

    def counter_problem(self) -> str | None:
        unclean = {name: code for name, code in self.exit_codes.items() if code != 0}
        if unclean:
            return f"the fleet did not stop cleanly on SIGTERM (exit codes): {unclean}"
        # A SIGKILL between ZooKeeper taking a reading and the node logging it leaves one
        # reading counted but not logged: at most one per kill, never one missing.
        if self.published <= self.counter <= self.published + self.kills:
            return None
        lives = "\n".join(
            f"    {daemon.log_file.name}: {len(MEASURED.findall(daemon.log()))} logged, the "
            f"last: {(MEASURED_LINE.findall(daemon.log()) or ['none'])[-1]}"
            for daemon in self.lives)
        return (f"counter {self.counter} != {self.published} readings published; per process "
                f"life (compare a SIGKILLed life's last line with its reading in the "
                f"timeline):\n{lives}\n"
                + self.mentions(r"session lost|counter|shard|replacing reading"))

    def summary(self, schedule: Schedule, acted: str) -> str:
        numbers = [n for rounds in self.lineages().values() for n in rounds]
        lost = sum(len(missing(rounds)) for rounds in self.lineages().values())
        duplicated = sum(len(twice(rounds)) for rounds in self.lineages().values())
        first_epoch, last_epoch = self.epoch_range()
        relation = "=" if self.counter == self.published else "!="
        return (f"NEMESIS seed {schedule.seed}: {len(schedule.faults)} faults "
                f"({fault_counts(schedule)}; {acted}), rounds {min(numbers)}..{max(numbers)}, "
                f"lost {lost}, duplicated {duplicated}, longest gap "
                f"{self.longest_gap().seconds:.1f} s, epochs {first_epoch}..{last_epoch}, "
                f"counter {self.counter} {relation} published {self.published}")


def by_leader(leaders: dict[str, list[int]]) -> str:
    return ", ".join(f"leader {leader} rounds {abbreviate(sorted(rounds), 5)}"
                     for leader, rounds in sorted(leaders.items()))


def missing(numbers: list[int]) -> list[int]:
    return sorted(set(range(numbers[0], numbers[-1] + 1)) - set(numbers))


def twice(numbers: list[int]) -> list[int]:
    return sorted(n for n, times in Counter(numbers).items() if times > 1)

"""What a fleet costs and how it keeps time, on a 3-server ZooKeeper ensemble on loopback.

    python bench/fleet_cost.py              # every scenario, one table (about 8 minutes)
    python bench/fleet_cost.py --only real300 --window 600   # the 10-minute cadence run

Scenarios, each in its own namespace, all delivering to one HTTP receiver:
- real processes (`zk-sensor`) at 3 devices (period 5 s: the idle figures), 100 and 300
  (period 1 s); and at 3 devices again under Debian's /usr/bin/python3, the interpreter
  Ansible deploys on (this venv's may be another build: pyenv's, without PGO, costs about
  1 MiB and some CPU more), importing the same code;
- the swarm (bench/swarm.py: the daemon's own Node, many in one process) at 100 and 300
  (period 1 s), to compare with real processes, and 1,000 at period 5 s; after the 1,000
  run every session expires at once (the whole fleet frozen past its session timeout)
  and the time until a round counts every device again is measured. A swarm node costs
  about 1.2 ms of CPU per round (kazoo's Python), so 1,000 at 1 s or 5,000 at 5 s would
  need this whole 2-core machine for the devices alone, ensemble not counted;
- the leader alone against 1,000 and 5,000 readings (its collection and commit);
- the seed's design (bench/seed.py) at 100 and 1,000, on the same ensemble.

In every swarm scenario the leader is a real `zk-sensor` process started first, so the
leader's figures are a real daemon's. Targets are printed beside the figures; nothing
here fails on a target (the table is the result).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from kazoo.client import KazooClient

# bench/seed.py, next to this script: Python puts a script's directory first on sys.path.
from seed import run_seed

from zk_sensor.fleet.readings import encode_reading
from zk_sensor.testing.fleet import Receiver, wait_for
from zk_sensor.testing.zookeeper import ZkEnsemble

HERE = Path(__file__).resolve().parent

BIN = Path(sys.executable).parent
# The interpreter of the machines Ansible deploys on (the zk_sensor role's venv is made
# from it), run with this venv's packages: the same code, Debian's build of CPython.
SYSTEM_PYTHON = Path("/usr/bin/python3")
SITE_PACKAGES = sysconfig.get_paths()["purelib"]
DAEMON_PACKAGE = HERE.parent / "daemon"
TICKS = os.sysconf("SC_CLK_TCK")
SESSION_TIMEOUT = 10.0
SWARM_PROCESSES = os.cpu_count() or 1
ROUND_LINE = re.compile(r"round (\d+): mean \S+ over (\d+) devices .*; slowest ([\d.]+) s, "
                        r"leader (\d+) ms")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mib(pid: int) -> float:
    found = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(found.group(1)) / 1024 if found else 0.0


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))] if ordered else 0.0


@dataclass
class Row:
    scenario: str
    devices: int
    period: float
    rounds: int = 0
    complete: int = 0
    cadence: float = 0.0
    drift: float = 0.0
    spread_p99: float = 0.0
    work_p50: float = 0.0
    work_p99: float = 0.0
    writes: float = 0.0
    cpu_round_ms: float = 0.0
    idle_percent: float = 0.0
    rss_mib: float = 0.0
    leader_rss_mib: float = 0.0
    has_devices: bool = True
    notes: list[str] = field(default_factory=list)


@dataclass
class Bench:
    ensemble: ZkEnsemble
    receiver: Receiver
    work_dir: Path
    window: float
    admin: KazooClient

    def zxid(self) -> int:
        reply = self.ensemble.leader().four_letter("srvr") or ""
        found = re.search(r"Zxid: 0x([0-9a-f]+)", reply)
        return int(found.group(1), 16) & 0xFFFFFFFF if found else 0

    def prepare(self, namespace: str, period: float) -> None:
        self.admin.ensure_path(f"{namespace}/config")
        self.admin.create(f"{namespace}/config/sampling_period", str(period).encode())

    def start_daemon(self, namespace: str, node_id: str,
                     python: Path | None = None) -> subprocess.Popen[bytes]:
        """`zk-sensor`, or the same code under another interpreter (`python`)."""
        log_file = self.work_dir / f"{namespace.strip('/')}-{node_id}.log"
        program, env = [str(BIN / "zk-sensor")], None
        if python is not None:
            program = [str(python), "-c",
                       "import sys; from zk_sensor.node.startup import main; sys.exit(main())"]
            env = {**os.environ, "PYTHONPATH": f"{DAEMON_PACKAGE}{os.pathsep}{SITE_PACKAGES}"}
        command = [*program, "--id", node_id, "--zookeeper", self.ensemble.hosts,
                   "--namespace", namespace, "--api-url", self.receiver.url("/rounds"),
                   "--session-timeout", str(SESSION_TIMEOUT), "--log-level", "info"]
        with log_file.open("wb") as sink:
            return subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)

    def log_of(self, namespace: str, node_id: str) -> str:
        return (self.work_dir / f"{namespace.strip('/')}-{node_id}.log").read_text()

    def start_leader(self, namespace: str) -> subprocess.Popen[bytes]:
        leader = self.start_daemon(namespace, "lead")
        wait_for(lambda: "I am the leader now" in self.log_of(namespace, "lead"), 60,
                 f"the leader of {namespace}")
        return leader

    def start_swarm(self, namespace: str, count: int, period: float) -> list[subprocess.Popen]:
        """One swarm process per core: a swarm runs on one core, and a fleet's devices
        react in parallel."""
        processes = []
        share = -(-count // SWARM_PROCESSES)
        for first in range(1, count + 1, share):
            command = [sys.executable, str(HERE / "swarm.py"), "--zookeeper",
                       self.ensemble.hosts, "--namespace", namespace,
                       "--count", str(min(share, count + 1 - first)), "--first", str(first),
                       "--sampling-period", str(period), "--api-url", self.receiver.url("/rounds"),
                       "--session-timeout", str(SESSION_TIMEOUT)]
            log_file = self.work_dir / f"{namespace.strip('/')}-swarm-{first}.log"
            with log_file.open("w") as sink:
                processes.append(subprocess.Popen(command, stdout=sink,
                                                  stderr=subprocess.STDOUT))
        return processes

    def rounds_of(self, namespace: str, since: float = 0.0) -> list[dict]:
        return [d.body for d in self.receiver.snapshot()
                if d.body and d.body.get("fleet") == namespace and d.body["time"] >= since]

    def wait_whole(self, namespace: str, devices: int, timeout: float,
                   since: float = 0.0) -> float:
        """Until a round counts every device; returns when that round closed."""
        def whole() -> float:
            done = [r for r in self.rounds_of(namespace, since) if r["count"] == devices]
            return done[0]["time"] if done else 0.0
        return wait_for(whole, timeout, f"a round of {namespace} counting {devices} devices",
                        interval=0.2)

    def became_whole(self, row: Row, namespace: str, timeout: float) -> bool:
        """False, with a note in the table, for a fleet that never had a whole round."""
        try:
            self.wait_whole(namespace, row.devices, timeout)
        except AssertionError:
            counts = [r["count"] for r in self.rounds_of(namespace)[-20:]]
            row.notes.append(f"{row.scenario} at {row.devices}: no round counted every device "
                             f"within {timeout:.0f} s (last counts {counts}); not measured")
            return False
        return True

    def measure(self, row: Row, namespace: str, leader: subprocess.Popen[bytes],
                followers: list[int], follower_devices: int) -> None:
        """One window: CPU of leader and followers, zxid, rounds delivered in it."""
        before = {pid: cpu_seconds(pid) for pid in followers}
        zxid, started = self.zxid(), time.time()
        time.sleep(self.window)
        ended = time.time()
        writes, spent = self.zxid() - zxid, sum(cpu_seconds(p) - before[p] for p in followers)
        rounds = [r for r in self.rounds_of(namespace, started) if r["time"] < ended]
        row.rounds = len(rounds)
        row.complete = sum(r["count"] == row.devices for r in rounds)
        if len(rounds) >= 2:
            times = [r["time"] for r in rounds]
            row.cadence = (times[-1] - times[0]) / (len(times) - 1)
            row.drift = max(abs(t - (times[0] + k * row.period)) for k, t in enumerate(times))
        numbers = {r["round"] for r in rounds}
        lines = [m for m in ROUND_LINE.finditer(self.log_of(namespace, "lead"))
                 if int(m.group(1)) in numbers]
        spreads = [float(m.group(3)) for m in lines]
        works = [float(m.group(4)) for m in lines]
        row.spread_p99 = p99(spreads)
        row.work_p50 = statistics.median(works) if works else 0.0
        row.work_p99 = p99(works)
        device_rounds = max(1, row.devices * len(rounds))
        row.writes = writes / device_rounds
        row.cpu_round_ms = 1000 * spent / max(1, follower_devices * len(rounds))
        row.idle_percent = 100 * spent / (ended - started) / max(1, follower_devices)
        row.leader_rss_mib = rss_mib(leader.pid)


def stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGCONT)
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def real_processes(bench: Bench, devices: int, period: float,
                   python: Path | None = None) -> Row:
    """Followers under this venv's interpreter, or under `python`; the leader under ours."""
    namespace = f"/bench-real-{devices}{'-system' if python else ''}"
    row = Row(f"real processes{f' ({python})' if python else ''}", devices, period)
    bench.prepare(namespace, period)
    leader = bench.start_leader(namespace)
    followers = []
    try:
        for number in range(1, devices):
            followers.append(bench.start_daemon(namespace, f"p{number:04d}", python))
        if not bench.became_whole(row, namespace, timeout=240):
            return row
        bench.measure(row, namespace, leader, [p.pid for p in followers], devices - 1)
        row.rss_mib = statistics.median(rss_mib(p.pid) for p in followers)
    finally:
        stop([*followers, leader])
    return row


def swarm(bench: Bench, devices: int, period: float, expire: bool = False) -> Row:
    namespace = f"/bench-swarm-{devices}"
    row = Row("swarm", devices, period)
    bench.prepare(namespace, period)
    leader = bench.start_leader(namespace)
    crowd = bench.start_swarm(namespace, devices - 1, period)
    try:
        if not bench.became_whole(row, namespace, timeout=300):
            return row
        bench.measure(row, namespace, leader, [p.pid for p in crowd], devices - 1)
        row.rss_mib = sum(rss_mib(p.pid) for p in crowd) / (devices - 1)
        if expire:
            row.notes.append(expire_every_session(bench, namespace, devices, [leader, *crowd]))
    finally:
        stop([*crowd, leader])
    return row


def leader_alone(bench: Bench, devices: int, period: float) -> Row:
    """The leader's round against N readings that stand still (written once, for an old
    round): its collection reads and decodes every one of them as in a live fleet, without
    a crowd of devices taking the CPU a real fleet would spend on other machines."""
    namespace = f"/bench-leader-{devices}"
    row = Row("leader alone, N readings", devices, period, has_devices=False)
    bench.prepare(namespace, period)
    leader = bench.start_leader(namespace)
    writer = KazooClient(hosts=bench.ensemble.hosts)
    writer.start(timeout=15)
    try:
        payload = encode_reading(80.0, time.time(), 0, 1)
        for future in [writer.create_async(f"{namespace}/readings/still{number:05d}", payload,
                                           ephemeral=True) for number in range(1, devices)]:
            future.get(timeout=30)
        late = re.compile(rf"\[{devices - 1} from nodes gone\]")
        wait_for(lambda: late.search(bench.log_of(namespace, "lead")), 60,
                 f"a round reading {devices} readings")
        bench.measure(row, namespace, leader, [], 0)
        row.complete = row.rounds
        row.notes.append(f"leader alone at {devices:,}: each round read {devices:,} readings "
                         "(all but its own from an old round of nodes gone)")
    finally:
        writer.stop()
        writer.close()
        stop([leader])
    return row


def expire_every_session(bench: Bench, namespace: str, devices: int,
                         processes: list[subprocess.Popen]) -> str:
    """Freeze the whole fleet past its session timeout, so every session expires on the
    server at once, then let it go and time the way back to a whole round."""
    for process in processes:
        process.send_signal(signal.SIGSTOP)
    time.sleep(SESSION_TIMEOUT * 1.5)
    resumed = time.time()
    for process in processes:
        process.send_signal(signal.SIGCONT)
    target = f"(target: within {2 * SESSION_TIMEOUT:.0f} s)"
    try:
        whole_at = bench.wait_whole(namespace, devices, timeout=120, since=resumed)
    except AssertionError:
        return f"all {devices} sessions expired: not whole again within 120 s {target}"
    return (f"all {devices} sessions expired: whole again {whole_at - resumed:.1f} s after "
            f"resuming {target}")


def seed_rows(bench: Bench, devices: int) -> Row:
    result = run_seed(bench.ensemble.hosts, devices, rounds=5, period=1.0,
                      namespace=f"/bench-seed-{devices}")
    row = Row("seed's design", devices, 1.0, rounds=result.rounds,
              complete=result.complete_rounds)
    row.work_p50 = statistics.median(result.leader_round_ms)
    row.work_p99 = p99(result.leader_round_ms)
    row.writes = result.writes_per_round / devices
    row.notes.append(f"seed: {result.cas_retries_per_round:.0f} counter CAS retries per round")
    return row


SCENARIOS = {
    "real3": lambda b: real_processes(b, 3, 5.0),
    "real3system": lambda b: real_processes(b, 3, 5.0, SYSTEM_PYTHON),
    "real100": lambda b: real_processes(b, 100, 1.0),
    "real300": lambda b: real_processes(b, 300, 1.0),
    "swarm100": lambda b: swarm(b, 100, 1.0),
    "swarm300": lambda b: swarm(b, 300, 1.0),
    "swarm1000": lambda b: swarm(b, 1000, 5.0, expire=True),
    "leader1000": lambda b: leader_alone(b, 1000, 1.0),
    "leader5000": lambda b: leader_alone(b, 5000, 5.0),
    "seed100": lambda b: seed_rows(b, 100),
    "seed1000": lambda b: seed_rows(b, 1000),
}


def render(rows: list[Row]) -> str:
    header = ("| scenario | devices | period | rounds complete | cadence (drift max) | "
              "release to last reading p99 | leader round p50 / p99 | writes per device-round"
              " | CPU per device-round | CPU idle per device | RSS per device (leader) |")
    lines = [header, "|" + "---|" * 11]
    for r in rows:
        ours = r.scenario != "seed's design"
        devices = ours and r.has_devices
        lines.append(
            f"| {r.scenario} | {r.devices:,} | {r.period:g} s | {r.complete}/{r.rounds} | "
            + (f"{r.cadence:.3f} s ({r.drift * 1000:.0f} ms) | " if ours else "- | ")
            + (f"{r.spread_p99:.2f} s | " if devices else "- | ")
            + f"{r.work_p50:.0f} / {r.work_p99:.0f} ms | "
            + (f"{r.writes:.2f} | " if devices or not ours else "- | ")
            + (f"{r.cpu_round_ms:.2f} ms | {r.idle_percent:.2f} % | {r.rss_mib:.1f} MiB "
               if devices else "- | - | - ")
            + (f"({r.leader_rss_mib:.1f}) |" if ours else "|"))
    notes = [note for r in rows for note in r.notes] + seed_ratios(rows)
    targets = [
        "targets: at 5 s an idle daemon <= 1 % of a core; <= 2 ms CPU per device-round; "
        "<= 30 MiB per daemon; cadence within 1 % of the period; release to last reading "
        "< 30 % of the period; leader round <= 50 ms at 1,000 and <= 250 ms at 5,000; "
        "<= 1.2 writes per device-round; ours >= 10x faster than the seed in the leader's round",
    ]
    return "\n".join([*lines, "", *notes, *targets])


def seed_ratios(rows: list[Row]) -> list[str]:
    """The seed's leader round over ours at the same fleet size (p50; ours from the
    swarm, whose leader is a real process, or else the leader alone)."""
    notes = []
    for seed in (r for r in rows if r.scenario == "seed's design"):
        ours = next((r for r in rows if r.devices == seed.devices and r.scenario in
                     ("swarm", "leader alone, N readings") and r.work_p50 > 0), None)
        if ours is not None:
            notes.append(f"leader round at {seed.devices:,}: the seed's {seed.work_p50:.0f} ms, "
                         f"ours ({ours.scenario}) {ours.work_p50:.0f} ms: "
                         f"{seed.work_p50 / ours.work_p50:.1f}x")
    return notes


def machine() -> str:
    model = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
    memory = re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())
    return (f"{os.cpu_count()} cores ({model.group(1).strip() if model else '?'}), "
            f"{int(memory.group(1)) / 2**20:.0f} GiB" if memory else "")


@contextlib.contextmanager
def running_bench(window: float) -> Iterator[Bench]:
    with tempfile.TemporaryDirectory(prefix="zk-sensor-bench-") as scratch:
        ensemble = ZkEnsemble(Path(scratch) / "zk", n=3)
        ensemble.start()
        admin = KazooClient(hosts=ensemble.hosts)
        try:
            ensemble.wait_serving(60)
            admin.start(timeout=15)
            with Receiver() as receiver:
                yield Bench(ensemble, receiver, Path(scratch), window, admin)
        finally:
            admin.stop()
            admin.close()
            ensemble.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/fleet_cost.py", description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", choices=SCENARIOS, help="scenarios to run")
    parser.add_argument("--window", type=float, default=30.0,
                        help="seconds measured per scenario, after the fleet is whole")
    options = parser.parse_args(argv)
    started = time.monotonic()
    rows = []
    with running_bench(options.window) as bench:
        for name in options.only or SCENARIOS:
            print(f"fleet bench: {name} ...", flush=True)
            rows.append(SCENARIOS[name](bench))
    print(f"\nfleet benchmark on {machine()}, 3-server ZooKeeper ensemble on loopback, "
          f"{time.monotonic() - started:.0f} s\n")
    print(render(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Baseline: the seed's design, run on a real ensemble so the fleet benchmark can print its
figures beside ours.

The seed (a university practical) used kazoo's recipes as they come:

- each device publishes its reading (random 75..85, as text) in the ephemeral znode
  `<ns>/mediciones/app<id>`: created once, then `set` once per measurement;
- it counts every measurement with kazoo's `Counter` on `<ns>/counter`: a get, then a set
  conditional on the version read, retried by `client.retry` whenever another device won;
- kazoo's `Barrier` on `<ns>/barrier` paces the fleet: the leader creates it, waits one
  period, aggregates and deletes it, which releases every device waiting on it;
- the leader lists `<ns>/mediciones` and reads the readings one blocking `get` at a time.

What is measured (the first round is a warm-up and is left out):

- the leader's work per round, as for ours (collection and commit): the release that
  opened the round (deleting the barrier, then creating it again: two writes, as our one
  transaction is one), then the listing, the sequential gets and the mean; not the wait;
- ZooKeeper write transactions per round, from the zxid of a marker znode the leader sets
  just before the first measured release and just after the last measured round. The
  zxid's low 32 bits count every transaction the quorum agreed on, including the error
  transactions of conditional sets that lost (ZooKeeper logs those too), so this is the
  load the ensemble really carried: about 2 per device that measured, plus the retries,
  plus the barrier's create and delete;
- failed compare-and-set attempts on the counter per round, summed over devices;
- complete rounds: the leader found a reading from every device written after the release
  that opened the round (znode mzxid above the zxid of the barrier's deletion).

Processes and sessions: the leader runs in the caller's process with a session of its own;
the devices run in one child process, a thread each, sharing a `KazooClient` in groups of
`DEVICES_PER_CLIENT` (20). With the devices in its process, the leader's blocking gets each
waited behind the device threads for the interpreter lock (some 30 ms a get at 1000
devices): that measured Python, not the seed, whose leader had a machine of its own.
Grouping, because a client costs three threads and a socket, and 1000 of them would swamp
a two-core box with scheduling rather than ZooKeeper work. Contention is unchanged in
kind: the devices of a group pipeline their gets and sets on one connection, so two of
them can read the same version and one loses, exactly as across groups. What grouping
changes: ZooKeeper orders a session's requests, so a device's get may queue behind its
group's pending sets, and there are N/20 sessions instead of N. The device threads also
share one interpreter lock, which slows each device's requests; both effects mean fewer
collisions per second than N real devices would cause, so the retry figure is if anything
an underestimate.

Before the warm-up round the leader waits (at most `READY_TIMEOUT_S`) for every device to
have counted its first reading, so the start-up stampede on the counter settles first as
far as it can.

The Counter's retry policy is kazoo's default (unbounded tries, 0.1 s doubling backoff,
40% jitter, sleeping up to an hour); the only change is that the device clients sleep on
the stop event, so that devices in that backoff stop with the run instead of minutes later.
(kazoo's own `interrupt` hook would wake each sleeping device ten times a second: at 1000
devices, about half a core.)
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, NoNodeError
from kazoo.handlers.threading import SequentialThreadingHandler
from kazoo.protocol.states import ZnodeStat
from kazoo.recipe.barrier import Barrier
from kazoo.recipe.counter import Counter
from kazoo.retry import ForceRetryError

BENCH = Path(__file__).resolve().parent
# A child interpreter, not multiprocessing: spawn would re-import the caller's main script
# and fork would copy the locks of the caller's threads.
DEVICE_PROCESS = (
    "import sys; sys.path.insert(0, sys.argv[1]); import seed; seed.serve_devices(sys.argv[2:])"
)
DEVICES_PER_CLIENT = 20
STACK_BYTES = 256 * 1024
CONNECT_TIMEOUT_S = 15.0
READY_TIMEOUT_S = 30.0
ROUND_SLACK_S = 10.0
JOIN_TIMEOUT_S = 15.0
POLL_S = 0.05
ENSEMBLE_TIMEOUT_S = 60.0
READING_LOW, READING_HIGH = 75.0, 85.0
LOW_32_BITS = 0xFFFFFFFF

log = logging.getLogger(__name__)


@dataclass
class SeedResult:
    devices: int
    rounds: int  # measured rounds the leader completed (the warm-up is not one)
    leader_round_ms: list[float]  # per round: list + sequential gets + mean, not the wait
    writes_per_round: float  # ZooKeeper transactions, all clients, failed CAS sets included
    cas_retries_per_round: float  # failed compare-and-set attempts, summed over devices
    complete_rounds: int  # rounds whose read found a fresh reading from every device


@dataclass(frozen=True)
class Layout:
    """The seed's znodes under one namespace."""

    namespace: str

    @property
    def readings(self) -> str:
        return f"{self.namespace}/mediciones"

    @property
    def barrier(self) -> str:
        return f"{self.namespace}/barrier"

    @property
    def counter(self) -> str:
        return f"{self.namespace}/counter"

    @property
    def marker(self) -> str:
        return f"{self.namespace}/marker"


def start_client(hosts: str, wake: threading.Event | None = None) -> KazooClient:
    """A started client; with `wake`, its retries sleep until the timeout or `wake` is set.

    kazoo builds the client's default retries with the handler's sleep, so the policy
    stays kazoo's own.
    """
    handler = SequentialThreadingHandler()
    if wake is not None:
        handler.sleep_func = wake.wait
    client = KazooClient(hosts=hosts, handler=handler)
    try:
        client.start(timeout=CONNECT_TIMEOUT_S)
    except BaseException:
        close_client(client)
        raise
    return client


def close_client(client: KazooClient) -> None:
    with contextlib.suppress(KazooException):
        client.stop()
    client.close()


# The device process.


class Tally:
    """A count the device threads add to."""

    def __init__(self) -> None:
        self._value = 0
        self._lock = threading.Lock()

    @property
    def value(self) -> int:
        return self._value

    def add(self) -> None:
        with self._lock:
            self._value += 1


class StoppedError(KazooException):
    """The run is over: not one of the errors `client.retry` retries, so it ends the loop."""


class CountingCounter(Counter):
    """kazoo's Counter, tallying each compare-and-set that lost the race.

    Counter turns the losing set's BadVersionError into ForceRetryError for `client.retry`,
    so each ForceRetryError leaving `_inner_change` is exactly one failed attempt, and the
    retrying itself stays kazoo's.
    """

    def __init__(self, client: KazooClient, path: str, retries: Tally,
                 stop: threading.Event) -> None:
        super().__init__(client, path)
        self._retries = retries
        self._stop = stop

    def _inner_change(self, value: int) -> None:
        if self._stop.is_set():
            raise StoppedError
        try:
            super()._inner_change(value)
        except ForceRetryError:
            self._retries.add()
            raise


@dataclass
class Fleet:
    """What the device threads share."""

    layout: Layout
    deadline: float
    # Set once every thread exists: threads started while others already contend for the
    # interpreter start slowly (38 s for 1000), and the fleet should start at once anyway.
    go: threading.Event
    stop: threading.Event
    ready: Tally
    retries: Tally

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())


def reading() -> bytes:
    return f"{random.uniform(READING_LOW, READING_HIGH):.2f}".encode()


def device(client: KazooClient, device_id: int, fleet: Fleet) -> None:
    """The seed's device loop: publish, count, wait for the barrier; once per release."""
    path = f"{fleet.layout.readings}/app{device_id}"
    barrier = Barrier(client, fleet.layout.barrier)
    counter = CountingCounter(client, fleet.layout.counter, fleet.retries, fleet.stop)
    if not fleet.go.wait(fleet.remaining()) or fleet.stop.is_set():
        return
    try:
        client.create(path, reading(), ephemeral=True)
        counter += 1
        fleet.ready.add()
        while barrier.wait(timeout=fleet.remaining()) and not fleet.stop.is_set():
            client.set(path, reading())
            counter += 1
    except KazooException as exc:
        # Stopping ends devices in the Counter's backoff; only other errors matter.
        if not fleet.stop.is_set():
            log.warning("device %d failed: %r", device_id, exc)


def serve_devices(argv: list[str]) -> None:
    """Run the devices until stdin closes, answering each line with "<ready> <retries>".

    The pipe is the whole protocol: the leader asks for the tallies at its markers, and
    its exit, clean or not, closes stdin and so stops the fleet.
    """
    hosts, devices, namespace, seconds = argv[0], int(argv[1]), argv[2], float(argv[3])
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s seed devices: %(message)s")
    logging.getLogger("kazoo").setLevel(logging.ERROR)
    threading.stack_size(STACK_BYTES)
    fleet = Fleet(Layout(namespace), time.monotonic() + seconds, threading.Event(),
                  threading.Event(), Tally(), Tally())
    clients: list[KazooClient] = []
    threads: list[threading.Thread] = []
    try:
        clients = [start_client(hosts, fleet.stop)
                   for _ in range(math.ceil(devices / DEVICES_PER_CLIENT))]
        threads = [
            threading.Thread(target=device, args=(clients[i // DEVICES_PER_CLIENT], i, fleet),
                             name=f"seed-device-{i}", daemon=True)
            for i in range(devices)
        ]
        for thread in threads:
            thread.start()
        fleet.go.set()
        for _ in sys.stdin:
            print(fleet.ready.value, fleet.retries.value, flush=True)
    finally:
        fleet.stop.set()
        fleet.go.set()
        if clients:
            # Devices waiting on the barrier would otherwise see the stop only at the deadline.
            with contextlib.suppress(KazooException):
                clients[0].delete(fleet.layout.barrier)
        join_by = time.monotonic() + JOIN_TIMEOUT_S
        for thread in threads:
            thread.join(max(0.0, join_by - time.monotonic()))
        for client in clients:
            close_client(client)


# The leader, in the caller's process.


class Devices:
    """The device process, seen from the leader."""

    def __init__(self, hosts: str, devices: int, layout: Layout, seconds: float) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", DEVICE_PROCESS, str(BENCH), hosts, str(devices),
             layout.namespace, str(seconds)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )

    def tallies(self) -> tuple[int, int]:
        """Devices that counted their first reading, and failed compare-and-sets so far."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline().split()
        if len(answer) != 2:
            raise RuntimeError(f"device process gone (exit {self.process.poll()})")
        return int(answer[0]), int(answer[1])

    def wait_ready(self, devices: int) -> None:
        """Let the fleet's first, simultaneous increments settle before the warm-up round.

        Bounded: at 1000 devices the seed's counter may not catch up, and then the measured
        rounds start with stragglers, as the seed's own would.
        """
        deadline = time.monotonic() + READY_TIMEOUT_S
        while (ready := self.tallies()[0]) < devices and time.monotonic() < deadline:
            time.sleep(POLL_S)
        if ready < devices:
            log.warning("%d of %d devices had counted their first reading after %.0f s",
                        ready, devices, READY_TIMEOUT_S)

    def stop(self) -> None:
        """Close the pipe, which stops the fleet; kill it if it does not stop in time."""
        with contextlib.suppress(OSError):
            if self.process.stdin is not None:
                self.process.stdin.close()
        try:
            self.process.wait(JOIN_TIMEOUT_S + CONNECT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.warning("device process did not stop in time; killing it")
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


@dataclass
class RoundRead:
    elapsed_ms: float
    mean: float
    stats: list[ZnodeStat]


class Leader:
    """The seed's leader, plus the markers and clocks the benchmark needs."""

    def __init__(self, client: KazooClient, layout: Layout) -> None:
        self.client = client
        self.layout = layout
        self.barrier = Barrier(client, layout.barrier)

    def prepare(self) -> None:
        """A clean namespace with the barrier up before any device can reach it.

        A device that finds no barrier passes straight through, so it must exist first.
        """
        self.remove_namespace()
        for path in (self.layout.readings, self.layout.counter, self.layout.marker):
            self.client.ensure_path(path)
        self.barrier.create()

    def remove_namespace(self) -> None:
        with contextlib.suppress(NoNodeError):
            self.client.delete(self.layout.namespace, recursive=True)

    def mark(self) -> int:
        """zxid of a write of our own: the edges of the measured window."""
        return self.client.set(self.layout.marker, b"").mzxid

    def open_round(self) -> tuple[int, float]:
        """Delete the barrier, freeing every device, and put it up again for the next
        round: the seed's commit. The zxid of the deletion, and the milliseconds taken.

        Only this thread sends requests on the leader's client, so the last reply it saw
        after the remove is the deletion's.
        """
        begin = time.perf_counter()
        self.barrier.remove()
        released = self.client.last_zxid
        self.barrier.create()
        return released, (time.perf_counter() - begin) * 1000.0

    def read(self) -> RoundRead:
        """The seed's aggregation: list, then one blocking get after another."""
        begin = time.perf_counter()
        values: list[float] = []
        stats: list[ZnodeStat] = []
        for child in self.client.get_children(self.layout.readings):
            with contextlib.suppress(NoNodeError):
                data, stat = self.client.get(f"{self.layout.readings}/{child}")
                values.append(float(data))
                stats.append(stat)
        mean = statistics.fmean(values) if values else math.nan
        return RoundRead((time.perf_counter() - begin) * 1000.0, mean, stats)


def windowed_writes(first_zxid: int, last_zxid: int) -> float:
    """Transactions strictly between our two marker writes.

    A leader election in between restarts the low 32 bits, and the count is lost.
    """
    if first_zxid >> 32 != last_zxid >> 32:
        return math.nan
    return float((last_zxid & LOW_32_BITS) - (first_zxid & LOW_32_BITS) - 1)


def lead(leader: Leader, fleet: Devices, devices: int, rounds: int, period: float,
         deadline: float) -> SeedResult:
    """The warm-up round, then up to `rounds` measured ones, or fewer at the deadline."""
    time.sleep(period)
    leader.read()
    first_zxid, first_retries = leader.mark(), fleet.tallies()[1]
    released, opening_ms = leader.open_round()
    times: list[float] = []
    complete = 0
    while True:
        time.sleep(period)
        result = leader.read()
        times.append(opening_ms + result.elapsed_ms)
        fresh = sum(stat.mzxid > released for stat in result.stats)
        complete += fresh == devices
        log.info("round %d: mean %.2f over %d readings, %d fresh, %.1f ms (release %.1f ms)",
                 len(times), result.mean, len(result.stats), fresh, times[-1], opening_ms)
        if len(times) == rounds or time.monotonic() > deadline:
            break
        released, opening_ms = leader.open_round()
    last_zxid, last_retries = leader.mark(), fleet.tallies()[1]
    return SeedResult(
        devices=devices,
        rounds=len(times),
        leader_round_ms=times,
        writes_per_round=windowed_writes(first_zxid, last_zxid) / len(times),
        cas_retries_per_round=(last_retries - first_retries) / len(times),
        complete_rounds=complete,
    )


def run_seed(hosts: str, devices: int, rounds: int, period: float,
             namespace: str = "/seed-bench") -> SeedResult:
    """Run the seed's fleet of `devices` for a warm-up round plus `rounds` measured ones.

    Deletes `namespace` first (a stale run's) and last.
    """
    if devices < 1 or rounds < 1 or period <= 0:
        raise ValueError(f"need devices >= 1, rounds >= 1, period > 0; got "
                         f"{devices}, {rounds}, {period}")
    rounds_s = (rounds + 1) * (period + ROUND_SLACK_S)
    layout = Layout(namespace.rstrip("/"))
    leader = Leader(start_client(hosts), layout)
    fleet: Devices | None = None
    try:
        leader.prepare()
        fleet = Devices(hosts, devices, layout, READY_TIMEOUT_S + rounds_s + ROUND_SLACK_S)
        fleet.wait_ready(devices)
        return lead(leader, fleet, devices, rounds, period, time.monotonic() + rounds_s)
    finally:
        try:
            if fleet is not None:
                fleet.stop()
            leader.remove_namespace()
        finally:
            close_client(leader.client)


@contextlib.contextmanager
def local_ensemble() -> Iterator[str]:
    """Three ZooKeeper servers on loopback from the test harness, for running alone."""
    from zk_sensor.testing.zookeeper import ZkEnsemble

    with tempfile.TemporaryDirectory(prefix="seed-bench-") as tmp:
        ensemble = ZkEnsemble(Path(tmp), n=3)
        try:
            ensemble.start()
            ensemble.wait_serving(ENSEMBLE_TIMEOUT_S)
            yield ensemble.hosts
        finally:
            ensemble.stop()


def p99(values: list[float]) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def report(result: SeedResult, seconds: float) -> str:
    times = result.leader_round_ms
    return "\n".join((
        f"seed baseline: {result.devices} devices, {result.rounds} measured rounds",
        f"  leader round (list + sequential gets + mean): median "
        f"{statistics.median(times):.1f} ms, p99 {p99(times):.1f} ms",
        f"  writes/round: {result.writes_per_round:.1f}",
        f"  CAS retries/round: {result.cas_retries_per_round:.1f}",
        f"  complete rounds: {result.complete_rounds}/{result.rounds}",
        f"  run time: {seconds:.1f} s",
    ))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="The seed's design (kazoo Counter and Barrier) as a fleet baseline.")
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--period", type=float, default=1.0)
    parser.add_argument("--namespace", default="/seed-bench")
    parser.add_argument("--hosts", help="ZooKeeper connect string (default: start 3 servers)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each round")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kazoo").setLevel(logging.ERROR)
    with contextlib.ExitStack() as stack:
        hosts = args.hosts or stack.enter_context(local_ensemble())
        begin = time.monotonic()
        result = run_seed(hosts, args.devices, args.rounds, args.period, args.namespace)
        seconds = time.monotonic() - begin
    print(report(result, seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())

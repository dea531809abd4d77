"""Collector benchmark: deliveries per second on one core, memory, the page's load time
and the probes' latency with years of history, each against a baseline measured in the
same run.

- Throughput: the collector pinned to CPU 0 (taskset), a load generator pinned to CPU 1
  posting distinct JSON rounds over keep-alive connections. Baseline: the same load on
  `/healthz`, which touches no disk: the gap is the price of one durable (fsync'ed)
  SQLite transaction per delivery.
- Memory: the collector's resident set (VmRSS) and peak (VmHWM) after the load.
- History: databases of 100, 100,000 and HISTORY_ROWS (10 million) rounds from three
  fleets spread over the last year, written straight into the collector's schema with
  its counters and rollups (schema.derive, what an upgrade runs), then one collector on
  each. Requests alternate between them, so load from elsewhere on the machine weighs on
  each figure alike:
  - probes: `/healthz`, `/metrics` and `/api/summary` with HISTORY_ROWS rounds, against
    the same with none stored (target: within PROBE_RATIO_BUDGET);
  - the page for a year: everything `/` loads for a fleet and the range `year` (the
    HTML, /api/summary, /api/series, /api/rounds?fleet=&limit=20), with 100,000 and with
    HISTORY_ROWS rounds, against the same with 100 (target: PAGE_BUDGET_MS);
  - one retention step (deleting the STEP_ROUNDS oldest rounds): how long a delivery can
    wait behind it.

Run with `make bench`; it prints its figures and exits non-zero if a target is missed.
`--history-rows N` runs it with a smaller history.
"""

import argparse
import contextlib
import http.client
import json
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from zk_sensor.collector.retention import STEP_ROUNDS
from zk_sensor.collector.schema import derive, prepare
from zk_sensor.collector.store import Store
from zk_sensor.testing.collector import CollectorFailed, CollectorProcess, collector_env
from zk_sensor.testing.ports import free_port

LOAD_SECONDS = 5.0
CONNECTIONS = 4
HISTORY_ROWS = 10_000_000
FLEETS = 3
YEAR = 365 * 86400
PROBES = ("/healthz", "/metrics", "/api/summary")
PROBE_REPEATS = 300
PAGE_REPEATS = 30
PROBE_RATIO_BUDGET = 2.0
PAGE_BUDGET_MS = 200.0
FLEET = "/bench-0"
PAGE = ("/", "/api/summary", f"/api/series?fleet={FLEET}&range=year",
        f"/api/rounds?fleet={FLEET}&limit=20")


def start_collector(db: Path, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    """A collector on CPU 0 (at --log-level warning it logs no "serving on" line, so it
    gets a fixed free port and is ready once that port accepts)."""
    collector = CollectorProcess(
        db, log, args=("--log-level", "warning"),
        prefix=("taskset", "-c", "0") if shutil.which("taskset") else (),
        env={**collector_env(), "PYTHONUNBUFFERED": "1"})
    try:
        collector.start_on(free_port())
    except CollectorFailed as failure:
        raise SystemExit(f"collector did not start: {failure}\n{collector.log()}") from None
    assert collector.process is not None
    return collector.process, collector.port


@contextlib.contextmanager
def collectors(work: Path, dbs: list[Path]) -> Iterator[list[int]]:
    """A collector on each database, all on CPU 0; their ports."""
    started = [start_collector(db, work / f"{db.stem}.log") for db in dbs]
    try:
        yield [port for _, port in started]
    finally:
        for process, _ in started:
            process.terminate()
            process.wait(10)


def pin_to_second_core() -> None:
    if hasattr(os, "sched_setaffinity") and os.cpu_count() and os.cpu_count() > 1:
        os.sched_setaffinity(0, {1})


def hammer(port: int, method: str, path: str, seconds: float) -> float:
    """Requests per second from CONNECTIONS keep-alive clients for `seconds`."""
    done = [0] * CONNECTIONS
    stop_at = time.monotonic() + seconds

    def client(index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        number = index * 10_000_000
        while time.monotonic() < stop_at:
            number += 1
            body = None
            headers = {}
            if method == "POST":
                body = json.dumps({"mean": 80.0 + number % 7, "count": 3, "min": 78.0,
                                   "max": 86.0, "round": number, "epoch": 1, "leader": "b",
                                   "time": time.time(), "fleet": "/bench"}).encode()
                headers = {"Content-Type": "application/json"}
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            if response.status >= 300:
                raise SystemExit(f"{method} {path} answered {response.status}")
            done[index] += 1
        connection.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CONNECTIONS)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / (time.monotonic() - started)


def memory_kib(pid: int) -> tuple[int, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
    peak = int(re.search(r"VmHWM:\s+(\d+)", status).group(1))
    return rss, peak


def throughput(work: Path) -> tuple[float, float, int, int]:
    """Deliveries and /healthz per second, then the collector's memory."""
    process, port = start_collector(work / "load.sqlite3", work / "load.log")
    try:
        baseline = hammer(port, "GET", "/healthz", LOAD_SECONDS)
        deliveries = hammer(port, "POST", "/api/rounds", LOAD_SECONDS)
        return deliveries, baseline, *memory_kib(process.pid)
    finally:
        process.terminate()
        process.wait(10)


def history(db: Path, rows: int) -> float:
    """A database of `rows` rounds from FLEETS fleets taking turns over the year up to
    now, as the collector would have stored them; the seconds it took to write."""
    started = time.perf_counter()
    connection = sqlite3.connect(db, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    prepare(connection)
    connection.execute("PRAGMA synchronous=OFF")
    gap = YEAR / rows if rows else 0
    # An hour's margin: no round is past a year's retention while the figures are taken.
    first = time.time() - YEAR + 3600
    connection.execute("BEGIN")
    connection.execute(
        "WITH RECURSIVE n(i) AS (SELECT 0 WHERE :rows > 0 "
        "UNION ALL SELECT i + 1 FROM n WHERE i < :rows - 1) "
        "INSERT INTO rounds (fleet, incarnation, round, epoch, leader, mean, count, min, max, "
        "measured_at, received_at, source) "
        "SELECT '/bench-' || (i % :fleets), 'bench', i / :fleets, 1, 'b', 80.0 + i % 7 * 0.5, "
        "3, 78.0 - i % 5, 86.0 + i % 3, :first + i * :gap, :first + i * :gap, 'json' FROM n",
        {"rows": rows, "fleets": FLEETS, "first": first, "gap": gap})
    connection.execute("INSERT INTO fences (fleet, incarnation, epoch) "
                       "SELECT DISTINCT fleet, 'bench', 1 FROM rounds")
    derive(connection)
    connection.execute("COMMIT")
    connection.close()
    return time.perf_counter() - started


def fetch(connection: http.client.HTTPConnection, path: str) -> int:
    connection.request("GET", path)
    response = connection.getresponse()
    body = response.read()
    if response.status != 200:
        raise SystemExit(f"GET {path} answered {response.status}: {body[:200]!r}")
    return len(body)


def alternate(ports: list[int], paths: tuple[str, ...],
              repeats: int) -> list[tuple[float, int]]:
    """For each collector, the median time to fetch every path in turn and the bytes
    fetched; the collectors take turns, request set by request set."""
    connections = [http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                   for port in ports]
    timings: list[list[float]] = [[] for _ in ports]
    sizes = [0] * len(ports)
    for _ in range(repeats):
        for index, connection in enumerate(connections):
            started = time.perf_counter()
            sizes[index] = sum(fetch(connection, path) for path in paths)
            timings[index].append((time.perf_counter() - started) * 1000)
    for connection in connections:
        connection.close()
    return [(statistics.median(t), size) for t, size in zip(timings, sizes, strict=True)]


def retention_step_ms(db: Path) -> float:
    """The median time of a retention step over the oldest rounds, fsync included."""
    store = Store(db)
    timings = []
    for _ in range(20):
        started = time.perf_counter()
        store.forget(time.time(), STEP_ROUNDS)
        timings.append((time.perf_counter() - started) * 1000)
    store.close()
    return statistics.median(timings)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--history-rows", type=int, default=HISTORY_ROWS)
    rows = parser.parse_args().history_rows
    work = Path(tempfile.mkdtemp(prefix="zk-collector-bench-"))
    pin_to_second_core()
    try:
        deliveries, baseline, rss, peak = throughput(work)
        sizes = {"empty": 0, "small": 100, "medium": 100_000, "large": rows}
        dbs = {name: work / f"{name}.sqlite3" for name in sizes}
        built = {name: history(dbs[name], count) for name, count in sizes.items()}
        with collectors(work, list(dbs.values())) as ports:
            empty, _, _, large = ports
            probes = {path: alternate([empty, large], (path,), PROBE_REPEATS)
                      for path in PROBES}
            pages = alternate(ports[1:], PAGE, PAGE_REPEATS)
            series = alternate([ports[1], large], PAGE[2:3], PAGE_REPEATS)
        step_ms = retention_step_ms(dbs["large"])
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"deliveries (POST /api/rounds, fsync each): {deliveries:8.0f} /s on one core")
    print(f"baseline   (GET /healthz, no disk):        {baseline:8.0f} /s "
          f"-> deliveries run at {deliveries / baseline:.0%} of the server's ceiling")
    print(f"memory after the load: {rss / 1024:.1f} MiB resident, {peak / 1024:.1f} MiB peak")
    print(f"history of {rows:,} rounds ({FLEETS} fleets over a year) written in "
          f"{built['large']:.0f} s")
    missed = []
    for path, ((none_ms, _), (full_ms, _)) in probes.items():
        ratio = full_ms / none_ms
        print(f"{path:13} with {rows:,} rounds: {full_ms:6.2f} ms, empty: {none_ms:6.2f} ms "
              f"-> {ratio:.2f}x (target <= {PROBE_RATIO_BUDGET:.0f}x)")
        if ratio > PROBE_RATIO_BUDGET:
            missed.append(f"{path} grows with history")
    (small_ms, small_bytes), (medium_ms, medium_bytes), (large_ms, large_bytes) = pages
    print(f"page for a year with {100:>10,} rounds: {small_ms:6.1f} ms, "
          f"{small_bytes / 1024:5.1f} KiB (baseline)")
    for count, ms, size in ((100_000, medium_ms, medium_bytes), (rows, large_ms, large_bytes)):
        print(f"page for a year with {count:>10,} rounds: {ms:6.1f} ms, {size / 1024:5.1f} KiB "
              f"-> {ms / small_ms:.2f}x the baseline (target <= {PAGE_BUDGET_MS:.0f} ms)")
        if ms > PAGE_BUDGET_MS:
            missed.append(f"the page with {count:,} rounds is slow")
    (small_series, _), (large_series, _) = series
    print(f"/api/series a year with {rows:,} rounds: {large_series:6.2f} ms, with 100: "
          f"{small_series:6.2f} ms")
    print(f"retention step ({STEP_ROUNDS} oldest rounds deleted, fsync): {step_ms:6.1f} ms")
    for miss in missed:
        print(f"FAIL: {miss}", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Collector benchmark: deliveries per second on one core, memory, and the page's load
time with 100,000 stored rounds, each against a baseline measured in the same run.

- Throughput: the collector pinned to CPU 0 (taskset), a load generator pinned to CPU 1
  posting distinct JSON rounds over keep-alive connections. Baseline: the same load on
  `/healthz`, which touches no disk: the gap is the price of one durable (fsync'ed)
  SQLite transaction per delivery.
- Memory: the collector's resident set (VmRSS) and peak (VmHWM) after the load.
- Page: everything `/` loads (the HTML, /api/rounds?limit=240, /api/summary) with
  100,000 rounds stored, against the same with 100 rounds stored.

Run with `make bench`; it prints its figures and exits non-zero if fetching the page with
100,000 rounds stored takes more than 200 ms.
"""

import contextlib
import http.client
import json
import os
import re
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BIN = Path(sys.executable).parent
LOAD_SECONDS = 5.0
CONNECTIONS = 4
PAGE_REPEATS = 30
PAGE_BUDGET_MS = 200.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_collector(db: Path, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    command = [str(BIN / "zk-collector"), "--listen", f"127.0.0.1:{port}", "--db", str(db),
               "--log-level", "warning"]
    if shutil.which("taskset"):
        command = ["taskset", "-c", "0", *command]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return process, port
        time.sleep(0.05)
    process.kill()
    raise SystemExit(f"collector did not start:\n{log.read_text()}")


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


def fill(db: Path, rows: int) -> None:
    """Rounds written straight into the collector's schema, as months of history would be."""
    connection = sqlite3.connect(db)
    now = time.time()
    connection.executemany(
        "INSERT INTO rounds (fleet, round, epoch, leader, mean, count, min, max, measured_at, "
        "received_at, source) VALUES ('/bench', ?, 1, 'b', ?, 3, ?, ?, ?, ?, 'json')",
        ((n, 80.0 + n % 5, 78.0, 86.0, now - rows + n, now - rows + n) for n in range(rows)))
    connection.commit()
    connection.close()


def page_load_ms(port: int) -> tuple[float, int]:
    """Median time to fetch everything the page loads, and the bytes it ships."""
    timings = []
    size = 0
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for _ in range(PAGE_REPEATS):
        started = time.perf_counter()
        size = 0
        for path in ("/", "/api/rounds?limit=240", "/api/summary"):
            connection.request("GET", path)
            response = connection.getresponse()
            size += len(response.read())
        timings.append((time.perf_counter() - started) * 1000)
    connection.close()
    return statistics.median(timings), size


def page_with(rows: int, work: Path) -> tuple[float, int]:
    db = work / f"page-{rows}.sqlite3"
    process, port = start_collector(db, work / f"page-{rows}.log")
    try:
        fill(db, rows)
        return page_load_ms(port)
    finally:
        process.terminate()
        process.wait(10)


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="zk-collector-bench-"))
    try:
        process, port = start_collector(work / "load.sqlite3", work / "load.log")
        try:
            pin_to_second_core()
            baseline = hammer(port, "GET", "/healthz", LOAD_SECONDS)
            deliveries = hammer(port, "POST", "/api/rounds", LOAD_SECONDS)
            rss, peak = memory_kib(process.pid)
        finally:
            process.terminate()
            process.wait(10)
        small_ms, small_bytes = page_with(100, work)
        large_ms, large_bytes = page_with(100_000, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"deliveries (POST /api/rounds, fsync each): {deliveries:8.0f} /s on one core")
    print(f"baseline   (GET /healthz, no disk):        {baseline:8.0f} /s "
          f"-> deliveries run at {deliveries / baseline:.0%} of the server's ceiling")
    print(f"memory after the load: {rss / 1024:.1f} MiB resident, {peak / 1024:.1f} MiB peak")
    print(f"page with     100 rounds: {small_ms:6.1f} ms, {small_bytes / 1024:6.1f} KiB")
    print(f"page with 100,000 rounds: {large_ms:6.1f} ms, {large_bytes / 1024:6.1f} KiB "
          f"-> {large_ms / small_ms:.2f}x the small page")
    if large_ms > PAGE_BUDGET_MS:
        print("FAIL: the page slows down with history", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

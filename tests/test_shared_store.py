"""The collector on PostgreSQL, the store several collectors share (issue 12): against a
real server (zk_sensor.testing.postgres), real collector processes and a real fleet.

test_collector.py's tests on a `collector` run against PostgreSQL too (its `collector`
fixture is parametrized over both stores).
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from zk_sensor.collector.postgres import PostgresStore
from zk_sensor.collector.series import RANGES
from zk_sensor.collector.store import Round, Store
from zk_sensor.testing.collector import CollectorProcess, a_round, call, post_round, stored
from zk_sensor.testing.fleet import BIN, Fleet, wait_for
from zk_sensor.testing.postgres import PgServer, postgres_bin

pytestmark = pytest.mark.skipif(postgres_bin() is None,
                                reason="needs Debian's postgresql package (.ci/run installs it)")

NOW = 1_800_000_000.0
DAY = 86400.0


@pytest.fixture
def database_url(pg: PgServer, tmp_path: Path) -> str:
    return pg.url(pg.new_database(), pg.passfile(tmp_path))


@pytest.fixture
def collector(database_url: str, tmp_path: Path) -> Iterator[CollectorProcess]:
    running = CollectorProcess(tmp_path / "unused.sqlite3", tmp_path / "collector.log",
                               database=database_url).start()
    yield running
    running.stop()


def collector_on(database_url: str, tmp_path: Path, name: str) -> CollectorProcess:
    return CollectorProcess(tmp_path / f"{name}.sqlite3", tmp_path / f"{name}.log",
                            database=database_url).start()


def history() -> list[tuple[Round, float]]:
    """Two fleets, two incarnations, resent rounds, a deposed leader, a seed's `dato`,
    spread over two years, in the order a collector receives them."""
    events = []
    for number in range(120):
        at = NOW - 700 * DAY + number * 6 * DAY
        events.append((Round(70.0 + number % 20, "json", "/f", "inc-a", number, 1 + number // 40,
                             "1", 3, 60.0, 90.5, at), at))
        events.append((Round(1.5, "json", "/g", "inc-b", number, 1, "2"), at + 1))
        if number % 7 == 0:
            events.append((Round(99.0, "json", "/f", "inc-a", number, 9, "3"), at + 2))
        if number % 11 == 0:
            events.append((Round(5.0, "json", "/f", "inc-a", 1000 + number, 0, "3"), at + 3))
    events.append((Round(12.0, "query"), NOW - 1))
    events.append((Round(50.0, "json", "/f", "inc-c", 1, 1, "1"), NOW - 30))
    return events


def answers(store: Store | PostgresStore) -> dict[str, Any]:
    return {
        "summary": store.summary(),
        "latest": store.latest(1000),
        "pages": [store.latest(5, 200, "/f"), store.latest(3, None, "")],
        "series": {(fleet, name): store.series(fleet, name, NOW)
                   for fleet in ("/f", "/g", "") for name in RANGES},
        "known": [store.known_fleet(name) for name in ("/f", "/g", "", "/none")],
    }


def test_postgresql_answers_as_sqlite_does(database_url: str, tmp_path: Path) -> None:
    """The same deliveries, then retention, give the same outcomes and the same answers
    from both stores: PostgreSQL keeps every rule of the embedded default."""
    sqlite, postgres = Store(tmp_path / "rounds.sqlite3"), PostgresStore(database_url)
    try:
        outcomes = [(sqlite.add(item, now=at), postgres.add(item, now=at))
                    for item, at in history()]
        assert all(left == right for left, right in outcomes)
        assert len({outcome for (outcome, _), _ in outcomes}) == 3  # stored, dup, stale
        assert answers(postgres) == answers(sqlite)
        cutoff = NOW - 365 * DAY
        while sqlite.forget(cutoff, 25):
            pass
        while postgres.forget(cutoff, 25):
            pass
        assert postgres.expired == sqlite.expired > 0
        assert answers(postgres) == answers(sqlite)
    finally:
        sqlite.close()
        postgres.close()


def test_two_collectors_store_each_round_once_and_share_the_fence(
        database_url: str, tmp_path: Path) -> None:
    """Every round is sent to both collectors at once, as a daemon unsure of its first
    try would through a load balancer: one of them stores it, the other says duplicate."""
    first, second = (collector_on(database_url, tmp_path, name) for name in ("a", "b"))
    try:
        def send(target: CollectorProcess, number: int) -> int:
            return post_round(target, a_round(number, incarnation="inc"))[0]

        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = list(pool.map(send, [first, second] * 60,
                                     [number for number in range(60) for _ in (0, 1)]))
        per_round = Counter(number for number, status in
                            zip([n for n in range(60) for _ in (0, 1)], statuses, strict=True)
                            if status == 201)
        assert set(statuses) <= {200, 201}
        assert per_round == Counter(range(60))
        assert sorted(row["round"] for row in stored(second)) == list(range(60))
        assert post_round(first, a_round(100, epoch=7, incarnation="inc"))[0] == 201
        status, body = post_round(second, a_round(101, epoch=6, incarnation="inc"))
        assert status == 409 and "epoch 7 already accepted" in body["error"]
    finally:
        first.stop()
        second.stop()


class FrontDoor:
    """One address in front of several collectors, as a load balancer is: each new
    connection goes to the first backend that accepts it."""

    def __init__(self, backends: list[int]) -> None:
        self.backends = backends
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.served: Counter[int] = Counter()
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self.forward, args=(client,), daemon=True).start()

    def forward(self, client: socket.socket) -> None:
        for port in self.backends:
            try:
                upstream = socket.create_connection(("127.0.0.1", port), timeout=1)
            except OSError:
                continue
            self.served[port] += 1
            upstream.settimeout(None)
            threading.Thread(target=self.pump, args=(upstream, client), daemon=True).start()
            self.pump(client, upstream)
            return
        client.close()

    @staticmethod
    def pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()

    def close(self) -> None:
        self.listener.close()


def fleet_rounds(target: CollectorProcess) -> list[int]:
    return [row["round"] for row in target.rounds() if row["fleet"]]


def test_a_collector_killed_mid_stream_loses_and_doubles_nothing(
        database_url: str, tmp_path: Path, zk_hosts: str, zk_namespace: str) -> None:
    first, second = (collector_on(database_url, tmp_path, name) for name in ("a", "b"))
    door = FrontDoor([first.port, second.port])
    fleet = Fleet(zk_hosts, zk_namespace, tmp_path,
                  f"http://127.0.0.1:{door.port}/api/rounds", period=0.3)
    try:
        fleet.start_ready("1", "2", "3")
        wait_for(lambda: len(fleet_rounds(second)) >= 8, 60, "8 rounds through collector a")
        assert door.served[first.port] and not door.served[second.port]
        first.stop(signal.SIGKILL)
        before = len(fleet_rounds(second))
        newest = max(fleet_rounds(second))
        wait_for(lambda: len(fleet_rounds(second)) >= before + 10, 60,
                 "10 more rounds through collector b")
        assert door.served[second.port]
        fleet.stop_all()
        numbers = fleet_rounds(second)
        assert len(numbers) == len(set(numbers)), "a round stored twice"
        assert sorted(numbers) == list(range(min(numbers), max(numbers) + 1)), "a round lost"
        # Real rounds of the three devices went on through b (on a loaded machine a
        # follower's reading can miss a round at this period: the leader leaves it out).
        rows = [row for row in second.rounds() if row["fleet"]]
        assert all(1 <= row["count"] <= 3 for row in rows), rows
        assert [row for row in rows if row["round"] > newest and row["count"] == 3], rows
    finally:
        fleet.stop_all()
        door.close()
        first.stop()
        second.stop()


def test_a_collector_answers_503_while_its_database_is_away(tmp_path: Path) -> None:
    server = PgServer().start()
    try:
        url = server.url(server.new_database(), server.passfile(tmp_path))
        running = collector_on(url, tmp_path, "a")
        try:
            assert post_round(running, a_round(1))[0] == 201
            server.stop()
            status, body = call(running.url("/healthz"))
            assert status == 503 and ("unreachable" in body["error"] or "lost" in body["error"])
            assert post_round(running, a_round(2))[0] == 503
            server.resume()
            wait_for(lambda: call(running.url("/healthz"))[0] == 200, 30,
                     "the collector to reconnect")
            assert post_round(running, a_round(2))[0] == 201
            assert sorted(row["round"] for row in stored(running)) == [1, 2]
            log = running.log_file.read_text()
            assert "lost postgresql zk_collector@127.0.0.1" in log
            assert server.password not in log
        finally:
            running.stop()
    finally:
        server.destroy()


def test_a_malformed_database_uri_stops_the_collector_with_one_line(tmp_path: Path) -> None:
    finished = subprocess.run([str(BIN / "zk-collector"), "--listen", "127.0.0.1:0",
                               "--database", "postgresql://u@h/d?nosuch=1"],
                              capture_output=True, text=True, timeout=30)
    assert finished.returncode == 2
    assert finished.stderr.count("\n") == 1 and "database" in finished.stderr


def test_garbage_json_strings_are_refused_before_the_database(
        collector: CollectorProcess) -> None:
    for payload in ({**a_round(1), "leader": "a\x00b"}, {**a_round(1), "fleet": "\ud800"}):
        status, body = post_round(collector, json.dumps(payload).encode())
        assert status == 400 and "without NUL" in body["error"]
    assert call(collector.url("/api/rounds?fleet=%00"))[0] == 400
    assert stored(collector) == []

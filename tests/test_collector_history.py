"""Years of rounds at the collector: retention forgets old rounds in bounded steps, the
probes read counters instead of the history, long ranges are summed from rollups, and a
database of the previous release is upgraded in place keeping every row.

"Does not grow with history" is asserted without timing: as the number of SQLite virtual
machine instructions a request runs (the same with 5,000 rounds as with 10), and as query
plans that search an index instead of scanning the rounds.
"""

import io
import json
import random
import re
import sqlite3
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from zk_sensor.collector import schema
from zk_sensor.collector.app import Collector
from zk_sensor.collector.retention import STEP_ROUNDS, Pruner, parse_retention
from zk_sensor.collector.store import Round, Store
from zk_sensor.testing.collector import CollectorProcess
from zk_sensor.testing.collector import call as http_call
from zk_sensor.testing.fleet import BIN, wait_for

NOW = 1_800_000_000.0
DAY = 86400
# The series' contract: (bucket seconds, buckets) of each range.
RANGES = {"hour": (10, 360), "day": (300, 288), "week": (1800, 336), "month": (7200, 360),
          "year": (DAY, 365)}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A store that skips fsync, to fill thousands of rounds quickly."""
    opened = Store(tmp_path / "rounds.sqlite3")
    opened.db.execute("PRAGMA synchronous=OFF")
    yield opened
    opened.close()


def a_round(number: int, mean: float = 80.0, fleet: str | None = "/f",
            incarnation: str | None = "one", low: float | None = None,
            high: float | None = None) -> Round:
    return Round(mean=mean, source="json", fleet=fleet, incarnation=incarnation,
                 round=number, epoch=1, min=low, max=high)


def fill(store: Store, times: list[float], fleet: str | None = "/f", first: int = 0) -> None:
    for number, at in enumerate(times, start=first):
        store.add(a_round(number, 70.0 + number % 20, fleet), now=at)


def wsgi(app: Collector, path: str, query: str = "") -> tuple[int, Any]:
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": query,
               "wsgi.input": io.BytesIO()}
    statuses: list[str] = []
    body = b"".join(app(environ, lambda status, _headers: statuses.append(status)))
    status = int(statuses[0].split()[0])
    return status, json.loads(body) if body.startswith(b"{") else body.decode()


def counted(store: Store) -> dict[str, int]:
    """Rounds stored per fleet, counted the slow way."""
    return dict(store.db.execute(
        "SELECT coalesce(fleet, ''), count(*) FROM rounds GROUP BY 1").fetchall())


def lineage_counts(store: Store) -> dict[str, int]:
    return {(f["fleet"] or ""): f["rounds"] for f in store.summary()["fleets"] if f["rounds"]}


# ------------------------------------------------------------------------------ retention

def test_retention_deletes_old_rounds_and_keeps_recent_ones(store: Store) -> None:
    old = [NOW - 3 * DAY + 60 * n for n in range(30)]
    recent = [NOW - 600 + 10 * n for n in range(10)]
    fill(store, old + recent)
    fill(store, [NOW - 3 * DAY, NOW - 5], fleet=None, first=100)
    cutoff = NOW - DAY

    assert store.forget(cutoff, 1000) == 31
    kept = store.db.execute("SELECT received_at FROM rounds ORDER BY id").fetchall()
    assert [at for (at,) in kept] == [*recent, NOW - 5]
    assert lineage_counts(store) == counted(store) == {"/f": 10, "": 1}
    assert store.summary()["rounds"] == 11 and store.expired == 31
    assert store.db.execute("SELECT count(*) FROM rollups WHERE bucket + span <= ?",
                            (cutoff,)).fetchone()[0] == 0
    assert store.forget(cutoff, 1000) == 0


def test_a_retention_step_deletes_at_most_its_limit_oldest_first(store: Store) -> None:
    times = [NOW - 2 * DAY + n for n in range(1200)]
    fill(store, times)
    fill(store, [NOW - 2 * DAY + n + 0.5 for n in range(300)], fleet="/g", first=5000)
    steps = [store.forget(NOW - DAY, 500) for _ in range(5)]
    assert steps == [500, 500, 500, 0, 0]
    fill(store, [NOW - 2 * DAY + 1.25], first=9000)
    assert store.forget(NOW - 2 * DAY + 1.3, 500) == 1, "a late arrival, oldest by time"
    assert counted(store) == {} and lineage_counts(store) == {}


def test_retention_forgets_whole_rollup_buckets_only(store: Store) -> None:
    """A bucket straddling the cutoff keeps counting rounds already deleted; the series of
    the buckets after it stays exact."""
    bucket = (NOW // 7200) * 7200 - 10 * 7200
    fill(store, [bucket + 100, bucket + 7000, bucket + 7300])
    store.forget(bucket + 7100, 100)
    assert counted(store) == {"/f": 1}
    rollups = store.db.execute("SELECT bucket, rounds FROM rollups WHERE span = 7200 "
                               "ORDER BY bucket").fetchall()
    assert rollups == [(int(bucket), 2), (int(bucket) + 7200, 1)]
    store.forget(bucket + 7400, 100)
    assert store.db.execute("SELECT bucket FROM rollups WHERE span = 7200").fetchall() == [
        (int(bucket) + 7200,)], "still straddling the cutoff"
    store.forget(NOW, 100)
    assert store.db.execute("SELECT count(*) FROM rollups").fetchone()[0] == 0


def test_the_pruner_sweeps_step_by_step_until_nothing_is_past_retention(store: Store) -> None:
    fill(store, [NOW - 2 * DAY + n for n in range(2 * STEP_ROUNDS + 7)])
    fill(store, [NOW - 60], first=10_000)
    pruner = Pruner(store, retention=DAY, clock=lambda: NOW)
    pruner.sweep()
    assert counted(store) == {"/f": 1} and store.expired == 2 * STEP_ROUNDS + 7


@pytest.mark.parametrize(("text", "seconds"), [
    ("365d", 365 * DAY), ("12h", 12 * 3600), ("30m", 1800), ("3600", 3600), ("90s", 90),
    ("2w", 14 * DAY), (" 7D ", 7 * DAY), ("forever", None), ("Forever", None)])
def test_retention_setting_reads_durations(text: str, seconds: float | None) -> None:
    assert parse_retention(text) == seconds


@pytest.mark.parametrize("text", ["0", "0d", "", "-1d", "1.5d", "1y", "d", "12 h", "soon",
                                  "1" * 13])
def test_retention_garbage_stops_the_collector_with_one_line(tmp_path: Path, text: str) -> None:
    result = subprocess.run([str(BIN / "zk-collector"), "--db", str(tmp_path / "db"),
                             "--listen", "127.0.0.1:0", f"--retention={text}"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert re.fullmatch(r"zk-collector: retention .* must be a duration like .*\n",
                        result.stderr), result.stderr
    assert not (tmp_path / "db").exists()


def test_a_collector_forgets_rounds_past_its_retention(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "rounds.sqlite3"
    now = time.time()
    seeded = Store(db)
    fill(seeded, [now - 7200 + n for n in range(5)])
    fill(seeded, [now - 60 + n for n in range(3)], first=100)
    seeded.close()
    monkeypatch.setenv("ZK_COLLECTOR_RETENTION", "1h")
    collector = CollectorProcess(db, tmp_path / "c.log").start()
    try:
        wait_for(lambda: len(collector.rounds()) == 3, 15, "old rounds forgotten")
        assert [r["round"] for r in collector.rounds()] == [102, 101, 100]
        assert http_call(collector.url("/api/summary"))[1]["rounds"] == 3
        metrics = http_call(collector.url("/metrics"))[1]
        assert "zk_collector_rounds_expired_total 5.0" in metrics
    finally:
        collector.stop()
    assert "retention: deleted 5 rounds received before" in (tmp_path / "c.log").read_text()


# --------------------------------------------------------------------- probes stay small

def instructions(store: Store, app: Collector, path: str) -> int:
    """SQLite virtual machine instructions one request runs: they grow with every row a
    query reads, and not with the depth of a B-tree it searches."""
    count = 0

    def step() -> int:
        nonlocal count
        count += 1
        return 0

    store.db.set_progress_handler(step, 1)
    try:
        assert wsgi(app, path)[0] == 200
    finally:
        store.db.set_progress_handler(None, 1)
    return count


def history(store: Store, rounds: int) -> Collector:
    """`rounds` rounds from two fleets, three incarnations and the seed's endpoint."""
    for number in range(rounds):
        fleet, incarnation = [("/f", "one"), ("/f", "two"), ("/g", "one"),
                              (None, None)][number % 4]
        store.add(a_round(number, fleet=fleet, incarnation=incarnation),
                  now=NOW - rounds + number)
    return Collector(store)


@pytest.mark.parametrize("path", ["/healthz", "/metrics", "/api/summary"])
def test_probes_run_the_same_instructions_with_5000_rounds_as_with_12(
        tmp_path: Path, path: str) -> None:
    small, large = Store(tmp_path / "small.sqlite3"), Store(tmp_path / "large.sqlite3")
    for store in (small, large):
        store.db.execute("PRAGMA synchronous=OFF")
    try:
        few, many = history(small, 12), history(large, 5000)
        assert instructions(small, few, path) == instructions(large, many, path)
    finally:
        small.close()
        large.close()


def plans(store: Store, request: Any) -> dict[str, list[str]]:
    """The query plan of every SELECT that `request()` runs."""
    statements: list[str] = []
    store.db.set_trace_callback(statements.append)
    try:
        request()
    finally:
        store.db.set_trace_callback(None)
    return {sql: [row[-1] for row in store.db.execute(f"EXPLAIN QUERY PLAN {sql}")]
            for sql in statements if sql.lstrip().upper().startswith("SELECT")}


def scans(found: dict[str, list[str]]) -> list[str]:
    """Steps that read a history table (rounds, rollups) whole."""
    return [step for steps in found.values() for step in steps
            if re.match(r"SCAN (rounds|rollups)\b", step)]


def test_probes_series_and_listings_search_indexes_instead_of_scanning(store: Store) -> None:
    app = history(store, 200)
    for path in ("/healthz", "/metrics", "/api/summary"):
        found = plans(store, lambda path=path: wsgi(app, path))
        assert found and not scans(found), found
    for name in RANGES:
        found = plans(store, lambda name=name: store.series("/f", name, now=NOW))
        assert not scans(found), found
        assert all("SEARCH" in step or "TEMP B-TREE" in step or "SUBQUERY" in step
                   for steps in found.values() for step in steps), found
    found = plans(store, lambda: store.latest(20, None, "/f"))
    assert not scans(found) and "USING INDEX rounds_time" in str(found), found
    last = store.latest(1, None, "/f")[0]["id"]
    found = plans(store, lambda: store.latest(20, last, "/f"))
    assert not scans(found) and "USING INDEX rounds_time" in str(found), found


# ------------------------------------------------------------------------------ series

def brute_force(rounds: list[tuple[float, float, float, float]], step: int,
                start: float, end: float) -> list[dict[str, Any]]:
    """The points of a range computed from every round, the slow way."""
    buckets: dict[int, list[tuple[float, float, float]]] = defaultdict(list)
    for at, mean, low, high in rounds:
        if start <= at < end:
            buckets[int(at // step) * step].append((mean, low, high))
    return [{"t": t, "rounds": len(b), "mean": sum(m for m, _, _ in b) / len(b),
             "min": min(lo for _, lo, _ in b), "max": max(hi for _, _, hi in b)}
            for t, b in sorted(buckets.items())]


def test_series_of_every_range_matches_the_rounds(store: Store) -> None:
    rng = random.Random(11)
    kept: list[tuple[float, float, float, float]] = []
    times = sorted([NOW - rng.uniform(0, 400 * DAY) for _ in range(3000)]
                   + [NOW - rng.uniform(0, 3600) for _ in range(400)])
    for number, at in enumerate(times):
        mean = round(rng.uniform(70, 90), 3)
        low, high = (None, None) if number % 5 == 0 else (mean - rng.random(), mean + 1)
        store.add(a_round(number, mean, low=low, high=high), now=at)
        store.add(a_round(number, 0.0, fleet="/other"), now=at)
        kept.append((at, mean, mean if low is None else low, mean if high is None else high))
    for name, (step, buckets) in RANGES.items():
        found = store.series("/f", name, now=NOW)
        end = (int(NOW) // step + 1) * step
        assert (found["step"], found["start"], found["end"]) == (step, end - step * buckets,
                                                                 end)
        expected = brute_force(kept, step, found["start"], end)
        assert len(found["points"]) <= 500
        assert [(p["t"], p["rounds"], p["min"], p["max"]) for p in found["points"]] == [
            (p["t"], p["rounds"], p["min"], p["max"]) for p in expected], name
        assert [p["mean"] for p in found["points"]] == pytest.approx(
            [p["mean"] for p in expected]), name


def test_series_endpoint_answers_a_bucket_with_mean_of_means_min_of_mins_max_of_maxes(
        store: Store) -> None:
    bucket = (time.time() // 300) * 300 - 600
    for number, (mean, low, high) in enumerate([(1.0, 0.5, 2.0), (2.0, 1.5, 9.0),
                                                (6.0, None, None)]):
        store.add(a_round(number, mean, low=low, high=high), now=bucket + 10 * number)
    status, body = wsgi(Collector(store), "/api/series", "fleet=/f&range=day")
    assert status == 200
    assert (body["fleet"], body["range"], body["step"]) == ("/f", "day", 300)
    assert body["points"] == [{"t": int(bucket), "rounds": 3, "mean": 3.0, "min": 0.5,
                               "max": 9.0}]
    assert body["incarnations"] == []


def test_series_marks_where_a_later_incarnation_started(store: Store) -> None:
    store.add(a_round(1, incarnation="one"), now=NOW - 3 * DAY)
    store.add(a_round(1, incarnation="two"), now=NOW - 2 * DAY)
    store.add(a_round(1, incarnation="three"), now=NOW - 60)
    assert store.series("/f", "week", now=NOW)["incarnations"] == [
        {"incarnation": "two", "first_at": NOW - 2 * DAY},
        {"incarnation": "three", "first_at": NOW - 60}]
    assert store.series("/f", "hour", now=NOW)["incarnations"] == [
        {"incarnation": "three", "first_at": NOW - 60}]


@pytest.mark.parametrize(("query", "status"), [
    ("range=day", 400), ("fleet=/f", 400), ("fleet=/f&range=decade", 400),
    ("fleet=/f&range=", 400), ("fleet=/f&range=DAY", 400), (f"fleet={'x' * 201}&range=day", 400),
    ("fleet=/nope&range=day", 404), ("fleet=&range=day", 404), ("fleet=/f&range=year", 200)])
def test_series_refuses_bad_queries_with_a_4xx(store: Store, query: str, status: int) -> None:
    store.add(a_round(1), now=time.time())
    answer, body = wsgi(Collector(store), "/api/series", query)
    assert answer == status
    if status >= 400:
        assert body["error"] and "\n" not in body["error"]


@pytest.mark.parametrize("query", ["before=9223372036854775808", "before=-1", "before=x",
                                   "limit=0", "limit=x", f"fleet={'x' * 201}"])
def test_listing_refuses_bad_queries_with_a_400(store: Store, query: str) -> None:
    status, body = wsgi(Collector(store), "/api/rounds", query)
    assert status == 400 and body["error"]


def test_series_of_the_rounds_sent_without_a_fleet(store: Store) -> None:
    store.add(Round(mean=81.5, source="nuevo"), now=time.time())
    status, body = wsgi(Collector(store), "/api/series", "fleet=&range=hour")
    assert status == 200 and body["fleet"] is None
    assert [p["mean"] for p in body["points"]] == [81.5]


def test_listing_one_fleet_pages_back_in_arrival_order(store: Store) -> None:
    for number in range(30):
        store.add(a_round(number, fleet=["/f", "/g"][number % 2]), now=NOW + number)
    pages, before = [], None
    while page := store.latest(4, before, "/f"):
        pages.append([r["round"] for r in page])
        before = page[-1]["id"]
    assert [number for page in pages for number in page] == list(range(28, -1, -2))
    assert [r["round"] for r in store.latest(3, None, "")] == []
    status, body = wsgi(Collector(store), "/api/rounds", "fleet=/g&limit=2")
    assert status == 200 and [r["round"] for r in body["rounds"]] == [29, 27]


# ---------------------------------------------------------- databases of the last release

V1_SCHEMA = """
CREATE TABLE rounds (
    id INTEGER PRIMARY KEY,
    fleet TEXT,
    round INTEGER,
    epoch INTEGER,
    leader TEXT,
    mean REAL NOT NULL,
    count INTEGER,
    min REAL,
    max REAL,
    measured_at REAL,
    received_at REAL NOT NULL,
    source TEXT NOT NULL,
    incarnation TEXT
);
CREATE UNIQUE INDEX rounds_key
    ON rounds (coalesce(fleet, ''), coalesce(incarnation, ''), round)
    WHERE round IS NOT NULL;
CREATE TABLE fences (
    fleet TEXT NOT NULL,
    incarnation TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    PRIMARY KEY (fleet, incarnation)
);
PRAGMA user_version = 1;
"""


def v1_database(path: Path, now: float) -> list[tuple[Any, ...]]:
    """A file as the release before rollups left it: two fleets, two incarnations, keyed
    and keyless seed rows, over the last two weeks; its rows."""
    db = sqlite3.connect(path)
    db.executescript(V1_SCHEMA)
    rows = []
    for number in range(600):
        fleet, incarnation = [("/f", "one"), ("/f", "two"), ("/g", None), (None, None)][
            number % 4]
        keyed = number % 8 != 3
        mean = 60.0 + number % 37
        rows.append((fleet, number if keyed else None, 2 if keyed else None, "1", mean,
                     3, None if number % 6 == 0 else mean - 1, mean + number % 3,
                     now - 14 * DAY + number * 2000.5, "json" if keyed else "nuevo",
                     incarnation))
    db.executemany("INSERT INTO rounds (fleet, round, epoch, leader, mean, count, min, max, "
                   "received_at, source, incarnation) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   rows)
    db.executemany("INSERT INTO fences VALUES (?, ?, ?)",
                   [("/f", "one", 2), ("/f", "two", 2), ("/g", "", 2), ("", "", 2)])
    db.commit()
    every = db.execute("SELECT * FROM rounds ORDER BY id").fetchall()
    db.close()
    return every


def test_a_database_of_the_last_release_is_upgraded_keeping_every_row(tmp_path: Path) -> None:
    path = tmp_path / "v1.sqlite3"
    now = time.time()
    before = v1_database(path, now)
    upgraded = Store(path)
    try:
        assert upgraded.db.execute("PRAGMA user_version").fetchone()[0] == schema.VERSION == 2
        after = upgraded.db.execute(
            "SELECT id, fleet, round, epoch, leader, mean, count, min, max, measured_at, "
            "received_at, source, incarnation FROM rounds ORDER BY id").fetchall()
        assert after == before
        summary = upgraded.summary()
        assert summary["rounds"] == 600
        assert {(f["fleet"], f["rounds"]) for f in summary["fleets"]} == {
            ("/f", 300), ("/g", 150), (None, 150)}
        kept = [(r[10], r[5], r[5] if r[7] is None else r[7], r[5] if r[8] is None else r[8])
                for r in before if r[1] == "/f"]
        for name in ("day", "week", "month"):
            found = upgraded.series("/f", name, now=now)
            step = RANGES[name][0]
            assert [(p["t"], p["rounds"], p["min"], p["max"]) for p in found["points"]] == [
                (p["t"], p["rounds"], p["min"], p["max"])
                for p in brute_force(kept, step, found["start"], found["end"])]
    finally:
        upgraded.close()
    collector = CollectorProcess(path, tmp_path / "c.log").start()
    try:
        assert http_call(collector.url("/api/summary"))[1]["rounds"] == 600
        status, body = http_call(collector.url("/api/series?fleet=/g&range=month"))
        assert status == 200 and sum(p["rounds"] for p in body["points"]) == 150
        assert http_call(collector.url("/api/rounds?fleet=&limit=1"))[1]["rounds"][0]["id"] == 600
    finally:
        collector.stop()


def test_an_upgrade_that_fails_half_way_leaves_the_file_as_it_was(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "v1.sqlite3"
    before = v1_database(path, time.time())

    def crash(_db: sqlite3.Connection) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(schema, "derive", crash)
    with pytest.raises(sqlite3.OperationalError):
        Store(path)
    db = sqlite3.connect(path)
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    assert db.execute("PRAGMA user_version").fetchone()[0] == 1
    assert not tables & {"lineages", "rollups", "rounds_time"}
    assert db.execute("SELECT count(*) FROM rounds").fetchone()[0] == len(before)
    db.close()
    monkeypatch.undo()
    again = Store(path)
    assert again.summary()["rounds"] == len(before)
    again.close()

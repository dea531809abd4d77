"""Fleet incarnations at the collector, through real HTTP: a rebuilt ZooKeeper namespace
restarts its rounds and epochs at 0 under a new incarnation id, and must be neither taken
for duplicates nor refused as stale; the seed's endpoint keyed like the JSON one; and a
database written before incarnations existed, migrated in place."""

import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

from zk_sensor.collector.store import KNOWN_ROUND, Store
from zk_sensor.testing.collector import CollectorProcess, a_round, call, post_round, stored

OLD = uuid.uuid4().hex
NEW = uuid.uuid4().hex


def seed(collector: CollectorProcess, query: str) -> tuple[int, Any]:
    return call(collector.url(f"/nuevo?{query}"))


def keys(collector: CollectorProcess) -> list[tuple[Any, ...]]:
    """(fleet, incarnation, round, epoch) of every stored row, oldest first."""
    return [(r["fleet"], r["incarnation"], r["round"], r["epoch"])
            for r in reversed(stored(collector))]


def test_one_round_number_under_two_incarnations_is_two_rounds(
        collector: CollectorProcess) -> None:
    assert post_round(collector, a_round(1, epoch=7, incarnation=OLD))[0] == 201
    assert post_round(collector, a_round(1, epoch=1, incarnation=NEW))[0] == 201
    status, body = post_round(collector, a_round(1, epoch=1, incarnation=NEW, mean=1.0))
    assert (status, body["status"]) == (200, "duplicate")
    assert keys(collector) == [("/f", OLD, 1, 7), ("/f", NEW, 1, 1)]


def test_the_fence_is_per_incarnation(collector: CollectorProcess) -> None:
    assert post_round(collector, a_round(5, epoch=7, incarnation=OLD))[0] == 201
    status, body = post_round(collector, a_round(6, epoch=6, incarnation=OLD))
    assert status == 409 and "stale epoch 6" in body["error"]
    assert post_round(collector, a_round(1, epoch=1, incarnation=NEW))[0] == 201
    assert post_round(collector, a_round(2, epoch=0, incarnation=NEW))[0] == 409
    assert post_round(collector, a_round(2, epoch=1, incarnation=NEW))[0] == 201
    assert keys(collector) == [("/f", OLD, 5, 7), ("/f", NEW, 1, 1), ("/f", NEW, 2, 1)]
    summary = call(collector.url("/api/summary"))[1]
    assert summary["epochs"] == [{"fleet": "/f", "incarnation": OLD, "epoch": 7},
                                 {"fleet": "/f", "incarnation": NEW, "epoch": 1}]


def test_seed_endpoint_with_a_key_is_stored_once_and_fenced(
        collector: CollectorProcess) -> None:
    query = f"dato=80.5&round=3&epoch=2&fleet=/f&incarnation={NEW}"
    status, first = seed(collector, query)
    assert (status, first["status"]) == (201, "stored")
    status, again = seed(collector, query.replace("80.5", "1.5"))
    assert (status, again) == (200, {"status": "duplicate", "id": first["id"]})
    status, body = post_round(collector, a_round(3, epoch=2, incarnation=NEW))
    assert (status, body["status"]) == (200, "duplicate"), "one key space for both endpoints"
    status, body = seed(collector, f"dato=1&round=4&epoch=1&fleet=/f&incarnation={NEW}")
    assert status == 409 and "stale epoch 1" in body["error"]
    assert seed(collector, f"dato=2&round=3&epoch=0&fleet=/f&incarnation={OLD}")[0] == 201
    rows = stored(collector)
    assert keys(collector) == [("/f", NEW, 3, 2), ("/f", OLD, 3, 0)]
    assert (rows[1]["mean"], rows[1]["source"]) == (80.5, "nuevo")


def test_seed_endpoint_key_without_fleet_or_incarnation(collector: CollectorProcess) -> None:
    assert seed(collector, "dato=1&round=0&epoch=0")[0] == 201
    assert seed(collector, "dato=1&round=0&epoch=0")[1]["status"] == "duplicate"
    assert keys(collector) == [(None, None, 0, 0)]


def test_plain_seed_call_stores_every_call(collector: CollectorProcess) -> None:
    assert [seed(collector, "dato=81.5")[0] for _ in range(2)] == [201, 201]
    assert keys(collector) == [(None, None, None, None)] * 2


# ------------------------------------------------------------ databases of the old version

OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS rounds (
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
    source TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS rounds_key ON rounds (fleet, round) WHERE round IS NOT NULL;
CREATE TABLE IF NOT EXISTS fences (
    fleet TEXT PRIMARY KEY,
    epoch INTEGER NOT NULL
);
"""


def old_database(path: Path) -> None:
    """A file as the version before incarnations left it: a seed row, rounds of fleet /f
    and of a daemon that sent no fleet, and their fences; the old code added a fence row
    per epoch for the absent fleet (NULL never conflicted in its primary key). Received a
    minute ago: well within retention."""
    db = sqlite3.connect(path)
    db.executescript(OLD_SCHEMA)
    ago = time.time() - 60
    db.executemany(
        "INSERT INTO rounds (fleet, round, epoch, leader, mean, received_at, source) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(None, None, None, None, 70.0, ago + 1, "nuevo"), ("/f", 1, 3, "2", 71.0, ago + 2, "json"),
         ("/f", 2, 3, "2", 72.0, ago + 3, "json"), (None, 1, 5, "1", 73.0, ago + 4, "json")])
    db.executemany("INSERT INTO fences (fleet, epoch) VALUES (?, ?)",
                   [("/f", 3), (None, 4), (None, 5)])
    db.commit()
    db.close()


def test_a_database_of_the_old_version_is_migrated_and_keeps_working(tmp_path: Path) -> None:
    db = tmp_path / "old.sqlite3"
    old_database(db)
    collector = CollectorProcess(db, tmp_path / "c.log").start()
    try:
        assert [(r["id"], r["mean"], r["incarnation"]) for r in stored(collector)] == [
            (4, 73.0, None), (3, 72.0, None), (2, 71.0, None), (1, 70.0, None)]
        assert post_round(collector, a_round(2, epoch=3))[1] == {"status": "duplicate", "id": 3}
        assert post_round(collector, a_round(3, epoch=2))[0] == 409
        no_fleet = {k: v for k, v in a_round(2, epoch=4).items() if k != "fleet"}
        assert post_round(collector, no_fleet)[0] == 409, "the highest old fence is kept"
        assert post_round(collector, a_round(2, epoch=1, incarnation=NEW))[0] == 201
    finally:
        collector.stop()
    again = CollectorProcess(db, tmp_path / "c.log").start()
    try:
        assert post_round(again, a_round(2, epoch=1, incarnation=NEW))[1]["status"] == "duplicate"
        assert post_round(again, a_round(3, epoch=3))[0] == 201
        assert len(stored(again)) == 6
        assert call(again.url("/api/summary"))[1]["epochs"] == [
            {"fleet": None, "incarnation": None, "epoch": 5},
            {"fleet": "/f", "incarnation": None, "epoch": 3},
            {"fleet": "/f", "incarnation": NEW, "epoch": 1}]
    finally:
        again.stop()


def test_the_duplicate_check_uses_the_key_index_after_migration(tmp_path: Path) -> None:
    """Without the index every delivery would scan the whole history."""
    db = tmp_path / "old.sqlite3"
    old_database(db)
    store = Store(db)
    try:
        plan = store.db.execute(f"EXPLAIN QUERY PLAN {KNOWN_ROUND}", ("/f", "", 1)).fetchall()
    finally:
        store.close()
    (step,) = [row[-1] for row in plan]
    assert step.startswith("SEARCH rounds USING INDEX rounds_key (<expr>=? AND <expr>=?"), step

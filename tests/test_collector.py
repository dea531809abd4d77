"""zk-collector through real HTTP: the seed's endpoint, JSON rounds, dedupe, fencing,
token, bad input, durability across restarts and crashes. The tests on a `collector` run
against both stores, SQLite and PostgreSQL."""

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from zk_sensor.testing.collector import CollectorProcess, a_round, call, post_round, stored
from zk_sensor.testing.postgres import PgServer, postgres_bin


@pytest.fixture(params=["sqlite", "postgresql"])
def collector(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CollectorProcess]:
    """A running zk-collector on each store: the embedded SQLite, and a database of its own
    on the module's PostgreSQL server (test_shared_store.py has the rest of PostgreSQL's:
    the same rules, several collectors on one database)."""
    if request.param == "sqlite":
        running = CollectorProcess(tmp_path / "rounds.sqlite3", tmp_path / "collector.log")
    else:
        if postgres_bin() is None:
            pytest.skip("needs Debian's postgresql package (.ci/run installs it)")
        pg: PgServer = request.getfixturevalue("pg")
        running = CollectorProcess(tmp_path / "unused.sqlite3", tmp_path / "collector.log",
                                   database=pg.url(pg.new_database(), pg.passfile(tmp_path)))
    running.start()
    yield running
    running.stop()


def test_seed_endpoint_stores_dato(collector: CollectorProcess) -> None:
    status, body = call(collector.url("/nuevo?dato=81.5"))
    assert status == 201 and body["status"] == "stored"
    assert [r["mean"] for r in stored(collector)] == [81.5]


def test_json_round_is_stored_once_per_round_key(collector: CollectorProcess) -> None:
    assert post_round(collector, a_round(7))[0] == 201
    status, body = post_round(collector, a_round(7))
    assert (status, body["status"]) == (200, "duplicate")
    status, body = post_round(collector, a_round(7, epoch=2, mean=1.0))
    assert (status, body["status"]) == (200, "duplicate")
    rows = stored(collector)
    assert len(rows) == 1
    assert (rows[0]["round"], rows[0]["mean"], rows[0]["leader"]) == (7, 80.0, "2")


def test_older_epoch_is_refused(collector: CollectorProcess) -> None:
    assert post_round(collector, a_round(1, epoch=5))[0] == 201
    status, body = post_round(collector, a_round(2, epoch=4))
    assert status == 409 and "stale epoch 4" in body["error"]
    assert post_round(collector, a_round(2, epoch=5))[0] == 201
    assert [r["round"] for r in stored(collector)] == [2, 1]


def test_a_round_timed_by_an_unsynchronised_clock_is_stored_without_that_time(
        collector: CollectorProcess) -> None:
    assert post_round(collector, {**a_round(1), "clock": "unsynced"})[0] == 201
    assert post_round(collector, a_round(2))[0] == 201
    rows = {row["round"]: row for row in stored(collector)}
    assert rows[1]["measured_at"] is None and rows[1]["received_at"] > 0
    assert rows[2]["measured_at"] == 1_800_000_002.0


BAD_INPUTS = [
    ("/nuevo?dato=abc", None, "application/json", 400),
    ("/nuevo?dato=nan", None, "application/json", 400),
    ("/nuevo?dato=inf", None, "application/json", 400),
    ("/nuevo", None, "application/json", 400),
    ("/nuevo?dato=1&round=3", None, "application/json", 400),
    ("/nuevo?dato=1&epoch=3", None, "application/json", 400),
    ("/nuevo?dato=1&fleet=/f&incarnation=abc", None, "application/json", 400),
    ("/nuevo?dato=1&round=-1&epoch=1", None, "application/json", 400),
    ("/nuevo?dato=1&round=%2B1&epoch=1", None, "application/json", 400),
    ("/nuevo?dato=1&round=1.0&epoch=1", None, "application/json", 400),
    ("/nuevo?dato=1&round=1&epoch=", None, "application/json", 400),
    ("/nuevo?dato=1&round=9223372036854775808&epoch=1", None, "application/json", 400),
    ("/nuevo?dato=1&round=1&epoch=1&fleet=", None, "application/json", 400),
    ("/nuevo?dato=1&round=1&epoch=1&incarnation=a%20b", None, "application/json", 400),
    ("/nuevo?dato=x&round=1&epoch=1", None, "application/json", 400),
    ("/api/rounds", b"{not json", "application/json", 400),
    ("/api/rounds", b'{"mean": "\xff"}', "application/json", 400),
    ("/api/rounds", json.dumps({"round": 1, "epoch": 1}).encode(), "application/json", 400),
    ("/api/rounds", json.dumps({**a_round(1), "mean": "NaN"}).encode(), "application/json", 400),
    ("/api/rounds", json.dumps({**a_round(1), "round": -1}).encode(), "application/json", 400),
    ("/api/rounds", json.dumps({**a_round(1), "round": 2**63}).encode(), "application/json",
     400),
    ("/api/rounds", json.dumps(a_round(1, incarnation="x" * 65)).encode(), "application/json",
     400),
    ("/api/rounds", json.dumps(a_round(1, incarnation="a/b")).encode(), "application/json", 400),
    ("/api/rounds", json.dumps({**a_round(1), "incarnation": 7}).encode(), "application/json",
     400),
    ("/api/rounds", json.dumps([1, 2]).encode(), "application/json", 400),
    ("/api/rounds", json.dumps(a_round(1)).encode(), "text/plain", 415),
    ("/api/rounds", b'{"mean": 1, "pad": "' + b"x" * 20000 + b'"}', "application/json", 413),
]


@pytest.mark.parametrize(("path", "body", "content_type", "expected"), BAD_INPUTS)
def test_bad_input_gets_a_4xx_and_stores_nothing(
    collector: CollectorProcess, path: str, body: bytes | None, content_type: str, expected: int
) -> None:
    method = "GET" if body is None else "POST"
    status, reply = call(collector.url(path), method, body, {"Content-Type": content_type})
    assert status == expected
    assert isinstance(reply, dict) and "\n" not in reply["error"] and reply["error"]
    assert stored(collector) == []
    assert call(collector.url("/healthz"))[0] == 200


def test_writes_need_the_token_when_one_is_set(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    token_file.chmod(0o600)
    collector = CollectorProcess(tmp_path / "db.sqlite3", tmp_path / "c.log", token_file).start()
    try:
        assert post_round(collector, a_round(1))[0] == 401
        assert post_round(collector, a_round(1), {"Authorization": "Bearer wrong"})[0] == 401
        assert call(collector.url("/nuevo?dato=1"))[0] == 401
        assert post_round(collector, a_round(1), {"Authorization": "Bearer s3cret"})[0] == 201
        assert call(collector.url("/nuevo?dato=2"), headers={"Authorization": "Bearer s3cret"}
                    )[0] == 201
        assert len(stored(collector)) == 2
    finally:
        collector.stop()


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_acknowledged_rounds_survive_a_restart(tmp_path: Path, how: signal.Signals) -> None:
    collector = CollectorProcess(tmp_path / "db.sqlite3", tmp_path / "c.log").start()
    for number in range(1, 6):
        assert post_round(collector, a_round(number, epoch=3))[0] == 201
    collector.stop(how)
    again = CollectorProcess(tmp_path / "db.sqlite3", tmp_path / "c.log").start()
    try:
        assert [r["round"] for r in stored(again)] == [5, 4, 3, 2, 1]
        assert post_round(again, a_round(5, epoch=3))[1]["status"] == "duplicate"
        assert post_round(again, a_round(6, epoch=2))[0] == 409
    finally:
        again.stop()


def test_health_metrics_and_summary(collector: CollectorProcess) -> None:
    post_round(collector, a_round(1))
    post_round(collector, a_round(1))
    call(collector.url("/nuevo?dato=x"))
    status, body = call(collector.url("/healthz"))
    assert (status, body) == (200, {"status": "ok"})
    status, text = call(collector.url("/metrics"))
    assert status == 200
    assert 'zk_collector_deliveries_total{outcome="stored"} 1' in text
    assert 'zk_collector_deliveries_total{outcome="duplicate"} 1' in text
    assert 'zk_collector_deliveries_total{outcome="refused"} 1' in text
    assert "zk_collector_rounds 1" in text and "zk_collector_last_mean 80.0" in text
    status, summary = call(collector.url("/api/summary"))
    assert summary["rounds"] == 1 and summary["host"]
    assert summary["epochs"] == [{"fleet": "/f", "incarnation": None, "epoch": 1}]
    assert call(collector.url("/nope"))[0] == 404
    assert call(collector.url("/api/rounds"), "DELETE")[0] == 405

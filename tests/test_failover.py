"""A fleet whose api_url lists several collectors fails over between them (issue 20):
real collector processes on one real PostgreSQL (zk_sensor.testing.postgres), a real fleet
of daemons.
"""

from __future__ import annotations

import re
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from zk_sensor.testing.collector import CollectorProcess
from zk_sensor.testing.fleet import Fleet, Receiver, ctl, status, wait_for
from zk_sensor.testing.postgres import PgServer, postgres_bin
from zk_sensor.testing.zookeeper import MakeZk

pytestmark = pytest.mark.skipif(postgres_bin() is None,
                                reason="needs Debian's postgresql package (.ci/run installs it)")

TOKEN = "failover-token"


@pytest.fixture
def pair(pg: PgServer, tmp_path: Path) -> Iterator[list[CollectorProcess]]:
    """Two collectors on one fresh database, both asking for TOKEN."""
    database = pg.url(pg.new_database(), pg.passfile(tmp_path))
    token_file = tmp_path / "token"
    token_file.write_text(f"{TOKEN}\n")
    token_file.chmod(0o600)
    started = [CollectorProcess(tmp_path / f"{name}.sqlite3", tmp_path / f"{name}.log",
                                token_file, database=database).start() for name in "ab"]
    yield started
    for collector in started:
        if collector.process is not None and collector.process.poll() is None:
            collector.stop()


@pytest.fixture
def fleet(pair: list[CollectorProcess], zk_hosts: str, zk_namespace: str,
          tmp_path: Path) -> Iterator[Fleet]:
    urls = ", ".join(collector.url("/api/rounds") for collector in pair)
    running = Fleet(zk_hosts, zk_namespace, tmp_path, urls, period=0.3)
    yield running
    running.stop_all()


def start(fleet: Fleet, *node_ids: str) -> None:
    for node_id in node_ids:
        fleet.start(node_id, env={"ZK_SENSOR_API_TOKEN": TOKEN})
    for node_id in node_ids:
        fleet.daemons[node_id].wait_log(r"ready: first reading published")


def stored_by(collector: CollectorProcess) -> int:
    """Rounds this collector process stored itself (its own counter, not the shared store)."""
    with urllib.request.urlopen(collector.url("/metrics"), timeout=10) as reply:
        text = reply.read().decode()
    found = re.search(r'^zk_collector_deliveries_total\{outcome="stored"\} (\S+)$', text, re.M)
    return int(float(found.group(1))) if found else 0


def fleet_rounds(collector: CollectorProcess) -> list[int]:
    return [row["round"] for row in collector.rounds() if row["fleet"]]


def fleet_log(fleet: Fleet) -> str:
    return "".join(daemon.log() for daemon in fleet.history)


def kill_and_keep_delivering(fleet: Fleet, dead: CollectorProcess,
                             alive: CollectorProcess) -> None:
    """SIGKILL the collector in use: the next rounds are stored by the other one."""
    wait_for(lambda: stored_by(dead) >= 5, 60, "5 rounds stored by the collector in use")
    before = stored_by(alive)
    dead.stop(signal.SIGKILL)
    wait_for(lambda: stored_by(alive) >= before + 10, 30, "10 rounds through the other one\n"
             + fleet_log(fleet)[-3000:])
    switched = rf"delivering to {re.escape(alive.url('/api/rounds'))} " \
               rf"\({re.escape(dead.url('/api/rounds'))} failed: "
    assert len(re.findall(switched, fleet_log(fleet))) == 1, "one line per switch"


def test_rounds_follow_the_live_collector_when_the_one_in_use_is_killed(
        fleet: Fleet, pair: list[CollectorProcess]) -> None:
    first, second = pair
    start(fleet, "1", "2", "3")
    kill_and_keep_delivering(fleet, first, second)
    first.start_on(first.port)
    kill_and_keep_delivering(fleet, second, first)
    wait_for(lambda: status(fleet)["outbox"]["pending"] == 0, 30, "the outbox to drain")
    fleet.stop_all()
    numbers = fleet_rounds(first)
    assert len(numbers) == len(set(numbers)), "a round stored twice"
    assert sorted(numbers) == list(range(min(numbers), max(numbers) + 1)), "a round lost"
    assert "delivery of round" not in fleet_log(fleet), "a failover is not a failed delivery"


def test_a_list_with_a_bad_entry_is_refused_whole(
        fleet: Fleet, pair: list[CollectorProcess], make_zk: MakeZk) -> None:
    first, second = pair
    good = f"{first.url('/api/rounds')},{second.url('/api/rounds')}"
    assert ctl(fleet, "config", "set", "api_url", f" {second.url('/api/rounds')} , "
               f"{first.url('/api/rounds')}").returncode == 0
    set_value = ctl(fleet, "config", "get", "api_url").stdout
    assert set_value == f"api_url = {second.url('/api/rounds')},{first.url('/api/rounds')}\n"
    assert ctl(fleet, "config", "set", "api_url", good).returncode == 0

    bad = f"{first.url('/api/rounds')}, ftp://{second.url('/api/rounds')[7:]}"
    refused = ctl(fleet, "config", "set", "api_url", bad)
    assert refused.returncode != 0
    assert refused.stderr.count("\n") == 1 and "must start with http:// or https://" in \
        refused.stderr
    assert ctl(fleet, "config", "get", "api_url").stdout == f"api_url = {good}\n"

    start(fleet, "1")
    daemon = fleet.daemons["1"]
    zk = make_zk(fleet.hosts)
    zk.set(f"{fleet.namespace}/config/api_url", bad.encode())
    daemon.wait_log(r"config refused: api_url 'ftp://\S+' must start with http:// or "
                    rf"https://; keeping api_url = {re.escape(good)}")
    before = stored_by(first)
    wait_for(lambda: stored_by(first) >= before + 5, 30, "rounds still delivered")


def test_the_token_goes_to_no_listed_url_outside_the_local_settings_origins(
        fleet: Fleet, pair: list[CollectorProcess]) -> None:
    first, second = pair
    with Receiver() as stranger:
        stolen = stranger.url("/stolen")
        assert ctl(fleet, "config", "set", "api_url",
                   f"{stolen},{second.url('/api/rounds')}").returncode == 0
        start(fleet, "1")
        wait_for(lambda: stored_by(second) >= 5, 30, "rounds through the listed collector")
        daemon = fleet.daemons["1"]
        daemon.wait_log(rf"api_url {re.escape(stolen)} is outside the write token's "
                        rf"origins \(.*\); delivering to {re.escape(second.url('/api/rounds'))}"
                        " only")
        assert stranger.snapshot() == []
        assert stored_by(first) == 0
        assert TOKEN not in daemon.log()

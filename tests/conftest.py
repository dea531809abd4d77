"""Shared fixtures: real ZooKeeper servers and kazoo clients (see zk_sensor.testing.zookeeper)."""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient

from zk_sensor.testing import pki as pki
from zk_sensor.testing.collector import CollectorProcess
from zk_sensor.testing.fleet import Fleet, Receiver
from zk_sensor.testing.postgres import PgServer
from zk_sensor.testing.zookeeper import MakeZk, ZkEnsemble

CONNECT_TIMEOUT_S = 10.0
START_TIMEOUT_S = 60.0


def pytest_configure(config: pytest.Config) -> None:
    """Register markers here too, so they hold even without pyproject's ini options."""
    config.addinivalue_line("markers", "ensemble: uses a fresh 3-server ZooKeeper ensemble")


# The longest files first: `make test` gives each file to one worker, and the lab's twelve
# minutes then overlap the rest of the suite instead of starting when it is nearly done.
LONGEST_FIRST = ("test_lab.py", "test_nemesis.py", "test_faults.py", "test_failover.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)


@pytest.fixture(scope="session")
def zk_standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZkEnsemble]:
    """One standalone server shared by the whole session (a ZkEnsemble with n=1).

    Shared because a JVM start costs seconds; tests isolate themselves with
    `zk_namespace` instead.  Tests must not stop it (use `zk_ensemble` for
    that); if one does anyway, `zk_hosts`/`zk_namespace` restart it.
    """
    ensemble = ZkEnsemble(tmp_path_factory.mktemp("zk-standalone"), n=1)
    ensemble.start()
    try:
        ensemble.wait_serving(START_TIMEOUT_S)
        yield ensemble
    finally:
        ensemble.stop()


def _ensure_serving(ensemble: ZkEnsemble) -> None:
    """Restart the shared server if an earlier test stopped or crashed it."""
    server = ensemble.servers[0]
    if not server.is_running():
        server.stop()  # reap a JVM that died by itself
        server.start()
    ensemble.wait_serving(START_TIMEOUT_S)


@pytest.fixture
def zk_hosts(zk_standalone: ZkEnsemble) -> str:
    """Connect string of the shared standalone server (no chroot)."""
    _ensure_serving(zk_standalone)
    return zk_standalone.hosts


@pytest.fixture
def make_zk() -> Iterator[MakeZk]:
    """Factory `make_zk(hosts, **kazoo_kwargs) -> KazooClient`, connected.

    Connects with a 10 s timeout; every client it made is stopped and closed at
    teardown, so tests never leak sessions or kazoo threads.
    """
    clients: list[KazooClient] = []

    def factory(hosts: str, **kwargs: Any) -> KazooClient:
        client = KazooClient(hosts=hosts, **kwargs)
        clients.append(client)
        client.start(timeout=CONNECT_TIMEOUT_S)
        return client

    yield factory
    for client in reversed(clients):
        with contextlib.suppress(Exception):
            client.stop()
        with contextlib.suppress(Exception):
            client.close()


def _namespace_for(test_name: str) -> str:
    """Return "/t-<sanitised test name>-<6 random hex>": unique, yet traceable to its test."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", test_name).strip("-")[:60] or "test"
    return f"/t-{slug}-{secrets.token_hex(3)}"


@pytest.fixture
def zk_namespace(request: pytest.FixtureRequest, zk_hosts: str) -> Iterator[str]:
    """A fresh znode on the shared server, for a test to use as the daemon's chroot.

    kazoo does not create the chroot node of "host:port/chroot", so it is
    created here first; it is deleted recursively afterwards (errors ignored:
    the server may be gone, or the test may have removed it).
    """
    namespace = _namespace_for(request.node.name)
    admin = KazooClient(hosts=zk_hosts)
    admin.start(timeout=CONNECT_TIMEOUT_S)
    try:
        admin.ensure_path(namespace)
    finally:
        admin.stop()
        admin.close()
    yield namespace
    admin = KazooClient(hosts=zk_hosts)
    with contextlib.suppress(Exception):
        admin.start(timeout=CONNECT_TIMEOUT_S)
        admin.delete(namespace, recursive=True)
    with contextlib.suppress(Exception):
        admin.stop()
        admin.close()


@pytest.fixture
def zk_ensemble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZkEnsemble]:
    """A fresh 3-server quorum per test, serving, stopped afterwards.

    Never shared: tests stop and kill its members.
    """
    ensemble = ZkEnsemble(tmp_path_factory.mktemp("zk-ensemble"), n=3)
    ensemble.start()
    try:
        ensemble.wait_serving(START_TIMEOUT_S)
        yield ensemble
    finally:
        ensemble.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A real HTTP endpoint on loopback that records every delivery."""
    with Receiver() as running:
        yield running


@pytest.fixture
def fleet(zk_hosts: str, zk_namespace: str, receiver: Receiver, tmp_path: Path) -> Iterator[Fleet]:
    """Daemons on the shared standalone server, in the test's own namespace, delivering
    JSON to `receiver`; all stopped at teardown."""
    running = Fleet(zk_hosts, zk_namespace, tmp_path, receiver.url("/rounds"))
    yield running
    running.stop_all()


@pytest.fixture
def ensemble_fleet(zk_ensemble: ZkEnsemble, receiver: Receiver, tmp_path: Path) -> Iterator[Fleet]:
    """Daemons on a fresh 3-server ensemble, connected through all three servers."""
    running = Fleet(zk_ensemble.hosts, "/zk-sensor", tmp_path, receiver.url("/rounds"))
    yield running
    running.stop_all()


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[CollectorProcess]:
    """A running zk-collector with its own database, stopped at teardown."""
    running = CollectorProcess(tmp_path / "rounds.sqlite3", tmp_path / "collector.log").start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pki.TlsServer]:
    """A standalone ZooKeeper with a secure client port whose certificate names
    127.0.0.1 and localhost, signed by a test CA."""
    base = tmp_path_factory.mktemp("zk-tls")
    ca = pki.CertificateAuthority(base / "pki")
    ensemble = ZkEnsemble.standalone_tls(base, ca.issue("zk1").combined, ca.cert)
    ensemble.start()
    try:
        ensemble.wait_serving()
        yield pki.TlsServer(ca, ensemble.secure_hosts, ca.issue("node"))
    finally:
        ensemble.stop()


@pytest.fixture(scope="module")
def pg() -> Iterator[PgServer]:
    """A PostgreSQL server of Debian's package for one test module (zk_sensor.testing.postgres)."""
    server = PgServer().start()
    try:
        yield server
    finally:
        server.destroy()

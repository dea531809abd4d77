"""The fast tier: the protocol's decisions against the in-memory ZooKeeper
(zk_sensor.testing.memory), no server, no process, milliseconds a test.

Everything under tests/fast is marked `fast`: `pytest -m fast` or `pytest tests/fast`."""

import logging
from pathlib import Path

import pytest

from zk_sensor.fleet.layout import Layout
from zk_sensor.testing.memfleet import MemFleet
from zk_sensor.testing.memory import MemoryEnsemble, MemoryZk

HERE = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fast: the in-memory tier (tests/fast), no server")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.fast)


@pytest.fixture(autouse=True)
def info_logs(caplog: pytest.LogCaptureFixture) -> None:
    """The leader's round lines are INFO: what an operator reads, the tests read too."""
    caplog.set_level(logging.INFO, logger="zk_sensor")


@pytest.fixture
def ensemble() -> MemoryEnsemble:
    return MemoryEnsemble(session_timeout=30.0)


@pytest.fixture
def layout() -> Layout:
    return Layout("/fleet")


@pytest.fixture
def zk(ensemble: MemoryEnsemble) -> MemoryZk:
    return ensemble.client()


@pytest.fixture
def admin(ensemble: MemoryEnsemble) -> MemoryZk:
    """Whoever writes poison: any fleet credential, here ZooKeeper's super user."""
    return ensemble.client(super_user=True)


@pytest.fixture
def fleet(ensemble: MemoryEnsemble, layout: Layout) -> MemFleet:
    return MemFleet(ensemble, layout)

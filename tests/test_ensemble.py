"""A fleet on a 3-server ensemble keeps going when the ensemble loses its leader."""

import time

import pytest

from zk_sensor.testing.fleet import Fleet, Receiver, wait_for
from zk_sensor.testing.zookeeper import ZkEnsemble


@pytest.mark.ensemble
def test_stopping_the_ensemble_leader_does_not_stop_the_fleet(
    zk_ensemble: ZkEnsemble, ensemble_fleet: Fleet, receiver: Receiver
) -> None:
    ensemble_fleet.start_ready("1", "2", "3")
    receiver.wait_rounds(3)
    server = zk_ensemble.leader()
    stopped_at = time.time()
    server.stop()
    zk_ensemble.wait_serving()
    after = receiver.wait_rounds(6, after=stopped_at, timeout=30)
    rounds = [d.body["round"] for d in after]
    assert rounds == sorted(set(rounds))
    assert all(d.running for d in ensemble_fleet.daemons.values())
    assert after[-1].body["count"] == 3
    server.start()
    wait_for(lambda: server.mode() == "follower", 30, "the old leader server to rejoin")

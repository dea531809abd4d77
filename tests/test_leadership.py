"""Leadership is a fact the loop re-checks: a suspended connection ends it at once."""

import time

from zk_sensor.testing.fleet import Fleet, Receiver, wait_for
from zk_sensor.testing.zookeeper import ZkEnsemble


def test_leader_steps_down_when_its_connection_is_suspended(
    tmp_path, receiver: Receiver
) -> None:
    ensemble = ZkEnsemble(tmp_path / "zk", n=1)
    ensemble.start()
    ensemble.wait_serving()
    fleet = Fleet(ensemble.hosts, "/zk-sensor", tmp_path, receiver.url("/rounds"))
    try:
        fleet.start_ready("1", "2")
        receiver.wait_rounds(3)
        old_epoch = receiver.snapshot()[-1].body["epoch"]
        leader = next(d for d in fleet.daemons.values() if "I am the leader now" in d.log())
        ensemble.servers[0].pause()
        paused_at = time.time()
        leader.wait_log(r"stepping down as leader \(epoch \d+\): connection suspended",
                        timeout=fleet.session_timeout + 2)
        detected_after = time.time() - paused_at
        ensemble.servers[0].resume()
        after = receiver.wait_rounds(3, after=time.time(), timeout=30)
        assert detected_after < fleet.session_timeout
        assert after[-1].body["epoch"] > old_epoch
        rounds = receiver.rounds()
        assert rounds == sorted(set(rounds)), "no round may be delivered twice"
        wait_for(lambda: all(d.running for d in fleet.daemons.values()), 1, "daemons alive")
    finally:
        fleet.stop_all()
        ensemble.stop()

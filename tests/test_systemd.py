"""The systemd notify protocol, received on a real datagram socket as systemd would."""

import signal
import socket
import time

from zk_sensor.testing.fleet import Fleet, Receiver, wait_for


def test_ready_status_watchdog_and_stopping(fleet: Fleet, receiver: Receiver, tmp_path) -> None:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    messages: list[str] = []

    def received(text: str) -> list[str]:
        try:
            while True:
                messages.append(sock.recv(4096).decode())
        except TimeoutError:
            pass
        return [m for m in messages if text in m]

    try:
        daemon = fleet.start("1", env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "6000000"})
        wait_for(lambda: received("READY=1"), 20, "READY=1")
        assert "ready: first reading published" in daemon.log()
        wait_for(lambda: received("STATUS=leader (epoch"), 20, "a leader STATUS line")
        wait_for(lambda: received("last mean"), 20, "a STATUS line with the last mean")
        started = time.monotonic()
        wait_for(lambda: len(received("WATCHDOG=1")) >= 3, 20, "three watchdog pings")
        assert time.monotonic() - started < 10
        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit() == 0
        wait_for(lambda: received("STOPPING=1"), 5, "STOPPING=1")
    finally:
        sock.close()


def test_too_short_watchdog_refuses_to_start(fleet: Fleet, tmp_path) -> None:
    daemon = fleet.start("1", env={"NOTIFY_SOCKET": str(tmp_path / "none"),
                                   "WATCHDOG_USEC": "2000000"})
    assert daemon.wait_exit() == 2
    assert "WatchdogSec is too short" in daemon.log()


def test_outside_systemd_logs_are_plain_with_the_node_id(fleet: Fleet) -> None:
    daemon = fleet.start_ready("7")[0]
    first = daemon.log().splitlines()[0]
    assert " INFO    node 7: starting" in first
    assert not first.startswith("<")


def test_under_journald_lines_carry_priorities(fleet: Fleet) -> None:
    log_file = fleet.work_dir / f"node-8-{len(fleet.history)}.log"
    log_file.touch()
    stat = log_file.stat()
    daemon = fleet.start("8", "--zookeeper", "127.0.0.1:1", "--session-timeout", "3",
                         env={"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}"})
    daemon.wait_log(r"<4>node 8: cannot reach ZooKeeper")
    assert daemon.log().startswith("<6>node 8: starting")

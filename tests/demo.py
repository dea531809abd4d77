"""A local zk-sensor fleet to watch and poke at: `make demo`.

Starts, all on 127.0.0.1 and all under `.demo/` in the repository (wiped first):

* a 3-server ZooKeeper ensemble (the test harness's `ZkEnsemble`, so the demo runs
  exactly the servers the tests run),
* a stand-in collector that prints every mean it receives,
* three `zk-sensor` daemons, ids 1 to 3, each logging to `.demo/node-N.log`.

It then prints the commands to look at the fleet, change its config live and force a
leader failover, and waits.  Ctrl-C (SIGINT) or SIGTERM stops everything in order:
daemons first (so they close their sessions while ZooKeeper is still up), then the
collector, then the ensemble; it exits 0 once nothing it started is left running.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import IO
from urllib.parse import parse_qs, urlsplit

from zkharness import LOOPBACK, ZkEnsemble

REPO = Path(__file__).resolve().parent.parent
DEMO_DIR = REPO / ".demo"
LOCK_NAME = "demo.lock"
NODE_IDS = (1, 2, 3)
SAMPLING_PERIOD_S = 2
ENSEMBLE_START_TIMEOUT_S = 60.0
DAEMON_STOP_GRACE_S = 10.0
# How often the demo asks zk-sensorctl who leads, to announce failovers.
LEADER_POLL_S = 3.0
CTL_TIMEOUT_S = 15.0
POLL_S = 0.5


class StopDemo(BaseException):
    """Raised by the SIGINT/SIGTERM handler to leave whatever the demo is doing.

    A BaseException (like KeyboardInterrupt) so no `except Exception` on the way
    swallows it; start-up can take seconds (JVMs) and must be interruptible too.
    """


def stamp() -> str:
    """Wall-clock time for the demo's own lines, to line them up with the logs."""
    return time.strftime("%H:%M:%S")


def say(message: str) -> None:
    """One line of demo output, prefixed with the time."""
    print(f"[{stamp()}] {message}", flush=True)


def shown(path: Path) -> str:
    """`path` as the user should type it: relative when run from the repo (as make does)."""
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


def bin_path(name: str) -> Path:
    """A console script of this venv (the demo is run by the venv's python), else PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.is_file():
        return candidate
    found = shutil.which(name)
    if found is None:
        sys.exit(f"demo: cannot find {name}; run `make venv` first")
    return Path(found)


class CollectorHandler(BaseHTTPRequestHandler):
    """Answers the seed's API, `GET /nuevo?dato=<mean>`, and prints each mean."""

    server_version = "zk-sensor-demo-collector"

    def do_GET(self) -> None:
        """200 for a well-formed mean, 400 for a bad one, 404 for any other path."""
        url = urlsplit(self.path)
        if url.path.rstrip("/") != "/nuevo":
            self._answer(404, "not found\n")
            return
        values = parse_qs(url.query).get("dato", [])
        try:
            mean = float(values[0])
        except (IndexError, ValueError):
            say(f"collector: refused {self.path!r} (no numeric dato)")
            self._answer(400, "dato must be a number\n")
            return
        say(f"collector: received mean {mean:.2f} from {self.client_address[0]}")
        self._answer(200, "ok\n")

    def _answer(self, status: int, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        """Silence the default per-request stderr line: do_GET already prints one."""


class StandInCollector:
    """A tiny stand-in for the real collector, `zk-collector`, until that one lands.

    Temporary on purpose: it only proves that means leave the leader and arrive
    somewhere, printing each with its time.  No web page, no storage, no
    de-duplication; replace it with `zk-collector` when that exists.
    """

    def __init__(self) -> None:
        """Bind a free port on loopback now, so the URL is known before the daemons start."""
        self.server = ThreadingHTTPServer((LOOPBACK, 0), CollectorHandler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="collector", daemon=True
        )

    @property
    def url(self) -> str:
        """The api_url the daemons are given."""
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/nuevo"

    def start(self) -> None:
        """Serve in a background thread."""
        self.thread.start()

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self.thread.is_alive():
            self.server.shutdown()
            self.thread.join()
        self.server.server_close()


@dataclass
class Daemon:
    """One zk-sensor process and where its log goes."""

    node_id: int
    proc: subprocess.Popen[bytes]
    log_file: Path
    reported_exit: bool = False


def daemon_env() -> dict[str, str]:
    """The caller's environment minus ZK_SENSOR_*, which would override the demo's flags."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ZK_SENSOR_")}


def start_daemon(node_id: int, hosts: str, api_url: str) -> Daemon:
    """Launch one daemon with stderr (its log) going to `.demo/node-N.log`.

    It gets its own session so a Ctrl-C in the terminal reaches only this script,
    which then stops the daemons itself, before the ensemble.  `setpriv --pdeathsig`
    (util-linux) still has the kernel send SIGTERM if this script dies without
    cleaning up; setpriv execs the daemon, so the pid we print is the daemon's.
    """
    log_file = DEMO_DIR / f"node-{node_id}.log"
    command = [
        str(bin_path("zk-sensor")),
        *("--id", str(node_id)),
        *("--zookeeper", hosts),
        *("--sampling-period", str(SAMPLING_PERIOD_S)),
        *("--api-url", api_url),
    ]
    setpriv = shutil.which("setpriv")
    if setpriv:
        command = [setpriv, "--pdeathsig", "TERM", "--", *command]
    with log_file.open("wb") as log:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=daemon_env(),
            start_new_session=True,
        )
    return Daemon(node_id, proc, log_file)


def stop_daemons(daemons: list[Daemon]) -> None:
    """SIGTERM all at once, then wait up to 10 s for each, SIGKILL whoever is left.

    All get the signal together so the fleet's shutdown takes one grace period,
    not three.  A daemon that exits with a non-zero code is reported.
    """
    for daemon in daemons:
        if daemon.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                daemon.proc.terminate()
    for daemon in daemons:
        try:
            code = daemon.proc.wait(timeout=DAEMON_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            say(
                f"node {daemon.node_id} (pid {daemon.proc.pid}) ignored SIGTERM for "
                f"{DAEMON_STOP_GRACE_S:.0f} s: killing it"
            )
            daemon.proc.kill()
            code = daemon.proc.wait()
        if code != 0 and not daemon.reported_exit:
            say(f"node {daemon.node_id} exited with code {code}; see {shown(daemon.log_file)}")


def current_leader(hosts: str) -> str | None:
    """The leading node's id, asked of `zk-sensorctl status --json`; None if unknown.

    Goes through the operator CLI rather than kazoo so the demo relies only on
    the fleet's public interface.
    """
    try:
        result = subprocess.run(
            [str(bin_path("zk-sensorctl")), "--zookeeper", hosts, "status", "--json"],
            capture_output=True,
            text=True,
            timeout=CTL_TIMEOUT_S,
            env=daemon_env(),
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None
    if result.returncode != 0:
        return None
    try:
        leader = json.loads(result.stdout).get("leader")
    except (json.JSONDecodeError, AttributeError):
        return None
    return str(leader) if leader is not None else None


def print_guide(hosts: str, daemons: list[Daemon]) -> None:
    """Tell the user where to look and what to try, with commands ready to copy."""
    ctl = f"{shlex.quote(shown(bin_path('zk-sensorctl')))} --zookeeper {hosts}"
    logs = shlex.quote(shown(DEMO_DIR)) + "/node-*.log"
    pids = ", ".join(f"node {d.node_id} = {d.proc.pid}" for d in daemons)
    print(
        "\n"
        "==================================================================\n"
        "The fleet is running. In another terminal, from the repository:\n"
        "\n"
        f"  fleet status:   {ctl} status\n"
        f"  daemon logs:    tail -f {logs}\n"
        f"  config change:  {ctl} config set sampling_period 3\n"
        "  failover:       kill <pid of the leader>   (the status shows who leads)\n"
        "                  kill -9 <pid>: a crash; the next leader waits out the 10 s session\n"
        f"  daemon pids:    {pids}\n"
        f"  ZooKeeper logs: {shown(DEMO_DIR)}/zk*/zookeeper.log\n"
        "\n"
        "Means arrive below as the leader posts them. Ctrl-C stops everything.\n"
        "==================================================================\n",
        flush=True,
    )


def watch(hosts: str, daemons: list[Daemon]) -> None:
    """Run until a signal: report daemons that exit and every change of leader."""
    by_id = {str(d.node_id): d for d in daemons}
    leader: str | None = None
    next_poll = 0.0
    while True:
        for daemon in daemons:
            code = daemon.proc.poll()
            if code is not None and not daemon.reported_exit:
                daemon.reported_exit = True
                say(
                    f"node {daemon.node_id} (pid {daemon.proc.pid}) exited with code {code}; "
                    "the demo does not restart it"
                )
        if time.monotonic() >= next_poll:
            now_leading = current_leader(hosts)
            if now_leading is not None and now_leading != leader:
                daemon = by_id.get(now_leading)
                pid = f" (pid {daemon.proc.pid})" if daemon else ""
                say(f"leader is now node {now_leading}{pid}")
                leader = now_leading
            next_poll = time.monotonic() + LEADER_POLL_S
        time.sleep(POLL_S)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into StopDemo inside the block; ignore them after it.

    Ignoring during cleanup is deliberate: a second Ctrl-C must not abandon JVMs
    half-stopped.  Cleanup is bounded (10 s per daemon, 10 s per server).
    """

    def handler(signum: int, _frame: FrameType | None) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise StopDemo(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def claim_demo_dir() -> IO[str] | None:
    """Lock `.demo/` and empty it; None if another demo holds the lock.

    Two demos at once would wipe each other's servers' data under their feet.
    The lock file survives the wipe and is released by the kernel however this
    process ends, so a crashed demo never blocks the next one.
    """
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    lock = (DEMO_DIR / LOCK_NAME).open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return None
    for entry in DEMO_DIR.iterdir():
        if entry.name == LOCK_NAME:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    return lock


def main() -> int:
    """Start everything, wait for a signal, stop everything; 0 unless start-up failed."""
    lock = claim_demo_dir()
    if lock is None:
        print(
            f"demo: another demo is already running in {shown(DEMO_DIR)}/; stop it first",
            file=sys.stderr,
        )
        return 1
    ensemble = ZkEnsemble(DEMO_DIR, n=3)
    collector: StandInCollector | None = None
    daemons: list[Daemon] = []
    status = 0
    try:
        with stop_on_signals():
            say(f"starting a 3-server ZooKeeper ensemble in {shown(DEMO_DIR)}/ ...")
            ensemble.start()
            took = ensemble.wait_serving(ENSEMBLE_START_TIMEOUT_S)
            modes = ", ".join(f"zk{myid} {mode}" for myid, mode in ensemble.modes().items())
            say(f"ensemble serving after {took:.1f} s at {ensemble.hosts} ({modes})")

            collector = StandInCollector()
            collector.start()
            say(f"stand-in collector listening at {collector.url}")

            for node_id in NODE_IDS:
                daemon = start_daemon(node_id, ensemble.hosts, collector.url)
                daemons.append(daemon)
                say(
                    f"started zk-sensor node {node_id}, pid {daemon.proc.pid}, "
                    f"log {shown(daemon.log_file)}"
                )
            print_guide(ensemble.hosts, daemons)
            watch(ensemble.hosts, daemons)
    except StopDemo as stop:
        print(flush=True)
        say(f"{stop}: stopping the daemons, the collector and the ensemble ...")
    except Exception as error:
        say(f"demo failed: {error}")
        status = 1
    finally:
        stop_daemons(daemons)
        if collector is not None:
            collector.stop()
        ensemble.stop()
    say(f"everything stopped (daemons, collector, ZooKeeper); logs are kept in {shown(DEMO_DIR)}/")
    lock.close()
    return status


if __name__ == "__main__":
    sys.exit(main())

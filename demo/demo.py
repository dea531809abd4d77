"""A local zk-sensor fleet to watch and poke at: `make demo` (or `.venv/bin/python
demo/demo.py`).

Starts, all on 127.0.0.1 and all under `.demo/` in the repository (wiped first;
`--dir` chooses another directory):

* a 3-server ZooKeeper ensemble (the test harness's `ZkEnsemble`, so the demo runs
  exactly the servers the tests run),
* the real collector, `zk-collector`, on port 8080 if that is free (else on any free
  port), logging to `.demo/collector.log` and keeping rounds in `.demo/rounds.sqlite3`,
* three `zk-sensor` daemons, ids 1 to 3, each logging to `.demo/node-N.log` and
  delivering to the collector's JSON API (`POST /api/rounds`).

It writes `.demo/zk-sensorctl.toml` (the ensemble's `zookeeper` and the fleet's
`namespace`, the keys of a node's file, which `zk-sensorctl -c FILE` reads) and, once a
node leads, prints the line to paste into another shell so that a plain
`zk-sensorctl status` talks to this fleet, the collector's page URL to open in a browser
and the commands to look at the fleet, change its config live and force a leader
failover. It then waits, printing each new round the collector stores (it polls
`/api/rounds`) and each change of leader.  Ctrl-C (SIGINT) or SIGTERM stops everything
in order: daemons first (so they close their sessions while ZooKeeper is still up), then
the collector, then the ensemble; it exits 0 once nothing it started is left running.

A program, not a test, so it lives in demo/; tests/test_demo.py runs it as `make demo`
does and checks the printed line and the clean stop.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any

# The demo runs the test harness's ZooKeeper servers and collector process
# (zk_sensor.testing), exactly those the tests run (same jars, logging, JVM options, free
# ports, start-up checks): one copy, never two that drift.
from zk_sensor.testing.collector import CollectorFailed, CollectorProcess, collector_env
from zk_sensor.testing.zookeeper import LOOPBACK, ZkEnsemble

REPO = Path(__file__).resolve().parent.parent

DEFAULT_DEMO_DIR = REPO / ".demo"
LOCK_NAME = "demo.lock"
CTL_CONFIG_NAME = "zk-sensorctl.toml"
NAMESPACE = "/zk-sensor"
NODE_IDS = (1, 2, 3)
SAMPLING_PERIOD_S = 2
ENSEMBLE_START_TIMEOUT_S = 60.0
# How long the fleet may take to elect its first leader before the guide is printed anyway.
FLEET_START_TIMEOUT_S = 60.0
DAEMON_STOP_GRACE_S = 10.0
# The collector's usual port; the demo falls back to a free one when it is taken.
COLLECTOR_PORT = 8080
COLLECTOR_START_TIMEOUT_S = 30.0
COLLECTOR_STOP_GRACE_S = 10.0
# How often the demo asks the collector for its newest round, and how long one ask may take.
ROUNDS_POLL_S = 2.0
HTTP_TIMEOUT_S = 2.0
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


# The demo talks only to 127.0.0.1: never through an http_proxy from the environment.
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def clean_env(prefix: str) -> dict[str, str]:
    """The caller's environment minus variables starting with `prefix`.

    The daemons and the collector read settings from ZK_SENSOR_* and ZK_COLLECTOR_*;
    any left in the user's shell would override the demo's flags.
    """
    return {k: v for k, v in os.environ.items() if not k.startswith(prefix)}


def supervised(command: list[str]) -> list[str]:
    """`command` under `setpriv --pdeathsig TERM` (util-linux) when available.

    The kernel then sends SIGTERM to the child if this script dies without cleaning
    up; setpriv execs the command, so the pid we print and signal is the program's.
    """
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--", *command] if setpriv else command


def reap(proc: subprocess.Popen[bytes], what: str, grace: float, log_file: Path,
         reported: bool) -> None:
    """Wait `grace` seconds for a process already sent SIGTERM, then SIGKILL it; a
    non-zero exit not reported yet is reported now."""
    try:
        code = proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        say(f"{what} (pid {proc.pid}) ignored SIGTERM for {grace:.0f} s: killing it")
        proc.kill()
        code = proc.wait()
    if code != 0 and not reported:
        say(f"{what} exited with code {code}; see {shown(log_file)}")


def port_is_free(port: int) -> bool:
    """Whether a server could bind 127.0.0.1:`port` now (with SO_REUSEADDR, as servers do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def get_json(url: str) -> Any:
    """GET `url` and decode its JSON body; None on any failure (the demo only watches)."""
    try:
        with HTTP.open(url, timeout=HTTP_TIMEOUT_S) as reply:
            return json.load(reply)
    except (OSError, ValueError):
        return None


class Collector:
    """The real collector, `zk-collector`, as a child process of the demo.

    Like the daemons it runs in its own session (a Ctrl-C reaches only this script,
    which stops it after the daemons) under setpriv's pdeathsig, logs to
    `.demo/collector.log` and keeps its rounds in `.demo/rounds.sqlite3`.
    """

    def __init__(self, demo_dir: Path) -> None:
        self.log_file = demo_dir / "collector.log"
        self.db_file = demo_dir / "rounds.sqlite3"
        # Appending to its log: after a fallback it still shows why the first attempt failed.
        self.server = CollectorProcess(
            self.db_file, self.log_file, host=LOOPBACK, prefix=supervised([]),
            popen={"stdin": subprocess.DEVNULL, "cwd": REPO, "start_new_session": True},
            env=collector_env())
        self.reported_exit = False

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self.server.process

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def base_url(self) -> str:
        """Where the page is, e.g. http://127.0.0.1:8080/."""
        return f"http://{LOOPBACK}:{self.port}/"

    @property
    def api_url(self) -> str:
        """The api_url the daemons are given: the rich JSON delivery."""
        return self.base_url + "api/rounds"

    def start(self) -> float:
        """Serve on 8080 if free, else on a free port; wait for /healthz; return seconds taken.

        A free port is asked of the kernel (`--listen 127.0.0.1:0`) and read back from
        the collector's "serving on" line, so no other process can take it in between.
        If 8080 is taken between the check and the bind, the demo falls back the same way.
        """
        began = time.monotonic()
        wanted = COLLECTOR_PORT if port_is_free(COLLECTOR_PORT) else 0
        if wanted == 0:
            say(f"port {COLLECTOR_PORT} is taken: the collector gets a free port instead")
        try:
            self._start_on(wanted, began + COLLECTOR_START_TIMEOUT_S)
        except CollectorFailed as failure:
            if wanted == 0 or failure.exit_code is None:
                raise
            say(f"{failure}; retrying on a free port")
            self._start_on(0, time.monotonic() + COLLECTOR_START_TIMEOUT_S)
        return time.monotonic() - began

    def _start_on(self, port: int, deadline: float) -> None:
        """Launch on `port` (0: a free one, read back from its "serving on" line), then poll
        until /healthz answers 200; CollectorFailed on exit or at the deadline."""
        try:
            self.server.start_on(port, timeout=max(deadline - time.monotonic(), 0.0))
        except CollectorFailed as failure:
            raise CollectorFailed(f"{failure}; see {shown(self.log_file)}",
                                  failure.exit_code) from None
        assert self.proc is not None
        while not self.healthy():
            code = self.proc.poll()
            if code is not None:
                raise CollectorFailed(
                    f"zk-collector exited with code {code} ({self.server.last_log_line()}); "
                    f"see {shown(self.log_file)}", code)
            if time.monotonic() >= deadline:
                raise CollectorFailed(
                    f"zk-collector (pid {self.proc.pid}) did not answer /healthz within "
                    f"{COLLECTOR_START_TIMEOUT_S:.0f} s; see {shown(self.log_file)}")
            time.sleep(0.1)

    def healthy(self) -> bool:
        """Whether `/healthz` answers 200 (urllib raises HTTPError, an OSError, otherwise)."""
        try:
            with HTTP.open(self.base_url + "healthz", timeout=HTTP_TIMEOUT_S) as reply:
                return reply.status == 200
        except OSError:
            return False

    def rounds_after(self, last_id: int | None) -> list[dict[str, Any]]:
        """Rounds stored since `last_id` (the newest 20 at most), oldest first."""
        answer = get_json(self.base_url + "api/rounds?limit=20")
        rounds = answer.get("rounds") if isinstance(answer, dict) else None
        if not isinstance(rounds, list):
            return []
        fresh = [r for r in rounds if isinstance(r, dict) and isinstance(r.get("id"), int)
                 and (last_id is None or r["id"] > last_id)]
        return sorted(fresh, key=lambda r: r["id"])[-20 if last_id is not None else -1:]

    def stop(self) -> None:
        """SIGTERM, wait up to 10 s, then SIGKILL; a non-zero exit is reported."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
        reap(self.proc, "zk-collector", COLLECTOR_STOP_GRACE_S, self.log_file,
             self.reported_exit)


@dataclass
class Daemon:
    """One zk-sensor process and where its log goes."""

    node_id: int
    proc: subprocess.Popen[bytes]
    log_file: Path
    reported_exit: bool = False


def start_daemon(demo_dir: Path, node_id: int, hosts: str, api_url: str) -> Daemon:
    """Launch one daemon with stderr (its log) going to `.demo/node-N.log`.

    It gets its own session so a Ctrl-C in the terminal reaches only this script,
    which then stops the daemons itself, before the collector and the ensemble;
    `supervised` still has it stopped if this script dies without cleaning up.
    """
    log_file = demo_dir / f"node-{node_id}.log"
    command = [
        str(bin_path("zk-sensor")),
        *("--id", str(node_id)),
        *("--zookeeper", hosts),
        *("--namespace", NAMESPACE),
        *("--sampling-period", str(SAMPLING_PERIOD_S)),
        *("--api-url", api_url),
    ]
    with log_file.open("wb") as log:
        proc = subprocess.Popen(
            supervised(command),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=clean_env("ZK_SENSOR_"),
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
        reap(daemon.proc, f"node {daemon.node_id}", DAEMON_STOP_GRACE_S, daemon.log_file,
             daemon.reported_exit)


def write_ctl_config(demo_dir: Path, hosts: str) -> Path:
    """`.demo/zk-sensorctl.toml`: where the operator's `zk-sensorctl` finds this fleet.

    The ensemble's ports are chosen free at each start, so the host list changes every
    run; a file (`zk-sensorctl -c FILE`, or ZK_SENSOR_CONFIG) spares the operator
    copying it. It holds only keys a node's file has, `zookeeper` and `namespace`, so
    it means the same to every program that reads such a file.
    """
    path = demo_dir / CTL_CONFIG_NAME
    # A JSON string is a valid TOML basic string for these ASCII values.
    path.write_text(
        "# zk-sensorctl settings for the running demo, written by demo/demo.py;\n"
        "# rewritten (new ports) at each start of the demo.\n"
        f"zookeeper = {json.dumps(hosts)}\n"
        f"namespace = {json.dumps(NAMESPACE)}\n"
    )
    return path


def ctl_env_line(ctl_config: Path) -> str:
    """The shell line after which a plain `zk-sensorctl status` reaches the demo's fleet.

    Absolute paths, so it works from any directory; the venv's bin on PATH because the
    other terminal has no venv activated; ZK_SENSOR_CONFIG is how zk-sensorctl (and
    zk-sensor) take a settings file from the environment.
    """
    bin_dir = bin_path("zk-sensorctl").parent
    return (
        f"export ZK_SENSOR_CONFIG={shlex.quote(str(ctl_config))} "
        f'PATH={shlex.quote(str(bin_dir))}:"$PATH"'
    )


def current_leader(ctl_config: Path) -> str | None:
    """The leading node's id, asked of `zk-sensorctl -c FILE status --json`; None if unknown.

    Goes through the operator CLI and the file the operator is given rather than kazoo,
    so the demo relies only on the fleet's public interface, and what it announces is
    what the operator's own commands will see.
    """
    try:
        result = subprocess.run(
            [str(bin_path("zk-sensorctl")), "-c", str(ctl_config), "status", "--json"],
            capture_output=True,
            text=True,
            timeout=CTL_TIMEOUT_S,
            env=clean_env("ZK_SENSOR_"),
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


def wait_for_leader(ctl_config: Path, daemons: list[Daemon]) -> str | None:
    """The first leader's id once there is one; None after FLEET_START_TIMEOUT_S.

    The guide is printed only then, so the status it suggests already shows a
    working fleet (a namespace, a leader, devices) instead of an error or an empty one.
    """
    deadline = time.monotonic() + FLEET_START_TIMEOUT_S
    while time.monotonic() < deadline:
        leader = current_leader(ctl_config)
        if leader is not None:
            return leader
        if all(daemon.proc.poll() is not None for daemon in daemons):
            return None
        time.sleep(POLL_S)
    return None


def print_guide(
    demo_dir: Path, ctl_config: Path, collector: Collector, daemons: list[Daemon]
) -> None:
    """Tell the user where to look and what to try, with commands ready to copy."""
    logs = shlex.quote(shown(demo_dir)) + "/node-*.log"
    pids = ", ".join(f"node {d.node_id} = {d.proc.pid}" for d in daemons)
    print(
        "\n"
        "==================================================================\n"
        f"  open {collector.base_url} in a browser   (the collector's page)\n"
        "\n"
        "The fleet is running. In another terminal, paste this line first:\n"
        "\n"
        f"  {ctl_env_line(ctl_config)}\n"
        "\n"
        "then, from the repository:\n"
        "\n"
        "  fleet status:   zk-sensorctl status\n"
        "  config change:  zk-sensorctl config set sampling_period 3\n"
        "  failover:       kill <pid of the leader>   (the status shows who leads)\n"
        "                  kill -9 <pid>: a crash; the next leader waits out the 10 s session\n"
        f"  daemon pids:    {pids}\n"
        f"  metrics:        curl -s {collector.base_url}metrics\n"
        f"  stored rounds:  curl -s '{collector.base_url}api/rounds?limit=5'\n"
        f"  daemon logs:    tail -f {logs}\n"
        f"  collector log:  tail -f {shown(collector.log_file)}\n"
        f"  ZooKeeper logs: {shown(demo_dir)}/zk*/zookeeper.log\n"
        "  without the line: "
        f"{shlex.quote(shown(bin_path('zk-sensorctl')))} -c {shlex.quote(shown(ctl_config))} "
        "status\n"
        "\n"
        f"Rounds appear below as the collector stores them (checked every "
        f"{ROUNDS_POLL_S:.0f} s).\n"
        "Ctrl-C stops everything.\n"
        "==================================================================\n",
        flush=True,
    )


def describe_round(stored: dict[str, Any]) -> str:
    """One readable line for a stored round, e.g. `round 12: mean 21.40 of 3 readings, ...`."""
    number = stored.get("round")
    mean = stored.get("mean")
    count = stored.get("count")
    leader = stored.get("leader")
    parts = [
        f"round {number}" if number is not None else "a round",
        f"mean {mean:.2f}" if isinstance(mean, int | float) else f"mean {mean}",
    ]
    line = f"{parts[0]}: {parts[1]}"
    if count is not None:
        line += f" of {count} reading{'' if count == 1 else 's'}"
    if leader is not None:
        line += f", from leader node {leader}"
    return f"collector stored {line}"


def watch(
    ctl_config: Path, collector: Collector, daemons: list[Daemon], leader: str | None
) -> None:
    """Run until a signal: report new rounds, daemons or collector exiting, new leaders.

    `leader` is the one already announced, so the first poll does not announce it again.
    """
    by_id = {str(d.node_id): d for d in daemons}
    last_id: int | None = None
    next_leader_poll = 0.0
    next_rounds_poll = 0.0
    while True:
        for daemon in daemons:
            code = daemon.proc.poll()
            if code is not None and not daemon.reported_exit:
                daemon.reported_exit = True
                say(
                    f"node {daemon.node_id} (pid {daemon.proc.pid}) exited with code {code}; "
                    "the demo does not restart it"
                )
        if collector.proc is not None and not collector.reported_exit:
            code = collector.proc.poll()
            if code is not None:
                collector.reported_exit = True
                say(
                    f"zk-collector (pid {collector.proc.pid}) exited with code {code}; "
                    f"the demo does not restart it; see {shown(collector.log_file)}"
                )
        now = time.monotonic()
        if now >= next_rounds_poll and not collector.reported_exit:
            for stored in collector.rounds_after(last_id):
                say(describe_round(stored))
                last_id = stored["id"]
            next_rounds_poll = time.monotonic() + ROUNDS_POLL_S
        if now >= next_leader_poll:
            now_leading = current_leader(ctl_config)
            if now_leading is not None and now_leading != leader:
                daemon = by_id.get(now_leading)
                pid = f" (pid {daemon.proc.pid})" if daemon else ""
                say(f"leader is now node {now_leading}{pid}")
                leader = now_leading
            next_leader_poll = time.monotonic() + LEADER_POLL_S
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


class NotADemoDir(RuntimeError):
    """`--dir` names a directory with other files in it: the demo would wipe them."""


def claim_demo_dir(demo_dir: Path) -> IO[str] | None:
    """Lock the demo's directory and empty it; None if another demo holds the lock.

    Two demos at once would wipe each other's servers' data under their feet.
    The lock file survives the wipe and is released by the kernel however this
    process ends, so a crashed demo never blocks the next one. A `--dir` that is
    neither new, empty, nor an earlier demo's (its lock file) is refused, never wiped.
    """
    if (
        demo_dir != DEFAULT_DEMO_DIR
        and demo_dir.is_dir()
        and any(demo_dir.iterdir())
        and not (demo_dir / LOCK_NAME).exists()
    ):
        raise NotADemoDir(
            f"{shown(demo_dir)} is not empty and not a demo's directory: the demo would "
            "wipe it; choose a new or empty one"
        )
    demo_dir.mkdir(parents=True, exist_ok=True)
    lock = (demo_dir / LOCK_NAME).open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return None
    for entry in demo_dir.iterdir():
        if entry.name == LOCK_NAME:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    return lock


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="A local zk-sensor fleet on 127.0.0.1: a 3-server ZooKeeper ensemble, "
        "zk-collector and 3 daemons. Ctrl-C stops everything.",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=DEFAULT_DEMO_DIR,
        help="where the servers' data, the logs and zk-sensorctl.toml go; wiped at start "
        f"(default: {shown(DEFAULT_DEMO_DIR)})",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Start everything, wait for a signal, stop everything; 0 unless start-up failed."""
    demo_dir = parse_args(argv).dir.resolve()
    try:
        lock = claim_demo_dir(demo_dir)
    except NotADemoDir as error:
        print(f"demo: {error}", file=sys.stderr)
        return 2
    if lock is None:
        print(
            f"demo: another demo is already running in {shown(demo_dir)}/; stop it first",
            file=sys.stderr,
        )
        return 1
    ensemble = ZkEnsemble(demo_dir, n=3)
    collector = Collector(demo_dir)
    daemons: list[Daemon] = []
    status = 0
    try:
        with stop_on_signals():
            say(f"starting a 3-server ZooKeeper ensemble in {shown(demo_dir)}/ ...")
            ensemble.start()
            took = ensemble.wait_serving(ENSEMBLE_START_TIMEOUT_S)
            modes = ", ".join(f"zk{myid} {mode}" for myid, mode in ensemble.modes().items())
            say(f"ensemble serving after {took:.1f} s at {ensemble.hosts} ({modes})")
            ctl_config = write_ctl_config(demo_dir, ensemble.hosts)

            say("starting zk-collector ...")
            took = collector.start()
            pid = collector.proc.pid if collector.proc else "?"
            say(
                f"zk-collector serving at {collector.base_url} after {took:.1f} s, pid {pid}, "
                f"log {shown(collector.log_file)}, database {shown(collector.db_file)}"
            )

            for node_id in NODE_IDS:
                daemon = start_daemon(demo_dir, node_id, ensemble.hosts, collector.api_url)
                daemons.append(daemon)
                say(
                    f"started zk-sensor node {node_id}, pid {daemon.proc.pid}, "
                    f"log {shown(daemon.log_file)}"
                )
            began = time.monotonic()
            leader = wait_for_leader(ctl_config, daemons)
            if leader is None:
                say(
                    f"no node leads after {time.monotonic() - began:.0f} s; the node logs "
                    "say why"
                )
            else:
                pid = next((d.proc.pid for d in daemons if str(d.node_id) == leader), "?")
                say(f"node {leader} (pid {pid}) leads, after {time.monotonic() - began:.1f} s")
            print_guide(demo_dir, ctl_config, collector, daemons)
            watch(ctl_config, collector, daemons, leader)
    except StopDemo as stop:
        print(flush=True)
        say(f"{stop}: stopping the daemons, the collector and the ensemble ...")
    except Exception as error:
        say(f"demo failed: {error}")
        status = 1
    finally:
        stop_daemons(daemons)
        collector.stop()
        ensemble.stop()
    say(f"everything stopped (daemons, collector, ZooKeeper); logs are kept in {shown(demo_dir)}/")
    lock.close()
    return status


if __name__ == "__main__":
    sys.exit(main())

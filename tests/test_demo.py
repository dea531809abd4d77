"""`make demo`'s program, run as the Makefile runs it: the line it prints makes a plain
`zk-sensorctl status` work in another shell, and Ctrl-C stops everything it started.

The demo is what a newcomer runs first; a demo whose printed command fails, or that
leaves JVMs behind after Ctrl-C, is broken in a way no other test would notice.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "demo" / "demo.py"
ZK_SENSORCTL = Path(sys.executable).parent / "zk-sensorctl"
# Three JVMs, the collector and three daemons on a loaded 2-core machine, then a leader.
READY_TIMEOUT_S = 180.0
# The demo's own bound: 10 s per daemon group, collector and server, with margin.
STOP_TIMEOUT_S = 90.0
CTL_TIMEOUT_S = 30.0
CTL_LINE = re.compile(r"^\s*(export ZK_SENSOR_CONFIG=.*)$")
# The demo starts 3 ZooKeeper servers, the collector and 3 daemons.
PROCESSES_STARTED = 7


def environment_without_settings() -> dict[str, str]:
    """The test's environment minus ZK_SENSOR_*/ZK_COLLECTOR_*, which would override
    the file the demo prints, as they would in a user's shell."""
    prefixes = ("ZK_SENSOR_", "ZK_COLLECTOR_")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


def read_lines(stream: Iterator[str], lines: queue.Queue[str | None]) -> None:
    """Hand the demo's output to the test line by line, so waiting has a deadline."""
    for line in stream:
        lines.put(line)
    lines.put(None)


def process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (field 22 of /proc/PID/stat), None if gone; with
    the pid it names a process exactly, even if the pid is reused later."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else fields[19]


def descendants(root: int) -> dict[int, str]:
    """Every live process under `root`, by pid, with its start time."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    found: dict[int, str] = {}
    pending = [root]
    while pending:
        for child in children.get(pending.pop(), []):
            start = process_start(child)
            if start is not None:
                found[child] = start
                pending.append(child)
    return found


def still_running(processes: dict[int, str]) -> dict[int, str]:
    """Those of `processes` that exist now: same pid, same start time."""
    return {pid: start for pid, start in processes.items() if process_start(pid) == start}


def command_line(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    return "?"


@pytest.mark.ensemble
def test_demo_prints_a_working_ctl_line_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    demo_dir = tmp_path / "demo"
    proc = subprocess.Popen(
        [sys.executable, str(DEMO), "--dir", str(demo_dir)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
        env=environment_without_settings(),
    )
    assert proc.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=read_lines, args=(proc.stdout, lines), daemon=True).start()
    output: list[str] = []
    started: dict[int, str] = {}
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        ctl_line = None
        while ctl_line is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail("no zk-sensorctl line within "
                            f"{READY_TIMEOUT_S:.0f} s:\n{''.join(output)}")
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                pytest.fail(f"the demo exited ({proc.wait()}) before printing the "
                            f"zk-sensorctl line:\n{''.join(output)}")
            output.append(line)
            found = CTL_LINE.match(line)
            if found:
                ctl_line = found[1]
        started = descendants(proc.pid)
        assert len(started) >= PROCESSES_STARTED, (
            f"expected the demo's {PROCESSES_STARTED} processes, found "
            f"{[command_line(pid) for pid in started]}"
        )

        # The line as printed, in a shell that has neither the venv nor any setting.
        shell_env = {k: v for k, v in environment_without_settings().items()
                     if k not in {"PATH", "VIRTUAL_ENV"}}
        shell_env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
        pasted = subprocess.run(
            ["bash", "-c", f"{ctl_line}\nzk-sensorctl status"],
            capture_output=True, text=True, timeout=CTL_TIMEOUT_S, env=shell_env,
            cwd=tmp_path, check=False,
        )
        assert pasted.returncode == 0, pasted.stdout + pasted.stderr
        assert re.search(r"^leader\s+node [123] ", pasted.stdout, re.MULTILINE), pasted.stdout

        # The file it names, given to zk-sensorctl -c.
        config = Path(shlex.split(ctl_line)[1].split("=", 1)[1])
        assert config.parent == demo_dir
        direct = subprocess.run(
            [str(ZK_SENSORCTL), "-c", str(config), "status", "--json"],
            capture_output=True, text=True, timeout=CTL_TIMEOUT_S,
            env=environment_without_settings(), check=False,
        )
        assert direct.returncode == 0, direct.stdout + direct.stderr
        status = json.loads(direct.stdout)
        assert status["leader"] is not None, status

        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=STOP_TIMEOUT_S)
        while (line := lines.get(timeout=CTL_TIMEOUT_S)) is not None:
            output.append(line)
        assert code == 0, "".join(output)
        assert "everything stopped" in output[-1], "".join(output)
        left = still_running(started)
        assert not left, f"left running: {[command_line(pid) for pid in left]}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in still_running(started):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_demo_refuses_a_directory_that_is_not_a_demos(tmp_path: Path) -> None:
    """`--dir` is wiped at start: one holding anything but an earlier demo's files (its
    lock) must be refused before anything is touched or started."""
    precious = tmp_path / "notes.txt"
    precious.write_text("keep me")
    result = subprocess.run(
        [sys.executable, str(DEMO), "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=CTL_TIMEOUT_S, cwd=REPO,
        env=environment_without_settings(), check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "not empty and not a demo's directory" in result.stderr
    assert precious.read_text() == "keep me"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["notes.txt"]

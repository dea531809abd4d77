"""The working directory a driver may need to write: lgpio makes its notification pipes
(`.lgd-nfy*`) in the current directory, so an operator's `--read-once` run from a
directory the service user cannot write (`sudo -u zk-sensor` from a home directory)
would fail in every lgpio driver with gpiozero's unrelated complaint."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator


def directory_writable(path: str = ".") -> bool:
    """Tried, not guessed from the mode bits: root, ACLs, read-only mounts and a removed
    directory all answer the same way a driver's own file would."""
    try:
        with tempfile.TemporaryFile(dir=path):
            return True
    except OSError:
        return False


def current_directory() -> str:
    try:
        return os.getcwd()
    except OSError:
        return "the working directory (removed)"


@contextlib.contextmanager
def writable_directory() -> Iterator[None]:
    """Run in the current directory if this user can write it, else in a private
    temporary one, removed afterwards."""
    if directory_writable():
        yield
        return
    original = current_directory()
    private = tempfile.mkdtemp(prefix="zk-sensor-")
    os.chdir(private)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.chdir(original)
        shutil.rmtree(private, ignore_errors=True)

"""Files that hold secrets: a password, a token, a private key. One that group or others
can read is refused at start instead of being used, because whoever reads it holds the
fleet's (or the operator's) authority."""

import os
import stat
from pathlib import Path

from zk_sensor.config.sources import SettingsError


def check_private(path: Path, what: str) -> None:
    """Refuse a secret that group or others can read (or that is not a plain file)."""
    try:
        info = path.stat()
    except OSError as error:
        raise SettingsError(f"cannot read {what} {path}: {error.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise SettingsError(f"{what} {path} is not a regular file")
    if info.st_mode & 0o077:
        raise SettingsError(
            f"{what} {path} has mode {stat.S_IMODE(info.st_mode):04o}; it holds a secret, "
            f"so only its owner may read it: chmod 600 {path}")


def read_secret_lines(path_text: str, what: str) -> list[str]:
    """The lines of a file that holds secrets (owner-only, checked first), stripped,
    without blank lines and `#` comments."""
    path = Path(path_text)
    check_private(path, what)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise SettingsError(f"cannot read {what} {path}: {error}") from None
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def check_readable(path_text: str, what: str) -> None:
    if not os.access(path_text, os.R_OK):
        raise SettingsError(f"cannot read {what} {path_text}")

"""Logging for operators: one line per event, with the node id; journald priorities
as `<N>` prefixes when stderr is the journal, timestamps otherwise."""

import logging
import os
import sys

PRIORITIES = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


def under_journald() -> bool:
    """systemd sets JOURNAL_STREAM to the device:inode of the stream it connected."""
    stream = os.environ.get("JOURNAL_STREAM")
    if not stream:
        return False
    try:
        stat = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return stream == f"{stat.st_dev}:{stat.st_ino}"


class JournalFormatter(logging.Formatter):
    """Prefixes each line with its syslog priority, which journald reads from stderr, so
    `journalctl -p warning` finds the lines that matter."""
    def format(self, record: logging.LogRecord) -> str:
        priority = PRIORITIES.get(record.levelno, 6)
        return f"<{priority}>{super().format(record)}"


def setup_logging(node_label: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if under_journald():
        handler.setFormatter(JournalFormatter(f"{node_label}: %(message)s"))
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)-7s {node_label}: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("kazoo").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("urllib3").setLevel(max(logging.WARNING, root.level))

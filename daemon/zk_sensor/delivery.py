"""Delivery of each round's aggregate to the HTTP collector, off the daemon's loop.

A slow or hanging collector must never hold the barrier, so the leader only enqueues;
a worker thread posts. A failure is logged and the daemon goes on.

Two formats: an api_url whose path ends in `/nuevo` is the seed's API and gets
`GET ?dato=<mean>`; any other URL gets a JSON POST with everything the round knows.
"""

import logging
import queue
import re
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests

from .aggregate import Aggregate

log = logging.getLogger("zk_sensor")

QUEUE_LIMIT = 100


@dataclass(frozen=True)
class HttpRequest:
    method: str
    url: str
    params: dict[str, str] | None = None
    json: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


def build_request(aggregate: Aggregate, api_url: str, fleet: str, token: str = "") -> HttpRequest:
    """The fleet name (the namespace) lets one collector keep several fleets apart."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if urlsplit(api_url).path.rstrip("/").endswith("/nuevo"):
        return HttpRequest("GET", api_url, params={"dato": repr(aggregate.mean)},
                           headers=headers)
    return HttpRequest("POST", api_url, json={**aggregate.as_dict(), "fleet": fleet},
                       headers=headers)


class Courier:
    """A thread that sends what the leader hands it, oldest first, bounded."""

    def __init__(self, timeout: float, fleet: str, token: str = "") -> None:
        self.timeout = timeout
        self.fleet = fleet
        self.token = token
        self.jobs: queue.Queue[tuple[Aggregate, str] | None] = queue.Queue(QUEUE_LIMIT)
        self.session = requests.Session()
        self.thread = threading.Thread(target=self._run, name="courier", daemon=True)
        self.delivered = 0
        self.failed = 0

    def start(self) -> None:
        self.thread.start()

    def submit(self, aggregate: Aggregate, api_url: str) -> None:
        try:
            self.jobs.put_nowait((aggregate, api_url))
        except queue.Full:
            dropped, _ = self.jobs.get_nowait()
            self.jobs.put_nowait((aggregate, api_url))
            log.warning("delivery queue full: dropped round %d", dropped.round)

    def stop(self, timeout: float) -> None:
        try:
            self.jobs.put_nowait(None)
        except queue.Full:
            return
        self.thread.join(timeout)

    def _run(self) -> None:
        while (job := self.jobs.get()) is not None:
            self.send(*job)

    def send(self, aggregate: Aggregate, api_url: str) -> bool:
        request = build_request(aggregate, api_url, self.fleet, self.token)
        try:
            response = self.session.request(
                request.method, request.url, params=request.params, json=request.json,
                headers=request.headers, timeout=self.timeout,
            )
            response.raise_for_status()
        except requests.RequestException as error:
            self.failed += 1
            log.error("delivery of round %d to %s failed: %s", aggregate.round, api_url,
                      one_line(error))
            return False
        self.delivered += 1
        log.info("delivered round %d to %s (HTTP %d)", aggregate.round, api_url,
                 response.status_code)
        return True


def one_line(error: Exception) -> str:
    """requests' messages nest three exceptions deep; the operator wants the last reason."""
    text = " ".join(str(error).split())
    errno = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    if errno:
        return f"{type(error).__name__}: {errno.group(1).strip()}"
    return text

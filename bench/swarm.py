"""A swarm: many zk-sensor nodes in one process, for fleets that do not fit as processes.

One daemon process costs about 29 MB, so 1,000 or 5,000 of them do not fit one machine.
The swarm runs the daemon's own `Node` (its loop, election, barrier, counter, config
watches, registration), one per device, each with its own ZooKeeper session, exactly as
`zk-sensor` runs it. What differs from real processes:

- the threads of every node (its loop, kazoo's connection and workers) are gevent
  greenlets on one OS thread: the standard library is monkey-patched, so the daemon's
  sockets, queues, locks and waits cooperate. With real threads, 1,200 of them for 300
  nodes spent most of their time handing the GIL around and calls missed their
  deadlines; greenlets switch for about a microsecond;
- kazoo's connection loop waits for its socket through `hub_select` below instead of the
  daemon's poll (kazoo_handler.py): a zero-timeout poll of the kernel first, and gevent's
  hub only when nothing is ready, which a greenlet can afford and a real thread need not;
- all nodes share one core, so a release reaches the last of N nodes after N times a
  node's work (pessimistic: real devices react in parallel);
- the sensor is a plain random number (75..85) instead of gpiozero's simulated MCP3008,
  so the figures are those of coordination, not of a sensor driver;
- no systemd notifications and no per-node log lines below warnings.

    python bench/swarm.py --zookeeper HOSTS --namespace /zk-sensor --count 1000

prints `swarm: N nodes ready` once every node published its first reading and runs
until SIGTERM or SIGINT, then stops every node cleanly (each resigns and closes its
session).
"""

# ruff: noqa: E402  (gevent must patch the standard library before anything imports it)
from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse
import random
import resource
import signal
import sys
import threading
import time
from dataclasses import dataclass

import gevent.select

from zk_sensor.logs import setup_logging
from zk_sensor.node.daemon import Node
from zk_sensor.node.settings import build_settings
from zk_sensor.node.systemd import Systemd
from zk_sensor.zk.handler import PollingHandler, ready_lists, wanted_events

# About five file descriptors per node (its socket, kazoo's wake-up pair, the waker).
FDS_PER_NODE = 6
READY_TIMEOUT = 300.0
OS_POLL = monkey.get_original("select", "poll")


def hub_select(_handler: object, rlist: list, wlist: list, _xlist: list,
               timeout: float | None = None) -> tuple[list, list, list]:
    """How kazoo's connection loop waits for its socket, done without a selector.

    kazoo builds and closes a selector for every wait of every connection (three per
    message it reads); across a swarm that was most of the CPU. This asks the kernel with
    a zero-timeout poll first (the bytes are usually there already) and only otherwise
    waits on gevent's hub; neither has a descriptor limit. The same sockets and events
    are waited for, so what kazoo sends and when is unchanged.
    """
    masks = wanted_events(rlist, wlist)
    ready = dict(poll_now(masks))
    if not ready and timeout != 0:
        waiter = gevent.select.poll()
        for fd, mask in masks.items():
            waiter.register(fd, mask)
        ready = dict(waiter.poll(None if timeout is None else timeout * 1000))
    return ready_lists(rlist, wlist, ready)


def poll_now(masks: dict[int, int]) -> list[tuple[int, int]]:
    kernel = OS_POLL()
    for fd, mask in masks.items():
        kernel.register(fd, mask)
    return kernel.poll(0)


@dataclass
class RandomSensor:
    """The swarm's stand-in for a sensor: no driver cost, values like the seed's."""

    rng: random.Random
    name: str = "swarm-random"

    def read(self) -> float:
        return self.rng.uniform(75.0, 85.0)

    def close(self) -> None:
        return None


class Swarm:
    def __init__(self, options: argparse.Namespace) -> None:
        self.options = options
        self.nodes: list[Node] = []
        self.threads: list[threading.Thread] = []

    def node_settings(self, node_id: str) -> dict[str, object]:
        options = self.options
        return {
            "node_id": node_id, "zookeeper": options.zookeeper, "namespace": options.namespace,
            "sampling_period": options.sampling_period, "api_url": options.api_url,
            "session_timeout": options.session_timeout, "zk_deadline": options.zk_deadline,
            "http_timeout": options.http_timeout, "log_level": "warning",
        }

    def start(self) -> None:
        """Start nodes at `start_rate` per second: a fleet of Pis does not boot in one
        millisecond either, and a burst of thousands of connects only measures the
        ensemble's accept queue."""
        options = self.options
        for index in range(options.count):
            node_id = f"{options.prefix}{options.first + index}"
            settings = build_settings(self.node_settings(node_id), {}, None)
            node = Node(settings, RandomSensor(random.Random(index)), Systemd())
            thread = threading.Thread(target=node.run, name=f"node-{node_id}", daemon=True)
            self.nodes.append(node)
            self.threads.append(thread)
            thread.start()
            time.sleep(1.0 / options.start_rate)

    def wait_ready(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = sum(node.ready for node in self.nodes)
            if ready == len(self.nodes):
                return ready
            time.sleep(0.2)
        return sum(node.ready for node in self.nodes)

    def stop(self, timeout: float) -> int:
        """Ask every node to stop, as SIGTERM would; returns how many did not end."""
        for node in self.nodes:
            node.request_stop(signal.SIGTERM, None)
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return sum(thread.is_alive() for thread in self.threads)


def raise_fd_limit(count: int) -> None:
    needed = count * FDS_PER_NODE + 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, max(hard, needed)))
    except (ValueError, OSError):
        sys.exit(f"swarm: {count} nodes need {needed} file descriptors; the limit is {hard} "
                 "(run as root or raise `ulimit -n`)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="swarm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--zookeeper", required=True)
    parser.add_argument("--namespace", default="/zk-sensor")
    parser.add_argument("--count", type=int, required=True, help="nodes in this process")
    parser.add_argument("--first", type=int, default=1, help="number of the first node id")
    parser.add_argument("--prefix", default="s", help="node ids are PREFIX<number>")
    parser.add_argument("--sampling-period", type=float, default=5.0)
    parser.add_argument("--api-url", default="http://127.0.0.1:8080/api/rounds")
    parser.add_argument("--session-timeout", type=float, default=10.0)
    parser.add_argument("--zk-deadline", type=float, default=2.0)
    parser.add_argument("--http-timeout", type=float, default=3.0)
    parser.add_argument("--start-rate", type=float, default=200.0, help="nodes started per s")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    setup_logging("swarm", "warning")
    raise_fd_limit(options.count)
    PollingHandler.select = hub_select
    signals: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: signals.append(signum))
    signal.signal(signal.SIGINT, lambda signum, _frame: signals.append(signum))
    swarm = Swarm(options)
    started = time.monotonic()
    swarm.start()
    ready = swarm.wait_ready(READY_TIMEOUT)
    print(f"swarm: {ready} nodes ready in {time.monotonic() - started:.1f} s", flush=True)
    while not signals:
        time.sleep(0.5)
    left = swarm.stop(timeout=30.0)
    print(f"swarm: stopped ({left} nodes did not end in time)", flush=True)
    return 0 if left == 0 and ready == options.count else 1


if __name__ == "__main__":
    sys.exit(main())

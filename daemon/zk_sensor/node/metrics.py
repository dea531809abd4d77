"""Prometheus metrics of one node, served from a thread that only reads the loop's
counters (never ZooKeeper), so scraping can not disturb the fleet.

The daemon imports this module only when `metrics_port` is set: prometheus_client costs
a node resident memory, which a node serving no metrics must not pay."""

import logging
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from zk_sensor.config.serving import PROMETHEUS_CONTENT_TYPE

if TYPE_CHECKING:
    from zk_sensor.node.daemon import Node

log = logging.getLogger("zk_sensor")

Sample = tuple[str, str, str, float]
FAMILIES = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily}


def node_samples(node: "Node") -> list[Sample]:
    """Plain attribute reads of the loop's state: safe from the metrics thread."""
    leader, device = node.leader, node.device
    barrier = node.view.state
    return [
        ("zk_sensor_measurements_total", "counter", "Readings this node published.",
         device.count or 0),
        ("zk_sensor_readings_skipped_total", "counter", "Readings that failed or were "
         "not finite.", device.skipped),
        ("zk_sensor_connected", "gauge", "1 while the ZooKeeper session is usable.",
         int(node.link_up)),
        ("zk_sensor_leader", "gauge", "1 while this node leads with a fresh lease.",
         int(node.leading)),
        ("zk_sensor_round", "gauge", "The round the barrier holds open.",
         barrier.round if barrier else -1),
        ("zk_sensor_rounds_led_total", "counter", "Rounds this node released as leader.",
         leader.rounds_led),
        ("zk_sensor_garbage_readings_total", "counter", "Readings of the rounds this node "
         "led that were garbage (skipped).", leader.garbage_readings),
        ("zk_sensor_deliveries_total", "counter", "Rounds the collector acknowledged.",
         leader.delivered),
        ("zk_sensor_deliveries_refused_total", "counter", "Rounds the collector refused "
         "for good.", leader.refused),
        ("zk_sensor_round_work_seconds", "gauge", "Collection and commit of the last "
         "round this node led.", leader.round_work),
        ("zk_sensor_round_slowest_device_seconds", "gauge", "Release to the last reading "
         "of the last round this node led.", leader.round_spread),
        ("zk_sensor_outbox_pending", "gauge", "Rounds waiting for the collector (leader).",
         len(leader.outbox.pending)),
        ("zk_sensor_outbox_dropped_total", "counter", "Rounds the fleet dropped from a "
         "full outbox (as last seen by this node as leader).", leader.outbox.stats.dropped),
    ]


class NodeCollector(Collector):
    """Builds the families afresh on each scrape, so they can never drift from the loop's
    state (nothing to update from the loop, no lock to share with it)."""

    def __init__(self, samples: Callable[[], list[Sample]]) -> None:
        self.samples = samples

    def collect(self) -> Iterator[Metric]:
        for name, kind, text, value in self.samples():
            yield FAMILIES[kind](name, text, value=value)


def node_registry(samples: Callable[[], list[Sample]]) -> CollectorRegistry:
    """The node's own registry, not the global one: nothing else in the process may add
    to what a node exports. The process metrics show each node's resident memory, a
    tracked target, in the dashboards; they read only /proc, and the library is loaded
    anyway."""
    registry = CollectorRegistry()
    registry.register(NodeCollector(samples))
    ProcessCollector(registry=registry)
    return registry


class MetricsServer:
    """/metrics on its own threads: a scrape, however slow, never waits on the loop, and
    the loop never waits on a scrape."""

    def __init__(self, host: str, port: int,
                 samples: Callable[[], list[Sample]]) -> None:
        registry = node_registry(samples)

        class Handler(BaseHTTPRequestHandler):
            """/metrics from this server's registry (a class per server: the standard
            library's handlers get no other way to it); everything else is a 404."""

            def do_GET(self) -> None:
                if self.path != "/metrics":
                    self.send_error(404)
                    return
                body = generate_latest(registry)
                self.send_response(200)
                self.send_header("Content-Type", PROMETHEUS_CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="metrics",
                                       daemon=True)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve_node_metrics(node: "Node") -> MetricsServer:
    """Start serving the node's metrics on its metrics_host:metrics_port."""
    settings = node.settings
    server = MetricsServer(settings.metrics_host, settings.metrics_port,
                           lambda: node_samples(node))
    server.start()
    log.info("metrics on http://%s:%d/metrics", settings.metrics_host, server.port)
    return server

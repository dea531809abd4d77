"""/metrics of a node and of the collector as Prometheus reads them: through the library's
own parser, with exact values, under the names dashboards and alert rules use."""

import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from zk_sensor.node.metrics import MetricsServer, node_samples
from zk_sensor.testing.collector import CollectorProcess, a_round, call, post_round

# What dashboards and alert rules are written against: (type, help) by sample name.
NODE_METRICS = {
    "zk_sensor_measurements_total": ("counter", "Readings this node published."),
    "zk_sensor_readings_skipped_total": ("counter", "Readings that failed or were not finite."),
    "zk_sensor_connected": ("gauge", "1 while the ZooKeeper session is usable."),
    "zk_sensor_leader": ("gauge", "1 while this node leads with a fresh lease."),
    "zk_sensor_round": ("gauge", "The round the barrier holds open."),
    "zk_sensor_rounds_led_total": ("counter", "Rounds this node released as leader."),
    "zk_sensor_garbage_readings_total": ("counter", "Readings of the rounds this node led "
                                         "that were garbage (skipped)."),
    "zk_sensor_deliveries_total": ("counter", "Rounds the collector acknowledged."),
    "zk_sensor_deliveries_refused_total": ("counter", "Rounds the collector refused for good."),
    "zk_sensor_round_work_seconds": ("gauge", "Collection and commit of the last round this "
                                     "node led."),
    "zk_sensor_round_slowest_device_seconds": ("gauge", "Release to the last reading of the "
                                               "last round this node led."),
    "zk_sensor_outbox_pending": ("gauge", "Rounds waiting for the collector (leader)."),
    "zk_sensor_outbox_dropped_total": ("counter", "Rounds the fleet dropped from a full outbox "
                                       "(as last seen by this node as leader)."),
}


def fake_node(measurements: int) -> SimpleNamespace:
    """Only the attributes node_samples reads, as the loop would leave them."""
    outbox = SimpleNamespace(pending=[7, 8], stats=SimpleNamespace(dropped=3))
    leader = SimpleNamespace(rounds_led=1_000_001, garbage_readings=5, delivered=999_999,
                             refused=2,
                             round_work=0.0125, round_spread=0.25, outbox=outbox)
    return SimpleNamespace(leader=leader, device=SimpleNamespace(count=measurements, skipped=4),
                           link_up=True, leading=True,
                           view=SimpleNamespace(state=SimpleNamespace(round=41)))


def scrape(url: str) -> tuple[str, list[Sample], dict[str, tuple[str, str]]]:
    """Content type, samples, and (type, help) of each sample's family, as parsed."""
    with urllib.request.urlopen(url, timeout=5) as reply:
        content_type, text = reply.headers["Content-Type"], reply.read().decode()
    samples, described = [], {}
    for family in text_string_to_metric_families(text):
        samples += family.samples
        described |= {s.name: (family.type, family.documentation) for s in family.samples}
    return content_type, samples, described


@pytest.fixture
def node_metrics_url() -> Iterator[str]:
    """A node's metrics server on an ephemeral port, fed by a node that counted 1,234,567
    measurements."""
    node = fake_node(1_234_567)
    server = MetricsServer("127.0.0.1", 0, lambda: node_samples(node))
    server.start()
    yield f"http://127.0.0.1:{server.port}/metrics"
    server.stop()


def test_node_counters_scrape_back_exactly(node_metrics_url: str) -> None:
    content_type, samples, _ = scrape(node_metrics_url)
    values = {s.name: s.value for s in samples}
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    assert values["zk_sensor_measurements_total"] == 1_234_567, "no digits lost"
    assert values["zk_sensor_rounds_led_total"] == 1_000_001
    assert values["zk_sensor_garbage_readings_total"] == 5
    assert values["zk_sensor_deliveries_total"] == 999_999
    assert values["zk_sensor_round_work_seconds"] == 0.0125
    assert (values["zk_sensor_round"], values["zk_sensor_outbox_pending"]) == (41, 2)
    assert (values["zk_sensor_leader"], values["zk_sensor_connected"]) == (1, 1)


def test_node_metrics_keep_their_names_types_and_help(node_metrics_url: str) -> None:
    _, _, described = scrape(node_metrics_url)
    assert {name: described[name] for name in NODE_METRICS} == NODE_METRICS
    assert not {n for n in described if n.startswith("zk_")} - NODE_METRICS.keys()


def test_node_exports_its_resident_memory(node_metrics_url: str) -> None:
    values = {s.name: s.value for s in scrape(node_metrics_url)[1]}
    assert values["process_resident_memory_bytes"] > 1024 * 1024


def test_a_node_without_metrics_does_not_load_prometheus_client() -> None:
    """Its resident memory is a tracked target: the library is paid for only when used."""
    check = "import sys, zk_sensor.node.startup; print('prometheus_client' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                            check=True).stdout.strip()
    assert loaded == "False"


def test_collector_metrics_exact_counts_and_process_metrics(
    collector: CollectorProcess,
) -> None:
    assert post_round(collector, a_round(1, epoch=2))[0] == 201
    assert post_round(collector, a_round(1, epoch=2))[0] == 200
    assert post_round(collector, a_round(2, epoch=1))[0] == 409
    assert call(collector.url("/nuevo?dato=x"))[0] == 400
    assert post_round(collector, a_round(2, epoch=2, mean=1_234_567.891))[0] == 201
    content_type, samples, described = scrape(collector.url("/metrics"))
    deliveries = {s.labels["outcome"]: s.value for s in samples
                  if s.name == "zk_collector_deliveries_total"}
    values = {s.name: s.value for s in samples}
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    assert deliveries == {"stored": 2, "duplicate": 1, "stale_epoch": 1, "refused": 1,
                          "unauthorized": 0}
    assert described["zk_collector_deliveries_total"][0] == "counter"
    assert values["zk_collector_rounds"] == 2
    assert values["zk_collector_rounds_expired_total"] == 0
    assert described["zk_collector_rounds_expired_total"][0] == "counter"
    assert values["zk_collector_last_mean"] == 1_234_567.891
    assert abs(values["zk_collector_last_received_timestamp_seconds"] - time.time()) < 60
    assert values["process_resident_memory_bytes"] > 1024 * 1024
    assert values["process_open_fds"] >= 1 and "python_info" in values

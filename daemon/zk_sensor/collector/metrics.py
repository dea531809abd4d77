"""The collector's Prometheus metrics, read from its counters and its store at each scrape
so they can not drift from what the API answers."""

from collections import Counter
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from zk_sensor.collector.backend import RoundStore

# Every outcome and reason is exported from the start, at 0, so a rate() over it has no gap.
OUTCOMES = ("stored", "duplicate", "stale_epoch", "refused", "unauthorized")
UNAUTHORIZED = ("missing_token", "bad_token")
FORBIDDEN = ("cross_site", "anonymous_get", "fleet", "leader", "fence")


def counter(name: str, documentation: str, label: str, values: Counter[str],
            known: tuple[str, ...]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=[label])
    for value in dict.fromkeys((*known, *sorted(values))):
        family.add_metric([value], values[value])
    return family


class DeliveryCollector(Collector):
    """Reads the collector's counters and its store at scrape time, so a scrape costs
    nothing between scrapes and never shows a stale figure."""
    def __init__(self, outcomes: Counter[str], unauthorized: Counter[str],
                 forbidden: Counter[str], store: RoundStore) -> None:
        self.outcomes = outcomes
        self.unauthorized = unauthorized
        self.forbidden = forbidden
        self.store = store

    def collect(self) -> Iterator[Metric]:
        yield counter("zk_collector_deliveries_total", "Write requests by outcome.",
                      "outcome", self.outcomes, OUTCOMES)
        yield counter("zk_collector_unauthorized_total",
                      "Writes answered 401, by reason.", "reason", self.unauthorized,
                      UNAUTHORIZED)
        yield counter("zk_collector_forbidden_total",
                      "Writes answered 403 (not taken from this sender), by reason.",
                      "reason", self.forbidden, FORBIDDEN)
        summary = self.store.summary()
        yield GaugeMetricFamily("zk_collector_rounds", "Rounds stored.", value=summary["rounds"])
        yield CounterMetricFamily("zk_collector_rounds_expired_total",
                                  "Rounds deleted for being older than retention.",
                                  value=self.store.expired)
        last = summary["last"]
        if last:
            yield GaugeMetricFamily("zk_collector_last_mean",
                                    "Mean of the newest stored round.", value=last["mean"])
            yield GaugeMetricFamily("zk_collector_last_received_timestamp_seconds",
                                    "When it arrived.", value=last["received_at"])


def collector_registry(outcomes: Counter[str], unauthorized: Counter[str],
                       forbidden: Counter[str], store: RoundStore) -> CollectorRegistry:
    """A registry of the collector's own, not the global one, so that each Collector (tests
    build many in one process) exports only itself. The process and platform metrics
    show the collector's memory, CPU, open files and Python version for free."""
    registry = CollectorRegistry()
    registry.register(DeliveryCollector(outcomes, unauthorized, forbidden, store))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry

"""zk-sensor-zookeeper-exporter: the ZooKeeper servers' own metrics (mntr) for Prometheus,
read over a real server's secure client port, with a dead server beside it."""

from __future__ import annotations

import re
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from zk_sensor.ctl.exporter import parse_mntr, split_hosts
from zk_sensor.testing import pki as pki
from zk_sensor.testing.fleet import BIN, wait_for
from zk_sensor.testing.ports import free_ports

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def start_exporter(log: Path, *args: str) -> tuple[subprocess.Popen[bytes], int]:
    with log.open("wb") as sink:
        process = subprocess.Popen([str(BIN / "zk-sensor-zookeeper-exporter"),
                                    "--listen", "127.0.0.1:0", *args],
                                   stdout=sink, stderr=subprocess.STDOUT)
    found = wait_for(lambda: re.findall(r"on http://127\.0\.0\.1:(\d+)/metrics",
                                        log.read_text()), 15, "the exporter to listen")
    return process, int(found[0])


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=15) as reply:
        text = reply.read().decode()
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_the_servers_own_metrics_over_tls(tls_server: pki.TlsServer, tmp_path: Path) -> None:
    ca, hosts = tls_server.ca, tls_server.hosts
    server = hosts.split(",")[0]
    dead = f"127.0.0.1:{free_ports(1)[0]}"
    prometheus = ca.issue("prometheus")
    log = tmp_path / "exporter.log"
    process, port = start_exporter(
        log, "--zookeeper", f"{hosts},{dead}", "--zk-ca-file", str(ca.cert),
        "--zk-cert-file", str(prometheus.cert), "--zk-key-file", str(prometheus.key))
    try:
        for _ in range(2):
            samples = scrape(port)
            assert samples[("zookeeper_up", frozenset({("server", server)}))] == 1
            assert samples[("zookeeper_up", frozenset({("server", dead)}))] == 0
            assert samples[("zookeeper_server_state", frozenset(
                {("server", server), ("state", "standalone")}))] == 1
            assert samples[("zookeeper_znode_count", frozenset({("server", server)}))] >= 1
            versions = [dict(labels)["version"] for name, labels in samples
                        if name == "zookeeper_info"]
            assert len(versions) == 1 and versions[0].startswith("3.")
            assert not [key for key in samples if dict(key[1]).get("server") == dead
                        and key[0] != "zookeeper_up"]
        assert log.read_text().count(f"ZooKeeper {dead}: no metrics") == 1
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0


def test_without_the_fleet_ca_a_server_is_down_not_trusted(tls_server: pki.TlsServer,
                                                           tmp_path: Path) -> None:
    hosts = tls_server.hosts
    stranger = pki.CertificateAuthority(tmp_path / "other", "another CA")
    process, port = start_exporter(
        tmp_path / "exporter.log", "--zookeeper", hosts, "--zk-ca-file", str(stranger.cert))
    try:
        samples = scrape(port)
        assert samples == {("zookeeper_up", frozenset({("server", hosts)})): 0}
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0


@pytest.mark.parametrize("args", [["--zookeeper", "nowhere"], ["--listen", "x"],
                                  ["--zk-ca-file", "/nonexistent/ca.pem"]])
def test_bad_settings_stop_it_with_one_line(args: list[str]) -> None:
    finished = subprocess.run([str(BIN / "zk-sensor-zookeeper-exporter"), *args],
                              capture_output=True, text=True, timeout=30)
    assert finished.returncode == 2
    assert finished.stderr.count("\n") == 1, finished.stderr


def test_a_refused_mntr_is_no_metrics() -> None:
    with pytest.raises(ValueError, match="not in the whitelist"):
        parse_mntr("mntr is not executed because it is not in the whitelist.\n")
    found = parse_mntr("zk_version\t3.8.0\nzk_server_state\tleader\nzk_bad-name\t1\n")
    assert found == {"version": "3.8.0", "server_state": "leader"}
    assert split_hosts("a:2281,[::1]:2281/chroot") == [("a", 2281), ("::1", 2281)]

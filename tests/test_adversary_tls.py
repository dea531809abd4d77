"""An adversary with a certificate from a CA the system trusts (any public CA, or one an
attacker slipped into the system's store) poses as a ZooKeeper server.

kazoo loads the system's CAs beside the one it is given; the node's handler
(kazoo_handler.FleetCaHandler) trusts the fleet's CA alone. The test shows both: plain
kazoo accepts the impostor, the node's handler refuses it.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from kazoo.handlers.threading import KazooTimeoutError, SequentialThreadingHandler

from zk_sensor.node.settings import Settings
from zk_sensor.testing import pki as pki
from zk_sensor.testing.fleet import BIN
from zk_sensor.testing.zookeeper import ZkEnsemble
from zk_sensor.zk.handler import FleetCaHandler, PollingHandler


@pytest.fixture(scope="module")
def impostor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ZkEnsemble, Path,
                                                                         pki.Issued, Path]]:
    """A server whose certificate a "system" CA signed (not the fleet's); the fleet's CA,
    a client certificate of it, and the system CA's file."""
    base = tmp_path_factory.mktemp("impostor")
    fleet_ca = pki.CertificateAuthority(base / "fleet", "fleet CA")
    system_ca = pki.CertificateAuthority(base / "system", "a CA in the system's store")
    ensemble = ZkEnsemble.standalone_tls(base, system_ca.issue("zk1").combined, fleet_ca.cert)
    ensemble.start()
    try:
        ensemble.wait_serving()
        yield ensemble, fleet_ca.cert, fleet_ca.issue("node"), system_ca.cert
    finally:
        ensemble.stop()


def connects(handler: SequentialThreadingHandler, hosts: str, ca: Path,
             client: pki.Issued) -> bool:
    zk = KazooClient(hosts=hosts, handler=handler, timeout=3, connection_retry={"max_tries": 0},
                     use_ssl=True, verify_certs=True, check_hostname=True, ca=str(ca),
                     certfile=str(client.cert), keyfile=str(client.key))
    try:
        zk.start(timeout=4)
    except KazooTimeoutError:
        return False
    finally:
        zk.stop()
        zk.close()
    return True


@pytest.mark.parametrize("handler", [FleetCaHandler, PollingHandler])
def test_a_server_vouched_for_only_by_a_system_ca_is_refused(
        impostor: tuple[ZkEnsemble, Path, pki.Issued, Path], handler: type,
        monkeypatch: pytest.MonkeyPatch) -> None:
    ensemble, fleet_ca, client, system_ca = impostor
    monkeypatch.setenv("SSL_CERT_FILE", str(system_ca))
    assert connects(SequentialThreadingHandler(), ensemble.secure_hosts, fleet_ca, client), \
        "plain kazoo should trust the system's CAs (the attack this test guards against)"
    assert not connects(handler(), ensemble.secure_hosts, fleet_ca, client)


def test_the_cli_refuses_a_server_vouched_for_only_by_a_system_ca(
        impostor: tuple[ZkEnsemble, Path, pki.Issued, Path]) -> None:
    ensemble, fleet_ca, client, system_ca = impostor
    result = subprocess.run(
        [str(BIN / "zk-sensorctl"), "--zookeeper", ensemble.secure_hosts,
         "--zk-ca-file", str(fleet_ca), "--zk-cert-file", str(client.cert),
         "--zk-key-file", str(client.key), "status"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "SSL_CERT_FILE": str(system_ca)})
    assert result.returncode == 1
    assert "cannot reach ZooKeeper" in result.stderr


def test_a_server_of_the_fleet_ca_is_still_trusted(tls_server: pki.TlsServer) -> None:
    assert connects(PollingHandler(), tls_server.hosts, tls_server.ca.cert, tls_server.client)


def test_settings_never_show_the_collector_token() -> None:
    settings = Settings(node_id="n1", api_token="s3cret-token-value")
    assert "s3cret-token-value" not in repr(settings)
    assert "s3cret-token-value" not in str(settings)

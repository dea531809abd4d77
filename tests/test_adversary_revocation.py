"""A revoked sensor's certificate opens no door: a stolen Pi keeps its key and its
certificate (valid for up to 90 more days), but once the playbook revokes it
(`zk_sensor_revoked: true`), the ZooKeeper servers refuse it at the TLS handshake.

A real server with the zookeeper role's client TLS settings (`ssl.crl=true`), and
certificates and the CRL made by the role's own fleet_pki.py; the CRL is installed where
the certificates point, as the role does, and the running server picks it up itself.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from zk_sensor.testing.deploy import FLEET_PKI
from zk_sensor.testing.ports import free_ports
from zk_sensor.testing.zookeeper import LOOPBACK, ZkServer, tls_config

START_TIMEOUT_S = 60.0
# The JVM reads a changed CRL again within 30 s (its CRL cache); a little more.
REVOCATION_TIMEOUT_S = 60.0
POLL_S = 0.5


class Fleet:
    """The fleet's PKI (zk1 and two sensors on loopback) and where the server keeps the
    CRL."""

    def __init__(self, base: Path) -> None:
        self.pki = base / "pki"
        self.server_dir = base / "server-tls"
        self.server_dir.mkdir(parents=True)
        self.crl = self.server_dir / "ca.crl"
        self.passphrase = secrets.token_hex(16)

    def issue(self, revoked: tuple[str, ...] = ()) -> dict:
        """fleet_pki.py, then the CRL installed where the certificates point (the role's
        job)."""
        spec = {"dir": str(self.pki), "ca_name": "test fleet CA",
                "quorum_ca_name": "test quorum CA", "ca_days": 30, "cert_days": 2,
                "renew_days": 1, "curve": "P-256",
                "hosts": {"zk1": LOOPBACK, "sensor1": LOOPBACK, "sensor2": LOOPBACK},
                "quorum_hosts": ["zk1"], "extra_names": {}, "clients": [],
                "passphrase_file": "", "crl_url": self.crl.as_uri(),
                "revoked": list(revoked)}
        made = subprocess.run([sys.executable, str(FLEET_PKI)], input=json.dumps(spec),
                              text=True, capture_output=True, timeout=60,
                              env={**os.environ, "ZK_PKI_PASSPHRASE": self.passphrase})
        assert made.returncode == 0, made.stderr
        shutil.copyfile(self.pki / "ca.crl", self.crl)
        return json.loads(made.stdout)

    def steal(self, host: str, into: Path) -> tuple[Path, Path]:
        """A copy of a host's key and certificate, as the stolen machine holds them."""
        into.mkdir(parents=True, exist_ok=True)
        for suffix in ("key", "pem"):
            shutil.copyfile(self.pki / "hosts" / f"{host}.{suffix}", into / f"{host}.{suffix}")
        return into / f"{host}.pem", into / f"{host}.key"


def srvr(port: int, ca: Path, cert: Path, key: Path) -> str:
    """`srvr` over TLS with a client certificate; "" when the server refuses it."""
    context = ssl.create_default_context(cafile=str(ca))
    context.load_cert_chain(str(cert), str(key))
    chunks = []
    try:
        with socket.create_connection((LOOPBACK, port), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname=LOOPBACK) as sock:
            sock.sendall(b"srvr")
            while chunk := sock.recv(4096):
                chunks.append(chunk)
    except OSError:  # ssl.SSLError, a reset: refused
        return ""
    return b"".join(chunks).decode(errors="replace")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Fleet, int]]:
    """One server with the role's client TLS (revocation checked), its secure port."""
    fleet = Fleet(tmp_path)
    fleet.issue()
    store = tmp_path / "keystore.pem"
    store.write_bytes((fleet.pki / "hosts/zk1.key").read_bytes()
                      + (fleet.pki / "hosts/zk1.pem").read_bytes())
    plain, secure = free_ports(2)
    zk = ZkServer(1, tmp_path / "zk1", plain,
                  extra_config=[*tls_config(secure, store, fleet.pki / "ca.pem"), "ssl.crl=true"])
    zk.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while zk.mode() != "standalone":
            assert zk.is_running() and time.monotonic() < deadline, zk.describe()
            time.sleep(POLL_S)
        yield fleet, secure
    finally:
        zk.stop()


def test_a_revoked_sensor_is_refused_and_the_others_are_not(
        server: tuple[Fleet, int], tmp_path: Path) -> None:
    fleet, port = server
    ca = fleet.pki / "ca.pem"
    kept = fleet.steal("sensor1", tmp_path / "sensor1")
    stolen = fleet.steal("sensor2", tmp_path / "thief")
    assert "Mode: standalone" in srvr(port, ca, *kept)
    assert "Mode: standalone" in srvr(port, ca, *stolen)

    assert fleet.issue(revoked=("sensor2",))["revoked"] == ["hosts/sensor2"]
    assert not (fleet.pki / "hosts/sensor2.pem").exists()  # never deployed again
    deadline = time.monotonic() + REVOCATION_TIMEOUT_S
    while srvr(port, ca, *stolen):
        assert time.monotonic() < deadline, "the revoked certificate is still accepted"
        time.sleep(POLL_S)
    assert "Mode: standalone" in srvr(port, ca, *kept)
    # Still revoked on the next run, and only that one.
    assert fleet.issue(revoked=("sensor2",))["changed"] is False
    assert srvr(port, ca, *stolen) == ""

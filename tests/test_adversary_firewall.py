"""A host on the LAN against a ZooKeeper server's firewall: the quorum and election ports
and ssh answer only the other servers and the controller; the client ports answer the
fleet's network; anything from elsewhere is dropped.

The zk_firewall role's ruleset for zk1, rendered from the inventory, loaded with nft into
a network namespace of its own that plays zk1 (10.231.0.11), linked by a veth pair to a
second namespace that holds the other machines' addresses: zk2, the controller, the lab's
attacker on the fleet's network and a host outside it. Nothing listens on zk1: a port the
firewall lets through answers with a reset (refused), a dropped one never answers.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from zk_sensor.testing.deploy import render_firewall

pytestmark = pytest.mark.skipif(
    not shutil.which("nft") or not shutil.which("ip") or sys.platform != "linux"
    or subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() != "0",
    reason="needs root, ip and nft (Debian's nftables)")

SERVER = "10.231.0.11"
PEER, CONTROLLER, ATTACKER, OUTSIDER = "10.231.0.12", "10.231.0.1", "10.231.0.66", "192.0.2.50"
PROBE_TIMEOUT_S = 1.5
# A tiny client run inside the other namespace: connect from a given source address.
PROBE = """
import socket, sys
source, port = sys.argv[1], int(sys.argv[2])
sock = socket.socket()
sock.settimeout(float(sys.argv[3]))
sock.bind((source, 0))
try:
    sock.connect((sys.argv[4], port))
    print("open")
except ConnectionRefusedError:
    print("reached")
except OSError:
    print("dropped")
"""


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def namespaces(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(zk1's namespace, the others' namespace), linked; removed afterwards."""
    tag = secrets.token_hex(3)
    server, others = f"zksfw-s-{tag}", f"zksfw-c-{tag}"
    ip("netns", "add", server)
    try:
        ip("netns", "add", others)
        ip("link", "add", f"zfa{tag}", "type", "veth", "peer", "name", f"zfb{tag}")
        ip("link", "set", f"zfa{tag}", "netns", server)
        ip("link", "set", f"zfb{tag}", "netns", others)
        ip("-n", server, "addr", "add", f"{SERVER}/24", "dev", f"zfa{tag}")
        for address in (PEER, CONTROLLER, ATTACKER):
            ip("-n", others, "addr", "add", f"{address}/24", "dev", f"zfb{tag}")
        ip("-n", others, "addr", "add", f"{OUTSIDER}/32", "dev", f"zfb{tag}")
        for namespace, link in ((server, f"zfa{tag}"), (others, f"zfb{tag}")):
            ip("-n", namespace, "link", "set", "lo", "up")
            ip("-n", namespace, "link", "set", link, "up")
        # zk1 answers the outsider too (a route back), so only the firewall can drop it.
        ip("-n", server, "route", "add", f"{OUTSIDER}/32", "dev", f"zfa{tag}")
        yield server, others
    finally:
        subprocess.run(["ip", "netns", "del", others], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", server], capture_output=True, timeout=30)


def probe(others: str, source: str, port: int) -> str:
    result = subprocess.run(
        ["ip", "netns", "exec", others, sys.executable, "-c", PROBE, source, str(port),
         str(PROBE_TIMEOUT_S), SERVER], capture_output=True, text=True, timeout=30, check=True)
    return result.stdout.strip()


def test_zk1_answers_each_port_only_to_whom_needs_it(
        namespaces: tuple[str, str], tmp_path: Path) -> None:
    server, others = namespaces
    ruleset = tmp_path / "zk1.nft"
    ruleset.write_text(render_firewall(tmp_path)["zk1"])
    subprocess.run(["ip", "netns", "exec", server, "nft", "-f", str(ruleset)], check=True,
                   capture_output=True, timeout=30)
    seen = {(source, port): probe(others, source, port)
            for source, port in ((PEER, 2888), (PEER, 3888), (ATTACKER, 2888),
                                 (ATTACKER, 3888), (ATTACKER, 2281), (ATTACKER, 22),
                                 (CONTROLLER, 22), (CONTROLLER, 2281), (OUTSIDER, 2281),
                                 (OUTSIDER, 22))}
    assert seen == {
        (PEER, 2888): "reached", (PEER, 3888): "reached",
        (ATTACKER, 2888): "dropped", (ATTACKER, 3888): "dropped",
        (ATTACKER, 2281): "reached", (ATTACKER, 22): "dropped",
        (CONTROLLER, 22): "reached", (CONTROLLER, 2281): "reached",
        (OUTSIDER, 2281): "dropped", (OUTSIDER, 22): "dropped"}

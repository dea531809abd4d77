"""ZooKeeper identities for the trust tests: digest credentials, their files as a node or
the operator reads them, a kazoo client per identity, and a namespace under `acl apply`
(tests/test_trust.py, test_operator_tools.py, test_adversary_zk.py)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from kazoo.client import KazooClient

from zk_sensor.fleet.layout import Layout
from zk_sensor.testing.fleet import run_ctl
from zk_sensor.zk.access import Credentials

OPERATOR = Credentials("operator", "operator-password-0123456789")
FLEET = Credentials("fleet", "fleet-password-0123456789")


def write_credentials(directory: Path, credentials: Credentials, mode: int = 0o600) -> Path:
    """`user:password` in directory/<user>.auth, with `mode` (the daemons refuse a file
    others can read)."""
    path = directory / f"{credentials.user}.auth"
    path.write_text(f"{credentials.user}:{credentials.password}\n")
    path.chmod(mode)
    return path


def identity_client(hosts: str, credentials: Credentials | None) -> KazooClient:
    """A connected client authenticated as `credentials` (None: anyone)."""
    auth = [("digest", f"{credentials.user}:{credentials.password}")] if credentials else None
    client = KazooClient(hosts=hosts, auth_data=auth)
    client.start(timeout=10)
    return client


@dataclass
class Secured:
    """A namespace under `acl apply`: the operator's and the fleet's credential files and
    a connected client per identity."""

    hosts: str
    namespace: str
    operator_file: Path
    fleet_file: Path
    clients: dict[str, KazooClient]

    @property
    def layout(self) -> Layout:
        return Layout(self.namespace)

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_ctl(self.hosts, self.namespace, *args)

    def as_operator(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.ctl("--zk-auth-file", str(self.operator_file), *args)


__all__ = ["FLEET", "OPERATOR", "Secured", "identity_client", "write_credentials"]

"""How a process proves who it is to ZooKeeper: digest credentials read from a file, and
TLS with the servers' CA and a client certificate.

A credentials file holds one line `user:password`. It must be readable by its owner
only: the password is the fleet's (or the operator's) whole authority, so a file others
can read is refused at start instead of being used. The password never reaches a command
line, a log line or a repr.
"""

import base64
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zk_sensor.config.secrets import check_private, check_readable, read_secret_lines
from zk_sensor.config.sources import SettingsError
from zk_sensor.zk.handler import FleetCaHandler

USER_PATTERN_FORBIDDEN = frozenset(":\r\n\t ")


@dataclass(frozen=True)
class Credentials:
    """A digest identity. The password never reaches a repr, a log line or a command
    line."""
    user: str
    password: str = field(repr=False)

    @property
    def digest_id(self) -> str:
        """The id ZooKeeper's digest scheme stores in ACLs: user:base64(sha1(user:pw))."""
        digest = hashlib.sha1(f"{self.user}:{self.password}".encode()).digest()
        return f"{self.user}:{base64.b64encode(digest).decode()}"


def read_credentials(path_text: str, what: str = "zk_auth_file") -> Credentials:
    path = Path(path_text)
    content = read_secret_lines(path_text, what)
    user, colon, password = content[0].partition(":") if len(content) == 1 else ("", "", "")
    if not colon or not user or not password or USER_PATTERN_FORBIDDEN & set(user):
        raise SettingsError(f"{what} {path} must hold exactly one line user:password")
    return Credentials(user, password)


@dataclass(frozen=True)
class ZkAccess:
    """Everything a KazooClient needs to be this identity, over TLS when a CA is set."""

    credentials: Credentials | None = None
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""

    @property
    def tls(self) -> bool:
        return bool(self.ca_file)

    def describe(self) -> str:
        """Who this client is, for log lines: never the password."""
        who = f"user {self.credentials.user!r}" if self.credentials else "no credentials"
        return f"{who}, {'TLS' if self.tls else 'plain TCP'}"

    def client_options(self, handler: FleetCaHandler | None = None) -> dict[str, Any]:
        """KazooClient keyword arguments. Host names are checked against the servers'
        certificates: a CA alone would let any server it signed pose as any other; and
        the handler trusts that CA alone, not the system's (kazoo_handler.py)."""
        options: dict[str, Any] = {"handler": handler or FleetCaHandler()}
        if self.credentials:
            credentials = self.credentials
            options["auth_data"] = [("digest", f"{credentials.user}:{credentials.password}")]
        if self.tls:
            options.update(use_ssl=True, verify_certs=True, check_hostname=True,
                           ca=self.ca_file, certfile=self.cert_file or None,
                           keyfile=self.key_file or None)
        return options


def zk_access(auth_file: str, ca_file: str, cert_file: str, key_file: str) -> ZkAccess:
    """Read and check every file now, so a bad one stops the program at start with one
    line instead of failing deep inside a TLS handshake or an ACL check."""
    credentials = read_credentials(auth_file) if auth_file else None
    if ca_file:
        check_readable(ca_file, "zk_ca_file")
    if cert_file:
        check_readable(cert_file, "zk_cert_file")
    if key_file:
        check_private(Path(key_file), "zk_key_file")
    return ZkAccess(credentials, ca_file, cert_file, key_file)


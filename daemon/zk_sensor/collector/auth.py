"""Who may write: bearer credentials, each with a name, and the rules for anonymous writes.

A credential is `shared` (the `token`/`token_file` every node holds) or one line
`NAME TOKEN` of `tokens_file`, NAME being the node id that holds it: with per-node
credentials a stolen Pi's token can be revoked alone, and the fence (fence.py) can check
that the poster is the leader ZooKeeper knows. Tokens are compared in constant time;
logs name the credential, never the token.

Without any credential writes are open, which server.py allows only on loopback (a demo
or a test) or with `insecure_open_writes`. A browser can send a GET anywhere, so an
anonymous `GET /nuevo` write is accepted only in that loopback demo or with
`seed_get_writes` (the seed's own clients), and then only keyless when credentials exist:
a keyed round (round, epoch) raises a fence and claims a round number, which takes a
token.
"""

import hmac
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, NoReturn

from zk_sensor.collector.parse import Refused
from zk_sensor.config.secrets import read_secret_lines
from zk_sensor.config.sources import SettingsError

log = logging.getLogger("zk_collector")
SHARED = "shared"
ANONYMOUS = "anonymous"
# 401/403 lines per source address: one a minute, the rest counted in the next one.
REFUSAL_LOG_EVERY = 60.0
# Source addresses remembered for that; beyond it the oldest are forgotten.
REFUSAL_LOG_SOURCES = 1024
CHALLENGE = [("WWW-Authenticate", 'Bearer realm="zk-collector"')]


def read_tokens_file(path_text: str) -> dict[str, str]:
    """NAME TOKEN per line; a name or a token given twice is a mistake to stop on."""
    tokens: dict[str, str] = {}
    for number, line in enumerate(read_secret_lines(path_text, "tokens_file"), 1):
        parts = line.split()
        if len(parts) != 2:
            raise SettingsError(f"tokens_file {path_text}: entry {number} must be NAME TOKEN")
        name, token = parts
        if name in tokens or name == SHARED:
            raise SettingsError(f"tokens_file {path_text}: name {name!r} is given twice "
                                f"(or is {SHARED!r}, the name of token/token_file)")
        if token in tokens.values():
            raise SettingsError(f"tokens_file {path_text}: the token of {name!r} is "
                                "another name's too")
        tokens[name] = token
    if not tokens:
        raise SettingsError(f"tokens_file {path_text} has no NAME TOKEN line")
    return tokens


def read_credentials(token: str, token_file: str, tokens_file: str) -> dict[str, str]:
    """Every credential by name; empty when writes are to be open."""
    credentials = read_tokens_file(tokens_file) if tokens_file else {}
    shared = token
    if token_file:
        lines = read_secret_lines(token_file, "token_file")
        if len(lines) != 1:
            raise SettingsError(f"token_file {token_file} must hold exactly one token")
        shared = lines[0]
    if shared:
        if shared in credentials.values():
            raise SettingsError("the shared token is also a tokens_file entry's")
        credentials[SHARED] = shared
    return credentials


@dataclass
class RefusalLog:
    """401 and 403 lines, at most one per source address a minute: a scanner must not be
    able to flood the journal, and the next line says how many were left out."""

    every: float = REFUSAL_LOG_EVERY
    last: dict[str, float] = field(default_factory=dict)
    suppressed: Counter[str] = field(default_factory=Counter)

    def note(self, source: str, line: str, now: float | None = None) -> None:
        at = time.monotonic() if now is None else now
        if at - self.last.get(source, -self.every) < self.every:
            self.suppressed[source] += 1
            return
        if len(self.last) >= REFUSAL_LOG_SOURCES and source not in self.last:
            oldest = min(self.last, key=self.last.__getitem__)
            del self.last[oldest]
            self.suppressed.pop(oldest, None)
        self.last[source] = at
        left_out = self.suppressed.pop(source, 0)
        log.warning("%s%s", line, f" ({left_out} more from {source} not logged)"
                    if left_out else "")


@dataclass
class Gate:
    """Decides who a write comes from, or refuses it (401: no or a bad token; 403: a
    write this collector does not take anonymously)."""

    credentials: dict[str, str]
    loopback_open: bool = True
    seed_get_writes: bool = False
    unauthorized: Counter[str] = field(default_factory=Counter)
    refusals: RefusalLog = field(default_factory=RefusalLog)

    def who(self, environ: dict[str, Any], keyed: bool) -> str:
        """The credential's name, or ANONYMOUS."""
        method = environ["REQUEST_METHOD"]
        source = environ.get("REMOTE_ADDR", "?")
        if not self.credentials:
            if method == "GET" and not (self.loopback_open or self.seed_get_writes):
                raise Refused("403 Forbidden", "anonymous GET writes are off: send a bearer "
                              "token, POST /api/rounds, or set seed_get_writes")
            return ANONYMOUS
        given = environ.get("HTTP_AUTHORIZATION", "")
        if given:
            name = self.match(given)
            if name is None:
                self.refuse(source, "bad_token", "a bearer token that matches no credential")
            return name
        if method == "GET" and self.seed_get_writes and not keyed:
            return ANONYMOUS
        self.refuse(source, "missing_token", "no bearer token")

    def match(self, header: str) -> str | None:
        """Constant time per credential, and every credential is tried, so the time
        taken tells nothing about which one (or how much of one) matched."""
        found = None
        given = header.encode()
        for name, token in self.credentials.items():
            if hmac.compare_digest(given, f"Bearer {token}".encode()):
                found = name
        return found

    def refuse(self, source: str, reason: str, what: str) -> NoReturn:
        self.unauthorized[reason] += 1
        self.refusals.note(source, f"401 to {source}: {what}")
        raise Refused("401 Unauthorized", "a valid bearer token is required to write"
                      + (" (anonymous writes: keyless GET /nuevo only)"
                         if self.seed_get_writes else ""), CHALLENGE)

"""One keep-alive HTTP(S) connection to a collector, for the courier (delivery.py, whose
docstring says why http.client and how TLS is verified)."""

import http.client
import json
import re
import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit


@dataclass(frozen=True)
class HttpRequest:
    method: str
    url: str
    params: dict[str, str] | None = None
    json: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


# The errors of one HTTP attempt: no connection, a timeout, a broken or garbled answer.
HTTP_ERRORS = (OSError, http.client.HTTPException)
# A kept-alive connection the server closed meanwhile fails like this before any answer:
# the request never reached the collector, so it is resent at once on a new connection.
STALE_CONNECTION = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)
REPLY_LIMIT = 4096


class CaFileError(Exception):
    """The CA file for an https:// collector cannot be loaded; one line naming it."""


class HttpSender:
    """One keep-alive connection to the collector's origin, opened on first use and
    replaced when the URL's origin changes or an attempt fails."""

    def __init__(self, timeout: float, ca_file: str) -> None:
        self.timeout = timeout
        self.ca_file = ca_file
        self.tls: ssl.SSLContext | None = None
        self.connection: http.client.HTTPConnection | None = None
        self.origin: tuple[str, str, int | None] | None = None

    @property
    def trust(self) -> str:
        return f"CA file {self.ca_file}" if self.ca_file else "the system's CAs"

    def send(self, request: HttpRequest) -> tuple[int, str]:
        """The status and the start of the body; raises one of HTTP_ERRORS."""
        parts = urlsplit(request.url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if request.params:
            target += ("&" if "?" in target else "?") + urlencode(request.params)
        headers = dict(request.headers)
        body = None
        if request.json is not None:
            body = json.dumps(request.json).encode()
            headers["Content-Type"] = "application/json"
        reused = self._connect(parts.scheme, parts.hostname or "", parts.port)
        try:
            return self._exchange(request.method, target, body, headers)
        except STALE_CONNECTION:
            self.close()
            if not reused:
                raise
        self._connect(parts.scheme, parts.hostname or "", parts.port)
        return self._exchange(request.method, target, body, headers)

    def _connect(self, scheme: str, host: str, port: int | None) -> bool:
        """True when an open connection is reused."""
        if self.connection is not None and self.origin == (scheme, host, port):
            return True
        self.close()
        if scheme == "https":
            self.connection = http.client.HTTPSConnection(host, port, timeout=self.timeout,
                                                          context=self._tls_context())
        else:
            self.connection = http.client.HTTPConnection(host, port, timeout=self.timeout)
        self.origin = (scheme, host, port)
        return False

    def _tls_context(self) -> ssl.SSLContext:
        """Loaded at the first https:// connection rather than at start, so a broken CA
        file is a retried failure that heals when the file is fixed, and a fleet that
        delivers over http:// never needs one."""
        if self.tls is None:
            try:
                self.tls = ssl.create_default_context(cafile=self.ca_file or None)
            except OSError as error:
                raise CaFileError(f"cannot load CA file {self.ca_file}: "
                                  f"{tls_reason(error)}") from None
        return self.tls

    def _exchange(self, method: str, target: str, body: bytes | None,
                  headers: dict[str, str]) -> tuple[int, str]:
        assert self.connection is not None
        try:
            self.connection.request(method, target, body=body, headers=headers)
            response = self.connection.getresponse()
            text = response.read(REPLY_LIMIT).decode(errors="replace")
            if not response.isclosed():
                response.read()
        except HTTP_ERRORS:
            self.close()
            raise
        if response.will_close:
            self.close()
        return response.status, text

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
        self.connection = None



def tls_reason(error: OSError) -> str:
    """OpenSSL's words without its bracketed code and C source position."""
    text = " ".join(str(error).split())
    return re.sub(r"^\[[^]]*\] *| *\(_ssl\.c:\d+\)$", "", text) or type(error).__name__

"""The one place a node speaks HTTP: a requests.Session to the collectors, for the courier
(delivery.py says what is sent where and what each answer means).

requests (with urllib3, idna, charset_normalizer, certifi) adds about 4.7 MB to a node
of 27-29 MB, where the standard library's http.client added nothing, so it is imported
at the first delivery, in the courier's thread, which only a leader runs: a follower
never loads it.

The session is held to what the old http.client sender did, where requests would differ:
- TLS is verified against collector_ca_file (else zk_ca_file) alone, or else the
  system's CAs, through one ssl context: requests would trust certifi's bundle instead,
  and add it to a context it is given.
- No redirect is followed: a 3xx is an answer like any other (the courier retries it),
  since following it would carry the round and the token wherever it points.
- trust_env is off: no proxy, .netrc or CA bundle from the environment decides where
  the round and the token go or whom they trust.
- Connect and read each time out after http_timeout; no attempt is repeated by urllib3
  (each collector costs one timeout), only resent once here when a kept-alive connection
  turns out closed before any answer.
- Only the first REPLY_LIMIT bytes of an answer are kept, and a bounded rest is drained
  so the connection can carry the next round; a longer answer costs its connection.
- Errors come out as the standard library's exceptions underneath requests' wrappers
  (ConnectionRefusedError, TimeoutError, ssl.SSLCertVerificationError...), which is what
  the courier's failure lines name.
"""

from __future__ import annotations

import http.client
import json
import re
import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import requests


@dataclass(frozen=True)
class HttpRequest:
    """One request the courier asks for, built before any HTTP library is imported (a
    follower never imports one)."""
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
DRAIN_LIMIT = 65536


class CaFileError(Exception):
    """The CA file for an https:// collector cannot be loaded; one line naming it."""


class HttpError(http.client.HTTPException):
    """A failure requests reports with no standard library error underneath it."""


class HttpSender:
    """One session for the courier's thread; urllib3 keeps one connection per collector
    alive between rounds and opens a new one when it was closed."""

    def __init__(self, timeout: float, ca_file: str) -> None:
        self.timeout = timeout
        self.ca_file = ca_file
        self.tls: ssl.SSLContext | None = None
        self.session: requests.Session | None = None
        self.answered_origin: str | None = None

    @property
    def trust(self) -> str:
        return f"CA file {self.ca_file}" if self.ca_file else "the system's CAs"

    def send(self, request: HttpRequest) -> tuple[int, str]:
        """The status and the start of the body; raises one of HTTP_ERRORS or CaFileError."""
        parts = urlsplit(request.url)
        origin = f"{parts.scheme}://{parts.netloc}"
        session = self._session(https=parts.scheme == "https")
        kept, self.answered_origin = self.answered_origin == origin, None
        try:
            answer = self._exchange(session, request)
        except STALE_CONNECTION:
            if not kept:
                raise
            answer = self._exchange(session, request)
        self.answered_origin = origin
        return answer

    def _session(self, https: bool) -> requests.Session:
        if self.session is None:
            import requests  # a leader's first delivery: see the module's docstring

            self.session = requests.Session()
            self.session.trust_env = False
            self.session.headers["Accept-Encoding"] = "identity"
        if https and self.tls is None:
            self.session.mount("https://", context_adapter(self._tls_context()))
        return self.session

    def _tls_context(self) -> ssl.SSLContext:
        """Loaded at the first https:// delivery rather than at start, so a broken CA
        file is a retried failure that heals when the file is fixed, and a fleet that
        delivers over http:// never needs one."""
        if self.tls is None:
            try:
                self.tls = ssl.create_default_context(cafile=self.ca_file or None)
            except OSError as error:
                raise CaFileError(f"cannot load CA file {self.ca_file}: "
                                  f"{tls_reason(error)}") from None
        return self.tls

    def _exchange(self, session: requests.Session, request: HttpRequest) -> tuple[int, str]:
        import requests
        import urllib3

        headers = dict(request.headers)
        body = None
        if request.json is not None:  # json.dumps's bytes, as before (requests' refuse NaN)
            body = json.dumps(request.json).encode()
            headers["Content-Type"] = "application/json"
        try:
            response = session.request(
                request.method, request.url, params=request.params, data=body,
                headers=headers, timeout=(self.timeout, self.timeout),
                allow_redirects=False, stream=True)
            try:
                head = response.raw.read(REPLY_LIMIT)
                response.raw.read(DRAIN_LIMIT)
            finally:
                response.close()  # keeps the connection if the answer was read whole
        except (requests.RequestException, urllib3.exceptions.HTTPError) as error:
            raise underlying(error) from None
        return response.status_code, head.decode(errors="replace")

    def close(self) -> None:
        if self.session is not None:
            self.session.close()


def context_adapter(context: ssl.SSLContext) -> requests.adapters.HTTPAdapter:
    """An adapter whose connections verify with this context and nothing else."""
    from requests.adapters import HTTPAdapter

    class ContextAdapter(HTTPAdapter):
        """Makes urllib3 use our one `ssl` context, which trusts exactly what the node was
        told to trust."""
        def init_poolmanager(self, connections: int, maxsize: int, block: bool = False,
                             **pool_kwargs: Any) -> None:
            super().init_poolmanager(connections, maxsize, block, ssl_context=context,
                                     **pool_kwargs)

        def cert_verify(self, conn: Any, url: Any, verify: Any, cert: Any) -> None:
            """Nothing: requests would load certifi's CAs into the context here."""

    return ContextAdapter()  # requests' default: no retries, as for http://


def underlying(error: BaseException) -> Exception:
    """The standard library's error under requests' and urllib3's wrappers (as http.client
    raised it), else an HttpError with their message."""
    seen: list[BaseException] = []
    todo: list[object] = [error]
    while todo:
        current = todo.pop(0)
        if not isinstance(current, Exception) or current in seen:
            continue
        seen.append(current)
        if isinstance(current, HTTP_ERRORS) and not is_wrapper(current):
            return current
        todo.extend([getattr(current, "reason", None), *current.args,
                     current.__cause__, current.__context__])
    return HttpError(one_line(error))


def is_wrapper(error: Exception) -> bool:
    """requests' exceptions are OSErrors, but say less than the error they wrap."""
    return type(error).__module__.split(".")[0] == "requests"


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def tls_reason(error: OSError) -> str:
    """OpenSSL's words without its bracketed code and C source position."""
    text = " ".join(str(error).split())
    return re.sub(r"^\[[^]]*\] *| *\(_ssl\.c:\d+\)$", "", text) or type(error).__name__

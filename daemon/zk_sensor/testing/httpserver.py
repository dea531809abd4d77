"""The tests' stand-in HTTP servers (a collector, a mirror, a misbehaving peer).

A client that drops a kept-alive connection (requests' pool at the end of a test, a
deliberate reset) is the peer's normal life, not an error: the standard server would print
its traceback into the suite's output, where it reads like a failure.
"""

import sys
from http.server import ThreadingHTTPServer
from typing import Any

DROPPED = (ConnectionResetError, BrokenPipeError)


class QuietHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that lets a dropped connection go silently; every other error
    is still printed."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], DROPPED):
            return
        super().handle_error(request, client_address)

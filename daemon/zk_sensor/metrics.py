"""Prometheus metrics of one node, served from a thread that only reads the loop's
counters (never ZooKeeper), so scraping can not disturb the fleet."""

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def render(samples: list[tuple[str, str, str, float]]) -> bytes:
    """(name, type, help, value) → the text exposition format."""
    lines = []
    for name, kind, text, value in samples:
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", f"{name} {value:g}"]
    return ("\n".join(lines) + "\n").encode()


class MetricsServer:
    def __init__(self, host: str, port: int,
                 samples: Callable[[], list[tuple[str, str, str, float]]]) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/metrics":
                    self.send_error(404)
                    return
                body = render(samples())
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="metrics",
                                       daemon=True)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

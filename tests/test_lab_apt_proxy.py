"""The lab's apt proxy (ansible/lab/apt_proxy.py), the lab machines' one way to Debian's
mirror: a real proxy process on loopback in front of a real HTTP server standing in for
the mirror, driven the way apt drives a proxy (absolute URLs)."""

import http.server
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from zk_sensor.testing.fleet import wait_for
from zk_sensor.testing.httpserver import QuietHTTPServer
from zk_sensor.testing.ports import free_port

REPO = Path(__file__).resolve().parent.parent
PROXY = REPO / "ansible" / "lab" / "apt_proxy.py"
PACKAGE = "/debian/pool/main/z/zookeeper/zookeeper_3.9.3-1_all.deb"
INDEX = "/debian/dists/trixie/InRelease"


class Mirror(http.server.BaseHTTPRequestHandler):
    """A stand-in for deb.debian.org: every path answers with its own name, counted."""

    served: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        if self.path.endswith("missing"):
            self.send_error(404)
            return
        body = f"content of {self.path}".encode()
        Mirror.served.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        """Quiet: the tests read what was served from `served`."""


@pytest.fixture
def mirror() -> Iterator[tuple[str, http.server.HTTPServer]]:
    Mirror.served = []
    server = QuietHTTPServer(("127.0.0.1", 0), Mirror)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}", server
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(tmp_path: Path, mirror: tuple[str, http.server.HTTPServer]) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, str(PROXY), "--listen", f"127.0.0.1:{port}",
                                "--cache", str(tmp_path / "cache"), "--allow", "127.0.0.1"],
                               stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _answers(port), 10, "the apt proxy to listen")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def _answers(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).close()
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


def through(proxy: str, url: str) -> tuple[int, bytes]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy}))
    try:
        with opener.open(url, timeout=10) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, b""


def test_a_package_is_fetched_once_and_then_served_from_the_cache(
        proxy: str, mirror: tuple[str, http.server.HTTPServer]) -> None:
    address, _ = mirror
    assert through(proxy, f"http://{address}{PACKAGE}") == (200, f"content of {PACKAGE}".encode())
    assert through(proxy, f"http://{address}{PACKAGE}") == (200, f"content of {PACKAGE}".encode())
    assert Mirror.served == [PACKAGE]


def test_indexes_always_come_from_the_mirror(
        proxy: str, mirror: tuple[str, http.server.HTTPServer]) -> None:
    """An index changes under the same name: never kept, so apt sees the mirror's newest."""
    address, _ = mirror
    for _ in range(2):
        assert through(proxy, f"http://{address}{INDEX}")[0] == 200
    assert Mirror.served == [INDEX, INDEX]


def test_only_the_allowed_mirror_is_reachable(proxy: str) -> None:
    assert through(proxy, "http://localhost:9/debian/dists/trixie/InRelease")[0] == 403
    assert through(proxy, "http://deb.debian.org/debian/dists/trixie/InRelease")[0] == 403


def test_the_mirrors_errors_reach_apt_and_nothing_wrong_is_kept(
        proxy: str, mirror: tuple[str, http.server.HTTPServer], tmp_path: Path) -> None:
    address, _ = mirror
    assert through(proxy, f"http://{address}/debian/pool/main/x/missing")[0] == 404
    assert through(proxy, f"http://{address}/debian/pool/../../../etc/passwd")[0] == 200
    kept = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert kept == []

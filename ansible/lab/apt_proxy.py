#!/usr/bin/env python3
"""The lab's apt proxy: the machines' one way to Debian's mirror, for release upgrades.

The lab's machines have no route out.  A release upgrade (ansible/upgrade.yml) needs apt,
so the lab runs this forward HTTP proxy on the controller's bridge address and points
each machine's apt at it (``Acquire::http::Proxy``).  It relays GET and HEAD for the
allowed hosts only (Debian's mirrors: nothing else is reachable through it), and keeps
the files that never change under a name (``pool/`` and ``by-hash/``) on disk, so the
second machine to upgrade downloads nothing the first already did.

Run by lab.py (``Lab.start_apt_proxy``); standalone::

    apt_proxy.py --listen 10.231.0.1:3142 --cache /var/lib/zk-sensor-lab/apt-cache \\
        --allow deb.debian.org
"""

from __future__ import annotations

import argparse
import http.server
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import IO
from urllib.parse import urlsplit

# Long enough for a slow mirror to start a large package, short enough that a hung one
# fails apt's request instead of the upgrade's whole deadline.
UPSTREAM_TIMEOUT_S = 60
CHUNK = 1 << 16
# Paths whose content never changes once published: safe to keep and serve again.
IMMUTABLE_PARTS = ("pool", "by-hash")


def cache_path(cache: Path, host: str, path: str) -> Path | None:
    """Where an immutable file is kept, or None for anything else (indexes, odd paths)."""
    parts = PurePosixPath(path).parts[1:]
    if not parts or any(p in ("", ".", "..") for p in parts):
        return None
    if not any(p in IMMUTABLE_PARTS for p in parts):
        return None
    return cache.joinpath(host, *parts)


class AptProxyHandler(http.server.BaseHTTPRequestHandler):
    """One request: an absolute http:// URL of an allowed host, relayed or served kept."""

    server_version = "zk-sensor-lab-apt-proxy"
    cache: Path
    allowed: frozenset[str]

    def do_GET(self) -> None:
        self.relay(with_body=True)

    def do_HEAD(self) -> None:
        self.relay(with_body=False)

    def relay(self, with_body: bool) -> None:
        url = urlsplit(self.path)
        if url.scheme != "http" or url.hostname not in self.allowed:
            self.send_error(403, "only Debian's mirror is reachable through the lab's proxy")
            return
        kept = cache_path(self.cache, url.hostname, url.path)
        if kept is not None and kept.is_file():
            self.send_file(kept, with_body)
            return
        request = urllib.request.Request(self.path, method="GET" if with_body else "HEAD")
        try:
            with urllib.request.urlopen(request, timeout=UPSTREAM_TIMEOUT_S) as upstream:
                self.send_response(200)
                for name in ("Content-Type", "Content-Length", "Last-Modified"):
                    if upstream.headers.get(name):
                        self.send_header(name, upstream.headers[name])
                self.end_headers()
                if with_body:
                    self.copy_out(upstream, kept)
        except urllib.error.HTTPError as error:
            self.send_error(error.code, str(error.reason))
        except (OSError, urllib.error.URLError) as error:
            self.send_error(502, f"upstream: {error}")

    def copy_out(self, upstream: IO[bytes], kept: Path | None) -> None:
        """Stream the body to apt, and into the cache when it is an immutable file (renamed
        into place only when complete, so a broken transfer is never served again)."""
        if kept is None:
            shutil.copyfileobj(upstream, self.wfile, CHUNK)
            return
        kept.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=kept.parent, delete=False) as spool:
            try:
                while chunk := upstream.read(CHUNK):
                    spool.write(chunk)
                    self.wfile.write(chunk)
            except BaseException:
                os.unlink(spool.name)
                raise
        os.replace(spool.name, kept)

    def send_file(self, path: Path, with_body: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(path.stat().st_size))
        self.end_headers()
        if with_body:
            with path.open("rb") as body:
                shutil.copyfileobj(body, self.wfile, CHUNK)


def serve(listen: str, cache: Path, allowed: Sequence[str]) -> None:
    host, _, port = listen.rpartition(":")
    handler = type("Handler", (AptProxyHandler,),
                   {"cache": cache, "allowed": frozenset(allowed)})
    cache.mkdir(parents=True, exist_ok=True)
    with http.server.ThreadingHTTPServer((host, int(port)), handler) as server:
        server.serve_forever()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="ADDRESS:PORT to serve on")
    parser.add_argument("--cache", required=True, type=Path, help="where kept files go")
    parser.add_argument("--allow", action="append", required=True,
                        help="a host apt may reach through the proxy (repeatable)")
    args = parser.parse_args(argv)
    serve(args.listen, args.cache, args.allow)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The lab attacker's tools: run on the `attacker` machine (tests/test_lab.py copies this
file there), with the machine's Debian Python and its standard library only.

The attacker is on the fleet's network but holds nothing of the fleet: no certificate of
its CA, no credentials, no token. Each command reads one JSON request on stdin and prints
one JSON answer on stdout, what a person at that machine would see:

- `probe`: TCP to each target, then a TLS handshake without a client certificate and with
  the attacker's own (another CA's), each followed by a four-letter word; whether the
  connection was refused, dropped (timeout), or answered.
- `forge`: rounds posted to a collector without a token and with a made-up one, the
  seed's anonymous `GET /nuevo`, and a negative Content-Length: the status lines.
- `slow`: connections held open against a collector, some never starting TLS, some
  trickling a request one byte a second; prints `holding N` once they are open, then,
  after `seconds`, how many the collector had cut.
"""

import json
import socket
import ssl
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TIMEOUT = 4.0


def tcp_state(host: str, port: int) -> tuple[str, socket.socket | None]:
    """open, refused (a firewall's reject or nothing listening), timeout (dropped)."""
    try:
        return "open", socket.create_connection((host, port), timeout=TIMEOUT)
    except ConnectionRefusedError:
        return "refused", None
    except TimeoutError:
        return "timeout", None
    except OSError as error:
        return f"unreachable: {error.strerror or error}", None


def client_context(cert: str = "", key: str = "") -> ssl.SSLContext:
    """Trusts any server (an attacker checks nothing) and shows its own certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if cert:
        with tempfile.TemporaryDirectory() as directory:
            cert_file, key_file = Path(directory) / "cert.pem", Path(directory) / "key.pem"
            cert_file.write_text(cert)
            key_file.write_text(key)
            context.load_cert_chain(str(cert_file), str(key_file))
    return context


def tls_word(host: str, port: int, context: ssl.SSLContext, word: bytes) -> str:
    """A TLS session's fate: the handshake refused, the connection closed unanswered, or
    the bytes the server answered (a ZooKeeper that served us)."""
    state, raw = tcp_state(host, port)
    if raw is None:
        return f"tcp {state}"
    try:
        with context.wrap_socket(raw, server_hostname=host) as sock:
            sock.settimeout(TIMEOUT)
            sock.sendall(word)
            answer = sock.recv(4096)
    except (OSError, ssl.SSLError) as error:
        return f"refused: {type(error).__name__}"
    finally:
        raw.close()
    return f"answered: {answer[:60]!r}" if answer else "closed unanswered"


def probe(request: dict[str, Any]) -> dict[str, Any]:
    own = client_context(request.get("cert", ""), request.get("key", ""))
    bare = client_context()
    found = {}
    for host, port in request["targets"]:
        state, raw = tcp_state(host, port)
        if raw is not None:
            raw.close()
        entry: dict[str, Any] = {"tcp": state}
        if state == "open":
            entry["tls_without_certificate"] = tls_word(host, port, bare, b"srvr")
            entry["tls_with_own_certificate"] = tls_word(host, port, own, b"srvr")
            entry["plain"] = plain_word(host, port, b"srvr")
        found[f"{host}:{port}"] = entry
    return found


def plain_word(host: str, port: int, word: bytes) -> str:
    """The same word without TLS: what a plaintext client or quorum peer gets."""
    state, raw = tcp_state(host, port)
    if raw is None:
        return f"tcp {state}"
    try:
        raw.settimeout(TIMEOUT)
        raw.sendall(word)
        answer = raw.recv(4096)
    except OSError as error:
        return f"refused: {type(error).__name__}"
    finally:
        raw.close()
    return f"answered: {answer[:60]!r}" if answer else "closed unanswered"


def http_status(host: str, port: int, request: bytes) -> str:
    """The status line a raw HTTPS request gets, or how the connection ended."""
    state, raw = tcp_state(host, port)
    if raw is None:
        return f"tcp {state}"
    try:
        with client_context().wrap_socket(raw, server_hostname=host) as sock:
            sock.settimeout(TIMEOUT * 3)
            sock.sendall(request)
            answer = sock.recv(65536)
    except (OSError, ssl.SSLError) as error:
        return f"error: {type(error).__name__}"
    finally:
        raw.close()
    return answer.split(b"\r\n", 1)[0].decode(errors="replace") if answer else "closed"


def post(host: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", "Connection: close",
             "Content-Type: application/json", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def forge(request: dict[str, Any]) -> dict[str, str]:
    host, port = request["host"], request["port"]
    body = json.dumps(request["round"]).encode()
    length = {"Content-Length": str(len(body))}
    made_up = {**length, "Authorization": "Bearer " + "A" * 32}
    return {
        "post_without_token": http_status(host, port, post(host, "/api/rounds", body, length)),
        "post_with_made_up_token": http_status(host, port,
                                               post(host, "/api/rounds", body, made_up)),
        "get_nuevo": http_status(host, port, (
            f"GET /nuevo?dato={request['round']['mean']} HTTP/1.1\r\nHost: {host}\r\n"
            "Connection: close\r\n\r\n").encode()),
        "negative_content_length": http_status(host, port, post(
            host, "/api/rounds", body, {"Content-Length": "-1"})),
    }


def slow(request: dict[str, Any]) -> dict[str, Any]:
    """Holds `connections` sockets of each kind for `seconds`; counts those the collector
    closed meanwhile."""
    host, port = request["host"], request["port"]
    silent = [s for s in (tcp_state(host, port)[1] for _ in range(request["connections"]))
              if s is not None]
    trickling = []
    for _ in range(request["connections"]):
        raw = tcp_state(host, port)[1]
        if raw is None:
            continue
        try:
            sock = client_context().wrap_socket(raw, server_hostname=host)
            sock.sendall(f"POST /api/rounds HTTP/1.1\r\nHost: {host}\r\nX-a: ".encode())
            trickling.append(sock)
        except (OSError, ssl.SSLError):
            raw.close()
    print(f"holding {len(silent) + len(trickling)}", flush=True)
    cut = 0
    deadline = time.monotonic() + request["seconds"]
    while time.monotonic() < deadline and trickling:
        time.sleep(1)
        for sock in list(trickling):
            try:
                sock.sendall(b"a")
            except (OSError, ssl.SSLError):
                trickling.remove(sock)
                cut += 1
    for sock in silent + trickling:
        sock.close()
    return {"opened": len(silent) + len(trickling) + cut, "trickling_cut": cut}


COMMANDS = {"probe": probe, "forge": forge, "slow": slow}


def main() -> int:
    if len(sys.argv) != 2 or sys.argv[1] not in COMMANDS:
        print(f"usage: lab_attack.py {{{'|'.join(COMMANDS)}}} < request.json", file=sys.stderr)
        return 2
    print(json.dumps(COMMANDS[sys.argv[1]](json.load(sys.stdin))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

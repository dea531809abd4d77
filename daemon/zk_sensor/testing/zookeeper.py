"""Real ZooKeeper servers (Debian's `zookeeper` package) for the test suite.

The daemon's behaviour under elections, session expiry and server loss only
means something against a real ZooKeeper, so tests start actual JVMs here
instead of mocking kazoo.  Everything listens on 127.0.0.1 only, on ports
chosen free at run time, and each server keeps its config, data and log in
its own directory under a pytest tmp dir.

Logging: Debian's package logs through slf4j -> log4j 1.2.  Putting
``/usr/share/java/*`` on the classpath drags in six competing slf4j
bindings and slf4j then picks the NOP one, so nothing is logged at all.  We
therefore name the jars explicitly (zookeeper + slf4j-log4j12 + log4j-1.2)
and point log4j at a per-server properties file that writes
``<server dir>/zookeeper.log``.  The JVM's own stdout/stderr (crash
messages, bad options) goes to ``<server dir>/console.log``, never to the
terminal.
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from kazoo.client import KazooClient

from zk_sensor.testing.ports import LOOPBACK, free_ports

JAVA_DIR = Path("/usr/share/java")
# Explicit jars: see the module docstring for why not "/usr/share/java/*".
# zookeeper.jar's manifest Class-Path brings in netty, jute, jetty, slf4j-api... but not
# the netty jars the Netty server (TLS) needs: Debian's manifest misses codec, resolver
# and the native transport's common classes.
CLASSPATH_JARS = (
    JAVA_DIR / "zookeeper.jar",
    JAVA_DIR / "slf4j-log4j12.jar",
    JAVA_DIR / "log4j-1.2.jar",
    JAVA_DIR / "netty-codec.jar",
    JAVA_DIR / "netty-resolver.jar",
    JAVA_DIR / "netty-transport-native-unix-common.jar",
)
MAIN_CLASS = "org.apache.zookeeper.server.quorum.QuorumPeerMain"
JVM_OPTS = (
    "-Xmx256m",
    # One GC thread: three JVMs share the 2-core test machine.
    "-XX:+UseSerialGC",
    "-Djava.net.preferIPv4Stack=true",
    # Skip registering log4j MBeans; we never look at them.
    "-Dzookeeper.jmx.log4j.disable=true",
)
TICK_MS = 500
LOG_TAIL_LINES = 30
# Type of the `make_zk` fixture: make_zk(hosts, **kazoo_kwargs) -> started client.
MakeZk = Callable[..., KazooClient]
SERVING_MODES = frozenset({"leader", "follower", "standalone"})
STOP_GRACE_S = 10.0
FOUR_LETTER_TIMEOUT_S = 2.0
POLL_INTERVAL_S = 0.1

# Servers whose JVM we started and have not yet stopped: killed at interpreter
# exit so an aborted test run does not leave JVMs behind.
_live_servers: set[ZkServer] = set()


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """Last `lines` lines of a log file, or a note saying it is missing.

    Used in every start/serving failure so the cause (port clash, bad config,
    JVM error) is in the test report rather than only in a tmp dir.
    """
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def _check_installation() -> str:
    """Return the java binary, or fail with what to install.

    Fails loudly rather than skipping: a suite that silently skips every
    ZooKeeper test would look green while testing nothing.
    """
    java = shutil.which("java")
    missing = [str(jar) for jar in CLASSPATH_JARS if not jar.is_file()]
    if java is None or missing:
        raise RuntimeError(
            "ZooKeeper test servers need Debian's packages: "
            "apt-get install zookeeper default-jre-headless "
            f"(java={java}, missing jars={missing})"
        )
    return java


class ZkServer:
    """One ZooKeeper JVM: standalone, or member `myid` of a quorum.

    The config is written once at construction; `start()` after `stop()` or
    `kill()` restarts the same server on the same ports and data, which is
    how tests bring a failed ensemble member back.
    """

    def __init__(
        self,
        myid: int,
        server_dir: Path,
        client_port: int,
        peers: Mapping[int, tuple[int, int]] | None = None,
        extra_config: Iterable[str] = (),
        jvm_options: Iterable[str] = (),
        tick_ms: int | None = None,
    ) -> None:
        """`peers` maps each quorum member's myid to (peer port, election port).

        Without `peers` the server runs standalone. `extra_config` lines are appended to
        zoo.cfg (e.g. a secure client port, see `tls_config`); `jvm_options` to the JVM's
        command line (settings ZooKeeper reads only as system properties, e.g.
        `-Dzookeeper.DigestAuthenticationProvider.superDigest=...`). With `tick_ms` the
        server is one as installed with that tickTime: it grants sessions of 2 to 20
        ticks, ZooKeeper's own limits, instead of the 1-60 s the tests otherwise get.
        """
        self.tick_ms = tick_ms
        self.extra_config = list(extra_config)
        self.jvm_options = list(jvm_options)
        self.myid = myid
        self.client_port = client_port
        self.server_dir = server_dir
        self.data_dir = server_dir / "data"
        self.log_file = server_dir / "zookeeper.log"
        self.console_file = server_dir / "console.log"
        self.config_file = server_dir / "zoo.cfg"
        self.log4j_file = server_dir / "log4j.properties"
        self.peers = dict(peers or {})
        self._proc: subprocess.Popen[bytes] | None = None
        self._write_files()

    def __repr__(self) -> str:
        return f"ZkServer(myid={self.myid}, address={self.address!r})"

    @property
    def address(self) -> str:
        """host:port of this server's client port."""
        return f"{LOOPBACK}:{self.client_port}"

    def _write_files(self) -> None:
        """Write zoo.cfg, log4j.properties and (for a quorum) myid."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = [
            f"tickTime={self.tick_ms or TICK_MS}",
            # In ticks: 10 s to sync with a leader, 5 s of silence before a
            # follower drops it; generous enough for a loaded 2-core box.
            "initLimit=20",
            "syncLimit=10",
            f"dataDir={self.data_dir}",
            f"clientPort={self.client_port}",
            f"clientPortAddress={LOOPBACK}",
            # Tests open many sessions from the same address.
            "maxClientCnxns=0",
            "admin.enableServer=false",
            "4lw.commands.whitelist=srvr,ruok,mntr,stat",
        ]
        if self.tick_ms is None:
            # Lets tests ask for a short (e.g. 4 s) session timeout.
            config += ["minSessionTimeout=1000", "maxSessionTimeout=60000"]
        config += self.extra_config
        for peer_id, (peer_port, election_port) in sorted(self.peers.items()):
            config.append(f"server.{peer_id}={LOOPBACK}:{peer_port}:{election_port}")
        self.config_file.write_text("\n".join(config) + "\n")
        if self.peers:
            (self.data_dir / "myid").write_text(f"{self.myid}\n")
        self.log4j_file.write_text(
            "log4j.rootLogger=INFO, FILE\n"
            "log4j.appender.FILE=org.apache.log4j.FileAppender\n"
            f"log4j.appender.FILE.File={self.log_file}\n"
            "log4j.appender.FILE.Append=true\n"
            "log4j.appender.FILE.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.FILE.layout.ConversionPattern="
            "%d{ISO8601} - %-5p [%t:%c{1}] - %m%n\n"
        )

    def _command(self, java: str) -> list[str]:
        """The JVM command line, wrapped so the JVM dies with this process.

        `setpriv --pdeathsig KILL` makes the kernel SIGKILL the JVM if pytest
        itself is killed.  The death signal follows the *thread* that forked,
        so it is only used from the main thread: a server restarted from a
        short-lived helper thread must not die when that thread ends.
        """
        command = [
            java,
            *JVM_OPTS,
            *self.jvm_options,
            f"-Dlog4j.configuration=file:{self.log4j_file}",
            "-cp",
            ":".join(str(jar) for jar in CLASSPATH_JARS),
            MAIN_CLASS,
            str(self.config_file),
        ]
        setpriv = shutil.which("setpriv")
        if setpriv and threading.current_thread() is threading.main_thread():
            command = [setpriv, "--pdeathsig", "KILL", "--", *command]
        return command

    def start(self) -> None:
        """Launch the JVM and return at once; use ZkEnsemble.wait_serving to wait.

        Not waiting here is deliberate: a quorum member cannot serve until a
        majority is up, so all members must be launched before anyone waits.
        """
        if self.is_running():
            raise RuntimeError(f"{self!r} is already running")
        java = _check_installation()
        with self.console_file.open("ab") as console:
            self._proc = subprocess.Popen(
                self._command(java),
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                cwd=self.server_dir,
                # Own session: a Ctrl-C in the terminal reaches pytest, whose
                # fixture teardown then stops the servers in order.
                start_new_session=True,
            )
        _live_servers.add(self)

    def pause(self) -> None:
        """SIGSTOP: the server stops answering without closing any connection."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)

    def is_running(self) -> bool:
        """True while the JVM process exists (whether or not it is serving)."""
        return self._proc is not None and self._proc.poll() is None

    def is_started(self) -> bool:
        """True if started and not since stopped or killed by us.

        Differs from is_running() when the JVM died on its own, which
        wait_serving() reports as a failure instead of waiting it out.
        """
        return self._proc is not None

    def _signal_and_wait(self, sig: signal.Signals, grace: float) -> None:
        """Send `sig` and reap the JVM, escalating to SIGKILL after `grace` s."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()
        self._proc = None
        _live_servers.discard(self)

    def stop(self) -> None:
        """Stop cleanly: SIGTERM, up to 10 s to exit, then SIGKILL."""
        self._signal_and_wait(signal.SIGTERM, STOP_GRACE_S)

    def kill(self) -> None:
        """Crash the server (SIGKILL): no goodbye to peers or clients."""
        self._signal_and_wait(signal.SIGKILL, STOP_GRACE_S)

    def four_letter(self, word: str, timeout: float = FOUR_LETTER_TIMEOUT_S) -> str | None:
        """Send a four-letter word; the reply, or None if the server does not answer.

        The whole exchange, connect included, is bounded by `timeout`.
        """
        deadline = time.monotonic() + timeout
        chunks: list[bytes] = []
        try:
            with socket.create_connection((LOOPBACK, self.client_port), timeout=timeout) as sock:
                sock.sendall(word.encode("ascii"))
                while True:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return None
                    sock.settimeout(remaining)
                    data = sock.recv(4096)
                    if not data:
                        break
                    chunks.append(data)
        except OSError:
            return None
        return b"".join(chunks).decode("utf-8", errors="replace")

    def mode(self) -> str | None:
        """Mode from `srvr`: "leader", "follower" or "standalone"; None if not serving.

        A quorum member that is electing answers `srvr` with "not currently
        serving requests" and no Mode line, which also gives None.
        """
        reply = self.four_letter("srvr")
        if reply is None:
            return None
        for line in reply.splitlines():
            if line.startswith("Mode: "):
                return line.removeprefix("Mode: ").strip()
        return None

    def describe(self) -> str:
        """State and log tail of this server, for failure messages."""
        if self._proc is None:
            state = "not started"
        elif self._proc.poll() is None:
            state = f"running (pid {self._proc.pid})"
        else:
            state = f"exited with code {self._proc.returncode}"
        parts = [
            f"--- server {self.myid} at {self.address}: {state}, mode={self.mode()!r}",
            f"--- last {LOG_TAIL_LINES} lines of {self.log_file}:",
            tail(self.log_file),
        ]
        if self.console_file.is_file() and self.console_file.stat().st_size:
            parts += [f"--- last lines of {self.console_file}:", tail(self.console_file)]
        return "\n".join(parts)


def tls_config(secure_port: int, key_store: Path, trust_store: Path) -> list[str]:
    """zoo.cfg lines for a secure client port beside the plain one (which the harness
    keeps for its four-letter-word probes): Netty, PEM stores, client certificates
    required (ZooKeeper's default)."""
    return [
        "serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory",
        f"secureClientPort={secure_port}",
        f"secureClientPortAddress={LOOPBACK}",
        f"ssl.keyStore.location={key_store}",
        "ssl.keyStore.type=PEM",
        f"ssl.trustStore.location={trust_store}",
        "ssl.trustStore.type=PEM",
    ]


class ZkEnsemble:
    """`n` ZooKeeper servers on loopback: n == 1 is standalone, n > 1 a quorum."""

    def __init__(
        self,
        base_dir: Path,
        n: int = 3,
        extra_config: Callable[[int], Iterable[str]] = lambda _myid: (),
        jvm_options: Callable[[int], Iterable[str]] = lambda _myid: (),
        tick_ms: int | None = None,
    ) -> None:
        """Allocate ports and write each server's files under `base_dir`/zk<myid>.

        For a quorum, `extra_config(myid)` and `jvm_options(myid)` give each member its own
        zoo.cfg lines and JVM options (quorum TLS and SASL: test_adversary_quorum.py);
        `tick_ms` is every server's tickTime (see ZkServer).
        """
        if n < 1:
            raise ValueError(f"an ensemble needs at least one server, got {n}")
        self.base_dir = base_dir
        self.secure_hosts = ""
        if n == 1:
            (client_port,) = free_ports(1)
            self.servers = [ZkServer(1, base_dir / "zk1", client_port,
                                     extra_config=extra_config(1), jvm_options=jvm_options(1),
                                     tick_ms=tick_ms)]
            return
        ports = free_ports(3 * n)
        client_ports = ports[:n]
        peers = {
            myid: (ports[n + 2 * (myid - 1)], ports[n + 2 * (myid - 1) + 1])
            for myid in range(1, n + 1)
        }
        self.servers = [
            ZkServer(myid, base_dir / f"zk{myid}", client_ports[myid - 1], peers,
                     extra_config=extra_config(myid), jvm_options=jvm_options(myid),
                     tick_ms=tick_ms)
            for myid in range(1, n + 1)
        ]

    @classmethod
    def standalone_tls(cls, base_dir: Path, key_store: Path, trust_store: Path) -> ZkEnsemble:
        """One server with a secure client port too (see tls_config): `secure_hosts`."""
        plain, secure = free_ports(2)
        ensemble = cls.__new__(cls)
        ensemble.base_dir = base_dir
        ensemble.servers = [ZkServer(1, base_dir / "zk1", plain,
                                     extra_config=tls_config(secure, key_store, trust_store))]
        ensemble.secure_hosts = f"{LOOPBACK}:{secure}"
        return ensemble

    @property
    def is_quorum(self) -> bool:
        """True for a replicated ensemble, False for a single standalone server."""
        return len(self.servers) > 1

    @property
    def hosts(self) -> str:
        """Connect string naming every server, for kazoo or the daemon."""
        return ",".join(server.address for server in self.servers)

    def start(self) -> None:
        """Launch every server that is not running; does not wait (see wait_serving)."""
        for server in self.servers:
            if not server.is_running():
                server.start()

    def stop(self) -> None:
        """Stop every server, even if stopping one of them fails."""
        errors: list[BaseException] = []
        for server in self.servers:
            try:
                server.stop()
            except Exception as exc:  # keep stopping the others
                errors.append(exc)
        if errors:
            raise errors[0]

    def modes(self, servers: Iterable[ZkServer] | None = None) -> dict[int, str | None]:
        """myid -> mode() of each given server (default: all)."""
        chosen = self.servers if servers is None else servers
        return {server.myid: server.mode() for server in chosen}

    def _serving_problem(self) -> str | None:
        """Why the started servers are not (yet) serving, or None if they are."""
        started = [server for server in self.servers if server.is_started()]
        if not started:
            return "no server is started"
        modes = self.modes(started)
        not_serving = {myid: m for myid, m in modes.items() if m not in SERVING_MODES}
        if not_serving:
            return f"not serving yet: {not_serving}"
        if self.is_quorum:
            leaders = [myid for myid, m in modes.items() if m == "leader"]
            if len(leaders) != 1:
                return f"expected exactly one leader, modes are {modes}"
        return None

    def _failure(self, headline: str) -> RuntimeError:
        """An error carrying every server's state and log tail."""
        details = "\n".join(server.describe() for server in self.servers)
        return RuntimeError(f"{headline}\n{details}")

    def wait_serving(self, timeout: float = 60.0) -> float:
        """Poll until every started server serves; return the seconds it took.

        "Serving" means each started server answers leader/follower/standalone
        and, for a quorum, exactly one of them is leader.  Servers that are
        stopped or killed on purpose are ignored; one that died by itself,
        or fewer started than a majority, fails at once rather than at the
        deadline.
        """
        begin = time.monotonic()
        deadline = begin + timeout
        started = [server for server in self.servers if server.is_started()]
        if self.is_quorum and len(started) <= len(self.servers) // 2:
            raise self._failure(
                f"only {len(started)} of {len(self.servers)} servers started: no quorum possible"
            )
        while True:
            dead = [s for s in self.servers if s.is_started() and not s.is_running()]
            if dead:
                raise self._failure(f"server(s) {[s.myid for s in dead]} exited unexpectedly")
            problem = self._serving_problem()
            if problem is None:
                return time.monotonic() - begin
            if time.monotonic() >= deadline:
                raise self._failure(f"ensemble not serving after {timeout:.0f} s: {problem}")
            time.sleep(POLL_INTERVAL_S)

    def leader(self) -> ZkServer:
        """The one running server whose mode is leader (raises if not exactly one)."""
        leaders = [s for s in self.servers if s.is_running() and s.mode() == "leader"]
        if len(leaders) != 1:
            raise RuntimeError(f"expected one leader, found {leaders}; modes {self.modes()}")
        return leaders[0]

    def followers(self) -> list[ZkServer]:
        """Running servers whose mode is follower."""
        return [s for s in self.servers if s.is_running() and s.mode() == "follower"]


@atexit.register
def _kill_leftover_servers() -> None:
    """SIGKILL any JVM still up at exit, e.g. after an interrupted run."""
    for server in list(_live_servers):
        with contextlib.suppress(Exception):
            server.kill()


__all__ = ["LOOPBACK", "MakeZk", "ZkEnsemble", "ZkServer", "tail"]

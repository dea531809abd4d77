#!/usr/bin/env python3
"""The zk-sensor lab: real systemd machines on this Linux box, for deployment tests.

Every host of ``ansible/inventory/hosts.yml`` becomes a systemd-nspawn container booting
a Debian root (bookworm, or trixie where the inventory says ``os: trixie``) with systemd as
PID 1, on a private bridge, reachable over SSH with a lab key, so the project's real
Ansible playbook can be applied to it and the fleet can be broken on purpose (cut a
machine's network, power one off).  Vagrant stays the path for real VMs; this is the fast
one-box path.

Why it is built this way:

- One Debian root (``/var/lib/zk-sensor-lab/base``) is built once with debootstrap and
  shared read-only by all machines through one overlayfs mount each, so ten machines
  cost one root's disk plus what each writes.  The machines have no route out, so the base
  already holds everything the playbook needs from Debian (ZooKeeper, Java, Python,
  PostgreSQL and its client library), its services disabled: the playbook enables what
  each machine runs.
- A host with ``arch: arm64`` in the inventory (a Raspberry Pi's architecture) boots from
  a second root of that architecture (``base-arm64``, or ``base-trixie-arm64``, built
  once likewise), every binary in it run by qemu-user: the lab fetches qemu-user from
  trixie-backports itself (QEMU_SUITE: older ones cannot run trixie's systemd) and
  registers it with the kernel's binfmt_misc, with the F flag, so the interpreter works
  inside the containers.  Such a machine runs the same systemd, sshd, Python and playbook, only
  slower; its root has no ZooKeeper (no Java) and no PostgreSQL, so it can be a sensor
  (or a collector that keeps its rounds in SQLite).
- A host (or group) with ``os: trixie`` in the inventory boots from a Debian 13 root
  (``base-trixie``, ``base-trixie-arm64``), built by the same recipe from the same mirror;
  the bookworm roots keep their names and stamps (``base``, ``base-arm64``).  Trixie's
  systemd (257) refuses cgroup v1, which this host's hybrid layout would hand it: its
  machines get a cgroup v2 tree of their own (UNIFIED_CGROUP_SUITES), decided at each
  boot from the release the machine's root holds: ``ansible/upgrade.yml`` upgrades
  machines in place and reboots them (nspawn exits REBOOT_STATUS; the lab boots the
  machine again), and their apt reaches Debian's mirror through the lab's proxy
  (``apt_proxy.py``), the machines' only way out.
- The network lives in namespaces that the lab creates itself (``ip netns``), joined to
  nspawn with ``--network-namespace-path``: the addresses are on the interfaces before the
  machine boots, nothing inside configures networking, and the host side of each veth is
  a switch for fault injection.
- The host's PID 1 is not systemd, so nspawn runs as a plain background process
  (``--register=no --keep-unit``) in a cgroup of its own per machine, and everything is
  found again from the kernel's own state (``ip netns``, ``/proc/mounts``, ``/proc``), so
  ``down`` cleans up after a half-failed ``up`` or lost pid files.

Run as root.  ``lab.py --help`` lists the commands; ``Lab`` is the same for pytest.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import hashlib
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
INVENTORY = REPO / "ansible" / "inventory" / "hosts.yml"
SITE_YML = REPO / "ansible" / "site.yml"
LAB_DIR = Path("/var/lib/zk-sensor-lab")

# The only network the lab may ever configure; the inventory's own network must lie in it.
ALLOWED_NETWORK = ipaddress.ip_network("10.231.0.0/24")
BRIDGE = "zkslab0"
NETNS_PREFIX = "zkslab-"
VETH_PREFIX = "vzl-"
IFNAMSIZ = 15  # the kernel's interface name limit (16 bytes with the NUL)
CGROUP_NAME = "zk-sensor-lab"
HOST_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")

MIRROR = "http://deb.debian.org/debian"
SECURITY_MIRROR = "http://deb.debian.org/debian-security"
# The Debian releases a machine can run: the inventory's `os` (a host's, else its group's),
# SUITE unless set. Each (release, architecture) has its own root (base_dir).
SUITE = "bookworm"
SUITES = ("bookworm", "trixie")
# Bump when the recipe below changes: `up` then rebuilds the base (when no machine uses it).
# 2: PostgreSQL and libpq5. 3: nftables (the zk_firewall role).
BASE_RECIPE = 3
# The same for the roots of other architectures (see FOREIGN_PACKAGES...).
FOREIGN_BASE_RECIPE = 1
# Every root's recipe number, by (release, foreign): bumping one rebuilds that root only.
RECIPES = {
    ("bookworm", False): BASE_RECIPE, ("bookworm", True): FOREIGN_BASE_RECIPE,
    ("trixie", False): 1, ("trixie", True): 1,
}
# The releases whose systemd needs the unified cgroup hierarchy (cgroup v2) in a
# container: systemd 256 and later refuse to boot on cgroup v1, and nspawn would hand a
# container the host's own layout (here hybrid: v1 controllers, v2 beside them).  Their
# machines get a v2 tree of their own (SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1); the v1
# controllers stay the host's, so the memory cgroup still counts each machine.
UNIFIED_CGROUP_SUITES = ("trixie",)
# How nspawn reports that the machine rebooted (systemd-nspawn@.service restarts it on
# this status too): the lab boots it again, so a playbook's reboot works as on a VM.
REBOOT_STATUS = 133
# The machines' way to Debian's mirror, for release upgrades (apt_proxy.py): a proxy on
# the controller's bridge address, written into every machine's apt configuration.
APT_PROXY = Path(__file__).resolve().parent / "apt_proxy.py"
APT_PROXY_PORT = 3142
APT_PROXY_CONF = "etc/apt/apt.conf.d/00zk-sensor-lab-proxy"
BASE_STAMP = "etc/zk-sensor-lab-base"
DEBOOTSTRAP_PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "openssh-server", "python3", "python3-venv",
    "sudo", "iproute2", "procps", "iputils-ping", "ca-certificates", "less",
    # acl: Ansible's become to an unprivileged user needs setfacl; netbase: /etc/services
    # and /etc/protocols (Java and Python look them up); curl: poke HTTP services by hand.
    "acl", "netbase", "curl",
)
# What the playbook would otherwise fetch with apt: ZooKeeper and Java for the `zookeeper`
# machines, PostgreSQL for the `collector_database` one and its client library libpq5
# (which psycopg loads) for the collectors, nftables for the firewall of the ZooKeeper
# servers and the collectors (zk_firewall). The packages' services are disabled in the
# base (AUTOSTART_PATTERNS): the playbook starts each where it belongs.
CHROOT_PACKAGES = ("zookeeper", "default-jre-headless", "postgresql", "libpq5", "nftables")
# The packages' units and init scripts, by name: ZooKeeper's, and PostgreSQL's
# postgresql.service, which would start the cluster that the package made in the base on
# every machine.
AUTOSTART_PATTERNS = ("zookeeper*", "postgresql*")
# Machines whose software only the native root has (the foreign one holds debootstrap's
# packages only): group -> what it lacks.
NATIVE_ONLY_GROUPS = {"zookeeper": "Java", "collector_database": "PostgreSQL"}
# A root of another architecture is a sensor's (or the collector's): no ZooKeeper, no
# Java, and no apt run under emulation, only debootstrap.  python3-spidev: an arm64 C
# extension from Debian's archive, for the check that a venv made with
# --system-site-packages sees the machine's own Python libraries (as python3-lgpio on
# Raspberry Pi OS).
FOREIGN_PACKAGES = ("python3-spidev",)
# Raspberry Pi OS has these groups for its device nodes, Debian has not: the foreign root
# gets them, so the playbook's "add the user to the device groups that exist" is tested
# both ways (present there, absent on the native machines).
FOREIGN_GROUPS = ("gpio", "spi", "i2c")
# Debian architecture -> qemu's name for it (binfmt entry qemu-<name>).  The tests
# exercise arm64.
QEMU_ARCHES = {"arm64": "aarch64", "armhf": "arm"}
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
# The emulator: qemu-user 11.1 from trixie-backports (a static binary, so it runs on this
# Debian 12 host).  Debian 12's qemu 7.2 cannot start trixie's systemd 257 units at all
# ("Failed to spawn executor: Invalid argument"); trixie's own qemu 10.0 starts them but
# reports every mount's id as 0 from statx, so systemd 257 takes a sandboxed unit's new
# root for the current one, skips pivot_root and fails the unit at NAMESPACE (logind,
# zk-sensor).  11.1 reports the ids.
QEMU_SUITE = "trixie-backports"
QEMU_PACKAGE = "qemu-user"
DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
# Under qemu-user systemd cannot set up a unit's credentials ("Failed to set up
# credentials: Invalid argument") and fails the unit: systemd-sysusers,
# systemd-tmpfiles-setup-dev and others that merely offer credentials.  A drop-in in the
# foreign root clears those settings (the lab passes no credentials).  ImportCredential:
# trixie's systemd (bookworm's units have none).
CREDENTIAL_SETTINGS = ("LoadCredential", "SetCredential", "ImportCredential")
# How nspawn powers a machine off: SIGRTMIN+4 to its systemd.  qemu-user keeps host
# real-time signals for itself and hands the guest SIGRTMIN+4 on as another one (systemd
# then went to emergency mode), so an emulated machine gets SIGINT instead, a plain
# signal, which systemd answers with ctrl-alt-del.target: the foreign root points that at
# poweroff.target.
KILL_SIGNAL = "SIGRTMIN+4"
FOREIGN_KILL_SIGNAL = "SIGINT"
QEMU_CREDENTIALS_DROPIN = """\
# zk-sensor lab: this root's binaries run under qemu-user, where systemd cannot set up
# credentials; the lab passes none, so the unit gets none.
[Service]
{settings}"""
MASKED_UNITS = (
    # Nothing inside configures the network (the address is set from the host side), so
    # nothing must wait for it either.
    "systemd-networkd-wait-online.service",
    # No logins on a console nobody reads.
    "getty.target", "getty@.service", "serial-getty@.service", "console-getty.service",
    "container-getty@.service",
    # No route out: apt's timers could only fail, and they wake every machine at once.
    "apt-daily.timer", "apt-daily-upgrade.timer",
)
SSHD_DROPIN = """\
# zk-sensor lab: root by key only, and no reverse DNS (there is no DNS on the lab net).
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
"""
RESOLV_CONF = "# zk-sensor lab: no DNS server; the lab's names are in /etc/hosts.\n"

SSH_OPTIONS = (
    # A throwaway lab: host keys change with every `up`, and the user's ssh config
    # (SendEnv, ProxyJump, agents...) has no business here.
    "-F", "/dev/null",
    "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null",
    "-o", "LogLevel=ERROR",
    "-o", "BatchMode=yes",
    "-o", "IdentitiesOnly=yes",
    "-o", "ServerAliveInterval=5",
    "-o", "ServerAliveCountMax=3",
)
SSH_CONNECT_TIMEOUT_S = 5
BOOT_TIMEOUT_S = 180.0
# A machine of another architecture boots under emulation, beside the native ones.
FOREIGN_BOOT_TIMEOUT_S = 600.0
STOP_TIMEOUT_S = 20.0
POLL_S = 0.2

Log = Callable[[str], None]


class LabError(RuntimeError):
    """A lab operation failed; the message says what to do about it."""


def log_stderr(message: str) -> None:
    """Default progress output: stderr, so command output on stdout stays clean."""
    print(f"lab: {message}", file=sys.stderr, flush=True)


def run(cmd: Sequence[str | os.PathLike[str]], *, check: bool = True, capture: bool = False,
        env: dict[str, str] | None = None, timeout: float | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command; a failure raises LabError with the command and its stderr."""
    args = [str(c) for c in cmd]
    result = subprocess.run(args, text=True, env=env, timeout=timeout, cwd=cwd,
                            stdout=subprocess.PIPE if capture else None,
                            stderr=subprocess.PIPE if capture else None, check=False)
    if check and result.returncode != 0:
        detail = (result.stderr or "").strip()
        raise LabError(f"{shlex.join(args)} failed ({result.returncode})"
                       + (f": {detail}" if detail else ""))
    return result


# --------------------------------------------------------------------------- inventory

@dataclass(frozen=True)
class Host:
    """One inventory host: its name, lab address, the groups it belongs to, its Debian
    architecture (the inventory's ``arch``; this machine's own by default) and release
    (the inventory's ``os``; SUITE by default)."""

    name: str
    address: str
    groups: tuple[str, ...]
    arch: str = ""
    os: str = SUITE

    @property
    def foreign(self) -> bool:
        """Whether its binaries run under qemu-user (another architecture than ours)."""
        return bool(self.arch) and self.arch != native_arch()


@functools.cache
def native_arch() -> str:
    """This machine's Debian architecture (amd64, arm64...)."""
    if shutil.which("dpkg"):
        found = run(["dpkg", "--print-architecture"], check=False, capture=True).stdout
        if found.strip():
            return found.strip()
    machines = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "armhf", "i686": "i386"}
    return machines.get(os.uname().machine, os.uname().machine)


def walk_groups(name: str, group: dict | None, parents: tuple[str, ...],
                inherited: dict | None = None) -> Iterator[tuple[str, dict, tuple[str, ...]]]:
    """Yield (host, vars, groups) for every host under an inventory group, nested: a
    host's vars over its groups' (`os`, `arch`), a child group's over its parent's, as
    Ansible reads them."""
    group = group or {}
    path = (*parents, name) if name != "all" else parents
    group_vars = {**(inherited or {}), **(group.get("vars") or {})}
    for host, host_vars in (group.get("hosts") or {}).items():
        yield host, {**group_vars, **(host_vars or {})}, path
    for child, child_group in (group.get("children") or {}).items():
        yield from walk_groups(child, child_group, path, group_vars)


def load_inventory(path: Path) -> tuple[dict[str, Host], ipaddress.IPv4Network]:
    """Read the lab's topology from the Ansible YAML inventory, the one source of truth.

    Returns the hosts by name and the lab network (``zk_sensor_network``), refusing
    anything that would put an address outside the network the lab is allowed to use, or
    a name that cannot be a host name (it becomes the machine's and an interface's name).
    """
    root = yaml.safe_load(path.read_text())["all"]
    network = ipaddress.IPv4Network((root.get("vars") or {}).get("zk_sensor_network",
                                                                 str(ALLOWED_NETWORK)))
    if not network.subnet_of(ALLOWED_NETWORK):
        raise LabError(f"{path}: zk_sensor_network {network} is outside {ALLOWED_NETWORK}")
    hosts: dict[str, Host] = {}
    for name, host_vars, groups in walk_groups("all", root, ()):
        if not HOST_NAME.fullmatch(name):
            raise LabError(f"{path}: {name!r} is not usable as a machine name")
        known = hosts.get(name)
        address = str(host_vars.get("ansible_host") or (known.address if known else ""))
        try:
            in_network = ipaddress.ip_address(address) in network
        except ValueError:
            in_network = False
        if not in_network:
            raise LabError(f"{path}: {name} has ansible_host {address!r}, not in {network}")
        old_groups = known.groups if known else ()
        arch = str(host_vars.get("arch") or (known.arch if known else "") or native_arch())
        if arch != native_arch() and arch not in QEMU_ARCHES:
            raise LabError(f"{path}: {name} has arch {arch!r}; the lab runs {native_arch()} "
                           f"machines and, under qemu-user, {', '.join(QEMU_ARCHES)}")
        release = str(host_vars.get("os") or (known.os if known else "") or SUITE)
        if release not in SUITES:
            raise LabError(f"{path}: {name} has os {release!r}; the lab's machines run "
                           f"{' or '.join(SUITES)}")
        hosts[name] = Host(name, address, tuple(dict.fromkeys((*old_groups, *groups))), arch,
                           release)
    for host in hosts.values():
        for group, lacking in NATIVE_ONLY_GROUPS.items():
            if host.foreign and group in host.groups:
                raise LabError(f"{path}: {host.name} is in {group} with arch {host.arch}, "
                               f"but the lab's {host.arch} root has no {lacking}: "
                               "make it a sensor")
    return hosts, network


def veth_name(machine: str) -> str:
    """Host-side veth name: ``vzl-<name>``, shortened with a hash to fit IFNAMSIZ."""
    name = VETH_PREFIX + machine
    if len(name) <= IFNAMSIZ:
        return name
    digest = hashlib.sha1(machine.encode()).hexdigest()[:4]
    return f"{VETH_PREFIX}{machine[:IFNAMSIZ - len(VETH_PREFIX) - 5]}-{digest}"


# --------------------------------------------------------------------------- mounts

def unescape_mount_path(field: str) -> str:
    """Undo /proc/mounts' octal escapes (a space is written as \\040)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts_under(path: Path) -> list[Path]:
    """Mount points at or below ``path``, deepest first, so they can be unmounted in order."""
    prefix = str(path).rstrip("/")
    found = []
    for line in Path("/proc/mounts").read_text().splitlines():
        target = unescape_mount_path(line.split()[1])
        if target == prefix or target.startswith(prefix + "/"):
            found.append(Path(target))
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def unmount_all_under(path: Path) -> None:
    """Unmount everything below ``path``; a busy mount is detached lazily as a last resort."""
    for target in mounts_under(path):
        if run(["umount", target], check=False, capture=True).returncode != 0:
            run(["umount", "--lazy", target], check=False, capture=True)
    left = mounts_under(path)
    if left:
        raise LabError(f"still mounted: {', '.join(map(str, left))}")


def remove_tree(path: Path) -> None:
    """Delete a directory tree, never crossing into a mount (a bind-mounted /dev, say)."""
    if not path.exists() and not path.is_symlink():
        return
    unmount_all_under(path)
    run(["rm", "-rf", "--one-file-system", "--", path])


# --------------------------------------------------------------------------- the base

def base_recipe(base: Path) -> int | None:
    """The recipe version a complete base was built with; None if there is no complete base."""
    stamp = base / BASE_STAMP
    if not stamp.is_file():
        return None
    try:
        return int(json.loads(stamp.read_text())["recipe"])
    except (ValueError, KeyError, TypeError):
        return 0


def in_private_namespaces(cmd: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Wrap a build command so its mounts (/proc...) and processes die with it.

    A private mount and PID namespace means an interrupted debootstrap or apt-get never
    leaves /proc mounted inside the tree nor a stray daemon started by a postinst.
    """
    return ["unshare", "--mount", "--propagation", "private", "--pid", "--fork",
            "--kill-child", *map(str, cmd)]


def chroot_shell(root: Path, script: str) -> None:
    """Run a shell script chrooted into ``root``, with a fresh /proc, for apt and friends."""
    inner = f"mount -t proc proc {shlex.quote(str(root / 'proc'))} && exec chroot " \
            f"{shlex.quote(str(root))} /bin/sh -eu -c {shlex.quote(script)}"
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
           "DEBIAN_FRONTEND": "noninteractive", "HOME": "/root"}
    run(in_private_namespaces(["sh", "-eu", "-c", inner]), env=env)


def write_file(path: Path, text: str, mode: int = 0o644) -> None:
    """Create or replace a file with the given content and mode, creating parents."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        path.unlink()
    path.write_text(text)
    path.chmod(mode)


def debootstrap(root: Path, foreign_arch: str | None = None, suite: str = SUITE) -> None:
    """The minimal Debian system with systemd, sshd and Python (a minbase plus our list)
    of a release; of another architecture with ``foreign_arch`` (its second stage runs
    under qemu-user)."""
    packages = [*DEBOOTSTRAP_PACKAGES, *(FOREIGN_PACKAGES if foreign_arch else ())]
    run(in_private_namespaces([
        "debootstrap", "--variant=minbase", "--components=main",
        *([f"--arch={foreign_arch}"] if foreign_arch else []),
        "--include=" + ",".join(packages), suite, root, MIRROR]))


def binfmt_entry(arch: str) -> Path:
    """binfmt_misc's file for an architecture's qemu-user interpreter."""
    return BINFMT_DIR / f"qemu-{QEMU_ARCHES[arch]}"


def apt_options(state: Path) -> list[str]:
    """apt-get options for a private look at QEMU_SUITE: its own sources and lists under
    ``state``, the host's keyring for the signatures, nothing of the host's apt state."""
    sources = state / "sources.list"
    write_file(sources, f"deb [signed-by={DEBIAN_KEYRING}] {MIRROR} {QEMU_SUITE} main\n")
    return ["-q", "-o", f"Dir::Etc::SourceList={sources}", "-o", "Dir::Etc::SourceParts=-",
            "-o", f"Dir::State::Lists={state / 'lists'}", "-o", f"Dir::Cache={state / 'cache'}",
            "-o", f"APT::Architecture={native_arch()}"]


def fetch_qemu(lab_dir: Path, arch: str) -> tuple[Path, str]:
    """The lab's qemu-user interpreter for ``arch`` and its binfmt line, fetched once.

    QEMU_PACKAGE from QEMU_SUITE, downloaded by apt (so its signature is checked against
    Debian's keyring), unpacked, and its one static binary kept in ``lab_dir/qemu``.
    """
    name = f"qemu-{QEMU_ARCHES[arch]}"
    target = lab_dir / "qemu"
    binary, conf = target / name, target / f"{name}.conf"
    if binary.is_file() and conf.is_file():
        return binary, conf.read_text().strip()
    state = target / "apt"
    for directory in (state / "lists" / "partial", state / "cache" / "archives" / "partial"):
        directory.mkdir(parents=True, exist_ok=True)
    options = apt_options(state)
    run(["apt-get", *options, "update"], capture=True)
    run(["apt-get", *options, "download", QEMU_PACKAGE], capture=True, cwd=state)
    deb = next(state.glob(f"{QEMU_PACKAGE}_*.deb"))
    unpacked = state / "unpacked"
    remove_tree(unpacked)
    run(["dpkg-deb", "-x", deb, unpacked])
    line = (unpacked / "usr/share/qemu/binfmt.d" / f"{name}.conf").read_text().strip()
    fields = line.split(":")
    if len(fields) < 8 or not {"F", "O"} <= set(fields[7]):
        raise LabError(f"{deb.name}: its binfmt entry for {name} lacks the F or O flag: {line!r}")
    fields[6] = str(binary)
    shutil.copy2(unpacked / "usr/bin" / name, binary)
    write_file(conf, ":".join(fields) + "\n")
    remove_tree(unpacked)
    deb.unlink()
    return binary, conf.read_text().strip()


def ensure_binfmt(arch: str, lab_dir: Path) -> None:
    """Make the kernel run ``arch`` binaries through the lab's qemu-user (fetch_qemu),
    inside containers too.

    Mounts binfmt_misc if needed and registers the entry (what systemd-binfmt does at
    boot; this host may have no systemd as PID 1).  Its F flag (fix binary) makes the
    kernel open the interpreter once, from the host's file system, so the containers need
    no qemu of their own; O (open binary) hands qemu the program as a descriptor, which
    systemd's executor needs (it is started with fexecve).  An entry of another
    interpreter (say Debian 12's qemu-user-static 7.2) is replaced: the host's emulation
    of ``arch`` is then the lab's.
    """
    if not (BINFMT_DIR / "register").exists():
        run(["mount", "-t", "binfmt_misc", "binfmt_misc", BINFMT_DIR])
    binary, line = fetch_qemu(lab_dir, arch)
    entry = binfmt_entry(arch)
    if entry.exists() and f"interpreter {binary}\n" not in entry.read_text():
        entry.write_text("-1")
    if not entry.exists():
        (BINFMT_DIR / "register").write_text(line)
    if entry.read_text().splitlines()[0].strip() != "enabled":
        entry.write_text("1")


def units_with_credentials(root: Path) -> dict[str, list[str]]:
    """The root's service units that set up credentials, and the settings they use."""
    found: dict[str, list[str]] = {}
    for unit in sorted((root / "lib/systemd/system").glob("*.service")):
        with contextlib.suppress(OSError, UnicodeDecodeError):
            text = unit.read_text()
            used = [s for s in CREDENTIAL_SETTINGS if re.search(rf"^{s}=", text, re.MULTILINE)]
            if used:
                found[unit.name] = used
    return found


def configure_foreign_base(root: Path) -> None:
    """What a root of another architecture needs beyond configure_base: no credentials
    under qemu-user (see CREDENTIAL_SETTINGS), and Raspberry Pi OS's device groups."""
    for unit, settings in units_with_credentials(root).items():
        write_file(root / "etc/systemd/system" / f"{unit}.d" / "zk-sensor-lab-qemu.conf",
                   QEMU_CREDENTIALS_DROPIN.format(settings="".join(f"{s}=\n" for s in settings)))
    ctrl_alt_del = root / "etc/systemd/system/ctrl-alt-del.target"
    if not ctrl_alt_del.is_symlink():
        ctrl_alt_del.symlink_to("/lib/systemd/system/poweroff.target")
    for group in FOREIGN_GROUPS:
        # groupadd --root chroots by itself: this machine's binary, nothing emulated.
        if not re.search(rf"^{group}:", (root / "etc/group").read_text(), re.MULTILINE):
            run(["groupadd", "--root", root, "--system", group], capture=True)


def install_packages(root: Path, suite: str = SUITE) -> None:
    """CHROOT_PACKAGES from Debian, inside the root, starting nothing while installing.

    PostgreSQL's package makes its cluster (15/main on bookworm, 17/main on trixie) here,
    once for every machine: only the `collector_database` one starts it, from its own
    overlay.
    """
    write_file(root / "etc/apt/sources.list",
               f"deb {MIRROR} {suite} main\n"
               f"deb {MIRROR} {suite}-updates main\n"
               f"deb {SECURITY_MIRROR} {suite}-security main\n")
    # A postinst must not start a service in the build tree: policy-rc.d exit 101 means
    # "action forbidden" to invoke-rc.d and deb-systemd-invoke.
    write_file(root / "usr/sbin/policy-rc.d", "#!/bin/sh\nexit 101\n", 0o755)
    shutil.copyfile("/etc/resolv.conf", root / "etc/resolv.conf")
    try:
        chroot_shell(root, "apt-get update -q && apt-get -y -q upgrade && "
                           "apt-get -y -q install --no-install-recommends "
                           + " ".join(CHROOT_PACKAGES) + " && apt-get clean")
    finally:
        (root / "usr/sbin/policy-rc.d").unlink(missing_ok=True)


def packaged_autostart_units(root: Path) -> list[str]:
    """Units and init scripts the Debian packages ship for ZooKeeper and PostgreSQL.

    The playbook brings ZooKeeper's own unit, so a packaged one starting too would fight
    it for the ports and the data directory; PostgreSQL would run on every machine. Unit
    templates (postgresql@.service) are never enabled by themselves: left alone.
    """
    units = [p.name for d in ("lib/systemd/system", "etc/systemd/system")
             for pattern in AUTOSTART_PATTERNS for p in (root / d).glob(pattern)
             if p.suffix == ".service" and not p.name.endswith("@.service")]
    scripts = [p.name for pattern in AUTOSTART_PATTERNS
               for p in (root / "etc/init.d").glob(pattern)]
    return sorted(set(units)) + sorted(set(scripts))


def configure_base(root: Path) -> None:
    """Turn the fresh root into a quiet lab machine image: units, sshd, identity files."""
    for name in packaged_autostart_units(root):
        if (root / "etc/init.d" / name).exists():
            chroot_shell(root, f"update-rc.d -f {shlex.quote(name)} remove")
        else:
            run(["systemctl", f"--root={root}", "disable", name], capture=True)
    run(["systemctl", f"--root={root}", "mask", *MASKED_UNITS], capture=True)
    write_file(root / "etc/ssh/sshd_config.d/zk-sensor-lab.conf", SSHD_DROPIN)
    # Host keys are made per machine; a shared key would make seven machines one identity.
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    write_file(root / "etc/resolv.conf", RESOLV_CONF)
    write_file(root / "etc/hostname", "zkslab-base\n")
    # Empty machine-id: each machine gets its own in its overlay.
    write_file(root / "etc/machine-id", "", 0o444)
    dbus_id = root / "var/lib/dbus/machine-id"
    if dbus_id.exists() or dbus_id.is_symlink():
        dbus_id.unlink()
        dbus_id.symlink_to("/etc/machine-id")
    write_file(root / "etc/default/locale", "LANG=C.UTF-8\n")
    # A persistent journal, as on a real install: logs survive a `poweroff`/`start`.
    (root / "var/log/journal").mkdir(parents=True, exist_ok=True)


def base_dir(lab_dir: Path, arch: str, suite: str = SUITE) -> Path:
    """Where the root of a release and an architecture lives: ``base`` for bookworm on
    this machine's own (as it always was), ``base-<arch>`` for bookworm on another, and
    ``base-<release>``, ``base-<release>-<arch>`` for another release."""
    parts = ["base", *([suite] if suite != SUITE else []),
             *([arch] if arch != native_arch() else [])]
    return lab_dir / "-".join(parts)


def build_base(lab_dir: Path, log: Log = log_stderr, arch: str | None = None,
               suite: str = SUITE) -> float:
    """Build the shared Debian root of a release and an architecture (bookworm, this
    machine's, by default) once; returns the seconds it took (0 when it existed).

    Built in a temporary directory and renamed into place only when complete, so an
    interrupted build never looks like a base; leftovers of one are removed first.  A
    foreign root is debootstrap's alone (its second stage under qemu-user, registered
    first), with configure_foreign_base's additions.
    """
    arch = arch or native_arch()
    foreign = arch != native_arch()
    recipe = RECIPES[(suite, foreign)]
    base = base_dir(lab_dir, arch, suite)
    if base_recipe(base) == recipe:
        return 0.0
    lab_dir.mkdir(parents=True, exist_ok=True)
    for stale in lab_dir.glob(f"{base.name}.tmp.*"):
        log(f"removing the unfinished build {stale}")
        remove_tree(stale)
    if base.exists():
        if mounts_under(lab_dir / "machines"):
            raise LabError(f"{base} is outdated or incomplete but machines use it: "
                           "run `lab.py down` first")
        log(f"removing the outdated or incomplete {base}")
        remove_tree(base)
    tmp = lab_dir / f"{base.name}.tmp.{os.getpid()}"
    started = time.monotonic()
    if foreign:
        ensure_binfmt(arch, lab_dir)
        log(f"building the {suite} {arch} base root (debootstrap {suite} from {MIRROR}, "
            "its second stage under qemu-user); takes a few minutes")
        debootstrap(tmp, arch, suite)
        packages = [*DEBOOTSTRAP_PACKAGES, *FOREIGN_PACKAGES]
    else:
        log(f"building the {suite} base root (debootstrap {suite} from {MIRROR}); "
            "takes a few minutes")
        debootstrap(tmp, suite=suite)
        log("installing " + ", ".join(CHROOT_PACKAGES) + f" into the {suite} base")
        install_packages(tmp, suite)
        packages = [*DEBOOTSTRAP_PACKAGES, *CHROOT_PACKAGES]
    configure_base(tmp)
    if foreign:
        configure_foreign_base(tmp)
    seconds = time.monotonic() - started
    write_file(tmp / BASE_STAMP, json.dumps({
        "recipe": recipe, "arch": arch, "suite": suite, "mirror": MIRROR,
        "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": round(seconds, 1),
        "packages": packages}, indent=1) + "\n")
    tmp.rename(base)
    log(f"{suite} {arch} base root built in {seconds:.0f} s")
    return seconds


# --------------------------------------------------------------------------- cgroups

def cgroup_mounts() -> dict[str, Path]:
    """Where the hierarchies the lab uses are mounted: name=systemd, cgroup2, memory."""
    found: dict[str, Path] = {}
    for line in Path("/proc/mounts").read_text().splitlines():
        _, target, fstype, options, *_ = line.split()
        opts = options.split(",")
        if fstype == "cgroup2":
            found.setdefault("unified", Path(unescape_mount_path(target)))
        elif fstype == "cgroup" and "name=systemd" in opts:
            found.setdefault("systemd", Path(unescape_mount_path(target)))
        elif fstype == "cgroup" and "memory" in opts:
            found.setdefault("memory", Path(unescape_mount_path(target)))
    return found


def cgroup_paths(pid: int | str = "self") -> dict[str, str]:
    """A process's cgroup path in each of the hierarchies of cgroup_mounts()."""
    paths: dict[str, str] = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        hid, controllers, path = line.split(":", 2)
        names = controllers.split(",")
        if hid == "0":
            paths["unified"] = path
        elif "name=systemd" in names:
            paths["systemd"] = path
        elif "memory" in names:
            paths["memory"] = path
    return paths


def machine_cgroups(machine: str) -> dict[str, Path]:
    """One cgroup per machine in every hierarchy, below the caller's own cgroup.

    Why: with --keep-unit nspawn makes its ``payload``/``supervisor`` cgroups inside the
    cgroup it was started in, and the container's systemd manages everything below
    ``payload``; two machines started from the same cgroup would share (and fight over)
    one tree.  The memory hierarchy also gives each machine's memory use.
    """
    own = cgroup_paths()
    return {h: mount / own.get(h, "/").lstrip("/") / CGROUP_NAME / machine
            for h, mount in cgroup_mounts().items()}


def lab_cgroup_roots() -> list[Path]:
    """Every ``zk-sensor-lab`` cgroup directory on the host, whoever created it."""
    roots: list[Path] = []
    for mount in cgroup_mounts().values():
        for depth in range(4):
            roots.extend(mount.glob("/".join(["*"] * depth + [CGROUP_NAME])))
    return roots


def cgroup_pids(group: Path) -> set[int]:
    """Processes anywhere in a cgroup tree."""
    pids: set[int] = set()
    for procs in group.rglob("cgroup.procs"):
        with contextlib.suppress(OSError):
            pids.update(int(p) for p in procs.read_text().split())
    return pids


def remove_cgroup_tree(group: Path) -> None:
    """rmdir a cgroup and its children, deepest first (empty cgroups only)."""
    if not group.is_dir():
        return
    for directory, _, _ in sorted(os.walk(group), key=lambda w: -len(Path(w[0]).parts)):
        with contextlib.suppress(OSError):
            os.rmdir(directory)


def memory_use(pid: int) -> tuple[int, int] | None:
    """A machine's memory as the memory cgroup of its nspawn ``pid`` counts it.

    Returns (resident, resident + page cache) in bytes.  The page cache of the shared base
    is charged to whichever machine read a file first, so the resident figure is the one
    to compare machines by.
    """
    try:
        group = cgroup_mounts()["memory"] / cgroup_paths(pid)["memory"].lstrip("/")
        if group.name == "supervisor":  # cgroup2: nspawn sits next to its payload
            group = group.parent
        stat = dict(line.split() for line in (group / "memory.stat").read_text().splitlines())
        if "total_rss" in stat:  # cgroup v1
            return int(stat["total_rss"]), int((group / "memory.usage_in_bytes").read_text())
        return int(stat["anon"]), int((group / "memory.current").read_text())
    except (OSError, ValueError, KeyError):
        return None


# --------------------------------------------------------------------------- processes

def process_alive(pid: int) -> bool:
    """True while a process exists and is not a zombie (an unreaped exit is an exit)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def process_argv(pid: int) -> list[str]:
    """A process's command line, empty if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def lab_nspawn_machine(argv: list[str]) -> str | None:
    """The machine name if this command line is one of the lab's nspawn processes."""
    if not argv or Path(argv[0]).name != "systemd-nspawn":
        return None
    if not any(a.startswith(f"--network-namespace-path=/run/netns/{NETNS_PREFIX}")
               for a in argv):
        return None
    return next((a.split("=", 1)[1] for a in argv if a.startswith("--machine=")), None)


def lab_nspawn_processes() -> dict[str, list[int]]:
    """Every running lab nspawn by machine, found from /proc (no pid file needed)."""
    found: dict[str, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        machine = lab_nspawn_machine(process_argv(pid))
        if machine and process_alive(pid):
            found.setdefault(machine, []).append(pid)
    return found


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll a condition until it holds or the deadline passes; True if it held."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)


def signal_pids(pids: Iterable[int], signum: int) -> None:
    """Send a signal to processes that may already be gone."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


# --------------------------------------------------------------------------- network

def netns_names() -> list[str]:
    """The lab's network namespaces (``ip netns`` keeps them as files in /run/netns)."""
    netns_dir = Path("/run/netns")
    if not netns_dir.is_dir():
        return []
    return sorted(p.name for p in netns_dir.iterdir() if p.name.startswith(NETNS_PREFIX))


def links() -> list[dict]:
    """The host's network interfaces, as ``ip -j link`` reports them."""
    return json.loads(run(["ip", "-j", "link", "show"], capture=True).stdout or "[]")


def link_exists(name: str) -> bool:
    """Whether a host interface of that name exists."""
    return any(link.get("ifname") == name for link in links())


def link_is_up(name: str) -> bool | None:
    """Whether a host interface is administratively up; None if it does not exist."""
    for link in links():
        if link.get("ifname") == name:
            return "UP" in link.get("flags", [])
    return None


def foreign_addresses(network: ipaddress.IPv4Network) -> list[str]:
    """Lab-network addresses already on host interfaces other than the lab bridge."""
    data = json.loads(run(["ip", "-j", "-4", "addr", "show"], capture=True).stdout or "[]")
    return [f"{a['local']} on {link['ifname']}" for link in data
            for a in link.get("addr_info", [])
            if link.get("ifname") != BRIDGE and ipaddress.ip_address(a["local"]) in network]


def ensure_bridge(controller: ipaddress.IPv4Interface) -> None:
    """The lab switch, with the controller's address on it (the host's lab address)."""
    if foreign_addresses(controller.network):
        raise LabError(f"{controller.network} is already used on this host: "
                       + ", ".join(foreign_addresses(controller.network)))
    if not link_exists(BRIDGE):
        run(["ip", "link", "add", BRIDGE, "type", "bridge"])
    run(["ip", "addr", "replace", str(controller), "dev", BRIDGE])
    run(["ip", "link", "set", BRIDGE, "up"])


def ensure_machine_network(host: Host, prefixlen: int, force_up: bool) -> None:
    """A machine's namespace, with eth0 (its veth end) addressed, plugged into the bridge.

    ``force_up`` raises the host side even if it exists and was cut: `up` wants a healthy
    lab, `start` keeps an injected fault in place.
    """
    netns = NETNS_PREFIX + host.name
    veth = veth_name(host.name)
    if netns not in netns_names():
        run(["ip", "netns", "add", netns])
    created = False
    if not link_exists(veth):
        # Created with its peer directly inside the namespace, so "eth0" never clashes
        # with the host's own eth0.
        run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0",
             "netns", netns])
        created = True
    run(["ip", "link", "set", veth, "master", BRIDGE])
    if created or force_up:
        run(["ip", "link", "set", veth, "up"])
    run(["ip", "-n", netns, "addr", "replace", f"{host.address}/{prefixlen}", "dev", "eth0"])
    run(["ip", "-n", netns, "link", "set", "eth0", "up"])
    run(["ip", "-n", netns, "link", "set", "lo", "up"])


def tcp_open(address: str, port: int, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections there (sshd's first sign of life)."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------- ssh, ansible

def remote_command(cmd: Sequence[str]) -> str:
    """What ssh runs: one argument is a shell command line, several are an argv to quote."""
    return cmd[0] if len(cmd) == 1 else shlex.join(cmd)


def ansible_playbook_binary() -> str:
    """ansible-playbook from the project's venv if someone installed it there, else PATH."""
    venv = REPO / ".venv" / "bin" / "ansible-playbook"
    if os.access(venv, os.X_OK):
        return str(venv)
    found = shutil.which("ansible-playbook")
    if not found:
        raise LabError("ansible-playbook not found: apt-get install ansible-core")
    return found


def playbook_env() -> dict[str, str]:
    """Ansible settings for a throwaway lab, as environment variables (they beat ansible.cfg).

    Host keys change with every `up`, so they are neither checked nor remembered; a short
    ControlPersist keeps a run fast without leaving ssh masters around for long.
    """
    env = dict(os.environ)
    env.update({
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        "ANSIBLE_SSH_ARGS": shlex.join([*SSH_OPTIONS, "-o", "ControlMaster=auto",
                                        "-o", "ControlPersist=30s"]),
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_PYTHON_INTERPRETER": "auto_silent",
    })
    cfg = REPO / "ansible" / "ansible.cfg"
    if cfg.is_file():
        env.setdefault("ANSIBLE_CONFIG", str(cfg))
    return env


# --------------------------------------------------------------------------- the lab

@dataclass
class MachineStatus:
    """What `status` reports for one machine."""

    name: str
    address: str
    groups: tuple[str, ...]
    running: bool
    pid: int | None
    link: str  # "up", "cut" or "absent"
    system: str  # `systemctl is-system-running` over ssh, or "no answer"
    memory: tuple[int, int] | None  # (resident, with page cache) bytes


@dataclass
class UpResult:
    """Timings of an `up`, for the report and for tests that keep an eye on them."""

    base_seconds: float
    boot_seconds: float
    ready_seconds: dict[str, float]
    provisioned: bool


class Lab:
    """The lab's machines, driven from the CLI below or from pytest.

    Every method is idempotent where that makes sense (``up`` on a running lab boots what
    is missing, ``down`` on a clean host does nothing), and state is read back from the
    kernel rather than remembered, so several Lab objects (or processes) agree.
    """

    def __init__(self, inventory: Path = INVENTORY, lab_dir: Path = LAB_DIR,
                 site: Path = SITE_YML, log: Log = log_stderr) -> None:
        self.inventory = inventory
        self.site = site
        self.hosts, self.network = load_inventory(inventory)
        self.lab_dir = lab_dir
        # The bookworm root of this machine's architecture; the others' are
        # base_dir(lab_dir, arch, release).
        self.base = base_dir(lab_dir, native_arch())
        self.machines_dir = lab_dir / "machines"
        self.key = lab_dir / "id_ed25519"
        # The lab's CA, keys, passwords and tokens (zk_pki_dir) and the passphrase of its
        # CA keys: the lab's own, beside its machines, kept across `down` and `up`.
        self.secrets = lab_dir / "secrets"
        self.passphrase_file = lab_dir / "secrets.passphrase"
        self.controller = ipaddress.ip_interface(
            f"{next(self.network.hosts())}/{self.network.prefixlen}")
        self.log = log
        self._lock_fd: int | None = None
        self._lock_depth = 0
        taken = [h.name for h in self.hosts.values() if h.address == str(self.controller.ip)]
        if taken:
            raise LabError(f"{taken[0]} uses {self.controller.ip}, the controller's address")

    # ---- topology

    @property
    def arches(self) -> list[str]:
        """The architectures of the lab's machines, this machine's own first."""
        return sorted({h.arch for h in self.hosts.values()} | {native_arch()},
                      key=lambda a: (a != native_arch(), a))

    @property
    def roots(self) -> list[tuple[str, str]]:
        """The (release, architecture) of every root the machines boot from, bookworm on
        this machine's architecture first (it is always built: the lab's own default)."""
        return sorted({(h.os, h.arch) for h in self.hosts.values()} | {(SUITE, native_arch())},
                      key=lambda r: (r[1] != native_arch(), r[0] != SUITE, r))

    def base_of(self, host: Host) -> Path:
        """The root a machine boots from."""
        return base_dir(self.lab_dir, host.arch, host.os)

    @property
    def groups(self) -> dict[str, list[str]]:
        """Group name -> machine names, in inventory order."""
        groups: dict[str, list[str]] = {}
        for host in self.hosts.values():
            for group in host.groups:
                groups.setdefault(group, []).append(host.name)
        return groups

    def host(self, name: str) -> Host:
        """The inventory host of that name; a clear error lists the valid ones."""
        try:
            return self.hosts[name]
        except KeyError:
            raise LabError(f"no machine {name!r}; the lab has: {', '.join(self.hosts)}") \
                from None

    def machine_dir(self, name: str) -> Path:
        """Where a machine's overlay layers, console log and pid file live."""
        return self.machines_dir / name

    def hosts_file(self) -> str:
        """/etc/hosts for every machine: localhost and every lab machine by name.

        The machine's own name is not put on 127.0.1.1 (Debian's habit): ZooKeeper and the
        daemons would then bind or advertise loopback instead of the lab address.
        """
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
                 "ff02::1\tip6-allnodes", "ff02::2\tip6-allrouters", "",
                 f"# zk-sensor lab machines, from {self.inventory.name}"]
        lines += [f"{h.address}\t{h.name}" for h in self.hosts.values()]
        return "\n".join(lines) + "\n"

    # ---- locking

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One mutating lab operation at a time on this host (re-entrant within a Lab)."""
        if self._lock_depth == 0:
            self.lab_dir.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self.lab_dir / "lock", os.O_CREAT | os.O_RDWR, 0o600)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        self._lock_depth += 1
        try:
            yield
        finally:
            self._lock_depth -= 1
            if self._lock_depth == 0 and self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    # ---- machine state

    def pid(self, name: str) -> int | None:
        """The machine's nspawn pid: the pid file if it still names it, else from /proc."""
        pidfile = self.machine_dir(name) / "nspawn.pid"
        with contextlib.suppress(OSError, ValueError):
            pid = int(pidfile.read_text())
            if process_alive(pid) and lab_nspawn_machine(process_argv(pid)) == name:
                return pid
        pids = lab_nspawn_processes().get(name)
        return pids[0] if pids else None

    def is_running(self, name: str) -> bool:
        """Whether the machine's container is up (its nspawn process lives)."""
        return self.pid(name) is not None

    def _ensure_key(self) -> None:
        """The lab's SSH key pair, made once; every machine trusts it for root."""
        if not self.key.exists():
            self.lab_dir.mkdir(parents=True, exist_ok=True)
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "zk-sensor-lab",
                 "-f", self.key])

    def _prepare_root(self, host: Host) -> Path:
        """Mount the machine's overlay and give it its identity (name, hosts, ids, keys)."""
        mdir = self.machine_dir(host.name)
        upper, work, root = mdir / "upper", mdir / "work", mdir / "root"
        for directory in (upper, work, root):
            directory.mkdir(parents=True, exist_ok=True)
        if root not in mounts_under(root):
            run(["mount", "-t", "overlay", "overlay", "-o",
                 f"lowerdir={self.base_of(host)},upperdir={upper},workdir={work}", root])
        write_file(root / "etc/hostname", host.name + "\n")
        write_file(root / "etc/hosts", self.hosts_file())
        machine_id = root / "etc/machine-id"
        if not machine_id.read_text().strip():
            write_file(machine_id, uuid.uuid4().hex + "\n", 0o444)
        if not list((root / "etc/ssh").glob("ssh_host_*_key")):
            run(["ssh-keygen", "-A", "-f", root], capture=True)
        ssh_dir = root / "root/.ssh"
        ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_file(ssh_dir / "authorized_keys",
                   Path(f"{self.key}.pub").read_text(), 0o600)
        write_file(root / APT_PROXY_CONF,
                   "# zk-sensor lab: the machines reach Debian's mirror through the lab's "
                   "proxy only (ansible/lab/apt_proxy.py).\n"
                   f'Acquire::http::Proxy "http://{self.controller.ip}:{APT_PROXY_PORT}/";\n')
        return root

    def _apt_proxy_pid(self) -> int | None:
        """The running apt proxy's pid, if its pid file still names it."""
        with contextlib.suppress(OSError, ValueError):
            pid = int((self.lab_dir / "apt-proxy.pid").read_text())
            if process_alive(pid) and str(APT_PROXY) in process_argv(pid):
                return pid
        return None

    def start_apt_proxy(self) -> None:
        """Run apt_proxy.py on the controller's bridge address unless it already runs."""
        if self._apt_proxy_pid() is not None:
            return
        allowed = sorted({url.split("/")[2] for url in (MIRROR, SECURITY_MIRROR)})
        argv = [sys.executable, str(APT_PROXY),
                "--listen", f"{self.controller.ip}:{APT_PROXY_PORT}",
                "--cache", str(self.lab_dir / "apt-cache"),
                *[arg for host in allowed for arg in ("--allow", host)]]
        pidfile = shlex.quote(str(self.lab_dir / "apt-proxy.pid"))
        # Detached like the machines (setsid --fork): it outlives this process and is
        # never its zombie.
        with open(self.lab_dir / "apt-proxy.log", "ab") as log:
            subprocess.run(["setsid", "--fork", "sh", "-c",
                            f"echo $$ > {pidfile}; exec {shlex.join(argv)}"],
                           stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                           cwd="/", check=True)
        if not wait_until(lambda: tcp_open(str(self.controller.ip), APT_PROXY_PORT), 10):
            raise LabError(f"the apt proxy did not start; see {self.lab_dir / 'apt-proxy.log'}")

    def stop_apt_proxy(self) -> None:
        pid = self._apt_proxy_pid()
        if pid is not None:
            signal_pids([pid], signal.SIGTERM)
            wait_until(lambda: not process_alive(pid), 5)
        (self.lab_dir / "apt-proxy.pid").unlink(missing_ok=True)

    def nspawn_argv(self, host: Host, root: Path) -> list[str]:
        """The container's command line.

        --keep-unit/--register=no: there is no systemd on the host to register with.
        --kill-signal: SIGTERM to nspawn becomes SIGRTMIN+4 to the container's systemd,
        a clean poweroff (SIGINT for an emulated one: see FOREIGN_KILL_SIGNAL).
        --resolv-conf/--timezone/--link-journal off: the machine keeps its own files,
        nothing of the host's leaks in.  CAP_NET_ADMIN, beyond nspawn's default set (enough
        for systemd, sshd, ping and Java), for nftables (the zk_firewall role): it acts on
        the machine's own network namespace only.
        """
        return ["systemd-nspawn", "--boot", "--register=no", "--keep-unit",
                f"--network-namespace-path=/run/netns/{NETNS_PREFIX}{host.name}",
                "-D", str(root), f"--machine={host.name}", "--private-users=no",
                "--link-journal=no", "--resolv-conf=off", "--timezone=off",
                "--console=read-only", "--capability=CAP_NET_ADMIN",
                f"--kill-signal={FOREIGN_KILL_SIGNAL if host.foreign else KILL_SIGNAL}",
                # Plain text in console.log instead of ANSI colour codes.
                "--setenv=SYSTEMD_COLORS=0"]

    def _launch(self, host: Host) -> int:
        """Boot a prepared machine in the background; returns its nspawn pid.

        A small shell moves itself into the machine's cgroups, starts nspawn, writes its
        pid file and waits; when the machine reboots (nspawn exits REBOOT_STATUS) it starts
        nspawn again on the same disk.  ``setsid --fork`` detaches it so it outlives this
        process and never becomes this process's zombie.
        """
        mdir = self.machine_dir(host.name)
        pidfile = mdir / "nspawn.pid"
        pidfile.unlink(missing_ok=True)
        script = ""
        for group in machine_cgroups(host.name).values():
            group.mkdir(parents=True, exist_ok=True)
            script += f"echo $$ > {shlex.quote(str(group / 'cgroup.procs'))}; "
        root = mdir / "root"
        # The cgroup layout follows the release the root holds at each boot, not the
        # inventory: a machine upgraded in place (ansible/upgrade.yml) reboots into
        # trixie's systemd.  The machine's os-release is parsed, never sourced: this shell
        # runs as root on the host, and the file is the machine's to write.
        codenames = "|".join(UNIFIED_CGROUP_SUITES)
        os_release = shlex.quote(str(root / "usr/lib/os-release"))
        script += ("while :; do "
                   "case \"$(sed -n 's/^VERSION_CODENAME=\\\"\\{0,1\\}\\([a-z]*\\).*/\\1/p' "
                   f"{os_release})\" in "
                   f"{codenames}) export SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1;; "
                   "*) unset SYSTEMD_NSPAWN_UNIFIED_HIERARCHY;; esac; "
                   + shlex.join(self.nspawn_argv(host, root)) + " & "
                   f"echo $! > {shlex.quote(str(pidfile))}; wait $!; status=$?; "
                   f"[ $status -eq {REBOOT_STATUS} ] || exit $status; done")
        with open(mdir / "console.log", "ab") as console:
            run_detached = ["setsid", "--fork", "sh", "-c", script]
            subprocess.run(run_detached, stdin=subprocess.DEVNULL, stdout=console,
                           stderr=subprocess.STDOUT, cwd="/", check=True)
        if not wait_until(lambda: self.pid(host.name) is not None, 10):
            raise LabError(f"{host.name}: nspawn did not start; see {mdir / 'console.log'}")
        return self.pid(host.name) or 0

    def _console_tail(self, name: str, lines: int = 15) -> str:
        """The end of a machine's console, for error messages."""
        console = self.machine_dir(name) / "console.log"
        with contextlib.suppress(OSError):
            return "\n".join(console.read_text(errors="replace").splitlines()[-lines:])
        return "(no console log)"

    def _wait_one(self, name: str, deadline: float) -> float:
        """Block until a machine answers ssh and its boot is finished; returns that time."""
        host = self.host(name)
        while not tcp_open(host.address, 22):
            if not self.is_running(name):
                raise LabError(f"{name} stopped while booting:\n{self._console_tail(name)}")
            if time.monotonic() >= deadline:
                raise LabError(f"{name}: no sshd at {host.address} in time:\n"
                               f"{self._console_tail(name)}")
            time.sleep(POLL_S)
        while True:
            remaining = max(deadline - time.monotonic(), 1.0)
            result = self.ssh(name, "systemctl is-system-running --wait", check=False,
                              timeout=remaining)
            state = result.stdout.strip()
            if state in ("running", "degraded"):
                break
            if result.returncode != 255 or time.monotonic() >= deadline:
                raise LabError(f"{name}: system state {state!r} {result.stderr.strip()}")
            time.sleep(POLL_S)
        if state == "degraded":
            failed = self.ssh(name, "systemctl --failed --plain --no-legend", check=False)
            self.log(f"{name} is degraded: {failed.stdout.strip()}")
        return time.monotonic()

    def wait_ready(self, names: Sequence[str], timeout: float = BOOT_TIMEOUT_S,
                   foreign_timeout: float = FOREIGN_BOOT_TIMEOUT_S) -> dict[str, float]:
        """Wait for machines in parallel; seconds from now until each was ready.  A machine
        of another architecture (emulated) has ``foreign_timeout``."""
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=max(len(names), 1)) as pool:
            futures = {n: pool.submit(self._wait_one, n, started + (
                foreign_timeout if self.host(n).foreign else timeout)) for n in names}
            return {n: f.result() - started for n, f in futures.items()}

    def _stop(self, name: str, timeout: float | None = None) -> None:
        """Clean poweroff of one container, SIGKILL after ``timeout`` (STOP_TIMEOUT_S, three
        times that for an emulated machine); idempotent."""
        if timeout is None:
            foreign = name in self.hosts and self.hosts[name].foreign
            timeout = STOP_TIMEOUT_S * (3 if foreign else 1)
        pids = set(lab_nspawn_processes().get(name, []))
        own = self.pid(name)
        if own:
            pids.add(own)
        if pids:
            started = time.monotonic()
            signal_pids(pids, signal.SIGTERM)  # nspawn turns it into SIGRTMIN+4
            if wait_until(lambda: not any(map(process_alive, pids)), timeout):
                self.log(f"{name} powered off in {time.monotonic() - started:.1f} s")
            else:
                self.log(f"{name} did not power off in {timeout:.0f} s: killing it")
        leftovers = pids | {p for root in lab_cgroup_roots() for p in cgroup_pids(root / name)}
        if any(map(process_alive, leftovers)):
            signal_pids(leftovers, signal.SIGKILL)
            wait_until(lambda: not any(map(process_alive, leftovers)), 5)
        (self.machine_dir(name) / "nspawn.pid").unlink(missing_ok=True)

    # ---- public operations

    def start(self, name: str, wait: bool = True) -> None:
        """Boot one machine (again) on its overlay; keeps its network cut if it was cut."""
        host = self.host(name)
        with self._locked():
            self._require_base()
            self._ensure_key()
            if host.foreign:
                ensure_binfmt(host.arch, self.lab_dir)
            ensure_bridge(self.controller)
            self.start_apt_proxy()
            ensure_machine_network(host, self.network.prefixlen, force_up=False)
            self._prepare_root(host)
            if not self.is_running(name):
                pid = self._launch(host)
                self.log(f"{name} booting (nspawn pid {pid}) at {host.address}")
        if wait:
            self.wait_ready([name])

    def poweroff(self, name: str) -> None:
        """Clean shutdown of one machine; its disk (overlay) and network stay for `start`."""
        self.host(name)
        with self._locked():
            self._stop(name)

    def cut(self, name: str) -> None:
        """Unplug a machine from the lab switch (its side keeps its address, no carrier)."""
        self._set_link(name, "down")

    def restore(self, name: str) -> None:
        """Plug a cut machine back in."""
        self._set_link(name, "up")

    def _set_link(self, name: str, state: str) -> None:
        """Set the host side of a machine's veth down or up."""
        veth = veth_name(self.host(name).name)
        if not link_exists(veth):
            raise LabError(f"{name} has no network ({veth} is missing): is the lab up?")
        run(["ip", "link", "set", veth, state])

    def ssh_argv(self, name: str, *cmd: str, tty: bool = False) -> list[str]:
        """The ssh command line that runs ``cmd`` (or a shell) as root on a machine."""
        host = self.host(name)
        argv = ["ssh", *SSH_OPTIONS, "-o", f"ConnectTimeout={SSH_CONNECT_TIMEOUT_S}",
                "-i", str(self.key), "-t" if tty else "-T", "--", f"root@{host.address}"]
        if cmd:
            argv.append(remote_command(cmd))
        return argv

    def ssh(self, name: str, *cmd: str, check: bool = True, timeout: float = 60.0,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command on a machine as root; stdout/stderr captured as text.

        One argument is a shell command line, several are quoted as an argv.  ``check``
        raises CalledProcessError on a non-zero status (255 is ssh's own failure);
        ``timeout`` raises subprocess.TimeoutExpired.
        """
        argv = self.ssh_argv(name, *cmd)
        result = subprocess.run(argv, input=input, capture_output=True, text=True,
                                timeout=timeout, check=False,
                                stdin=None if input is not None else subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, argv, result.stdout,
                                                result.stderr)
        return result

    def run_playbook(self, *args: str, check: bool = True, capture: bool = False,
                     playbook: Path | None = None) -> subprocess.CompletedProcess[str]:
        """Apply ``site.yml`` (or another playbook) to the lab as root with the lab key and
        the lab's secrets directory; extra args go to Ansible."""
        playbook = playbook or self.site
        if not playbook.is_file():
            raise LabError(f"{playbook} does not exist yet: nothing to provision")
        secrets = {"zk_pki_dir": str(self.secrets),
                   "zk_pki_passphrase_file": str(self.passphrase_file)}
        argv = [ansible_playbook_binary(), "-i", str(self.inventory), str(playbook),
                "-u", "root", "--private-key", str(self.key), "-e", json.dumps(secrets),
                *args]
        self.log("+ " + shlex.join(argv))
        result = subprocess.run(argv, cwd=REPO, env=playbook_env(), text=True,
                                capture_output=capture, check=False)
        if check and result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, argv, result.stdout,
                                                result.stderr)
        return result

    def _require_base(self) -> None:
        """Operations on machines need the base roots; `up` is what builds them."""
        for suite, arch in self.roots:
            base = base_dir(self.lab_dir, arch, suite)
            if base_recipe(base) is None:
                raise LabError(f"no base root at {base}: run `lab.py up`")

    def up(self, provision: bool = True) -> UpResult:
        """Build the base if needed, boot every machine, wait for all, then apply site.yml.

        Returns the timings; without site.yml it stops after booting and says so.
        """
        with self._locked():
            # The roots of several architectures and releases are built side by side: a
            # foreign one spends its minutes in emulated package scripts, on one core.
            for arch in self.arches:
                if arch != native_arch():
                    ensure_binfmt(arch, self.lab_dir)
            building = time.monotonic()
            with ThreadPoolExecutor(max_workers=len(self.roots)) as pool:
                built = list(pool.map(
                    lambda root: build_base(self.lab_dir, self.log, root[1], root[0]),
                    self.roots))
            base_seconds = time.monotonic() - building if any(built) else 0.0
            self._ensure_key()
            ensure_bridge(self.controller)
            self.start_apt_proxy()
            started = time.monotonic()
            for host in self.hosts.values():
                ensure_machine_network(host, self.network.prefixlen, force_up=True)
                self._prepare_root(host)
                if not self.is_running(host.name):
                    self._launch(host)
            self.log(f"booting {len(self.hosts)} machines")
            ready = self.wait_ready(list(self.hosts))
            boot_seconds = time.monotonic() - started
            self.log(f"all {len(self.hosts)} machines ready in {boot_seconds:.1f} s")
        result = UpResult(base_seconds, boot_seconds, ready, provisioned=False)
        if provision:
            if self.site.is_file():
                self.run_playbook()
                result.provisioned = True
            else:
                self.log(f"{self.site.relative_to(REPO)} does not exist yet: machines are "
                         "up, nothing provisioned (run `lab.py provision` once it exists)")
        return result

    def down(self) -> None:
        """Stop every machine and remove everything but the base and the key.

        Works from the kernel's state, not from what this object remembers: leftovers of
        a half-failed `up` or of lost pid files are found by netns, mounts and /proc.
        """
        with self._locked():
            names = set(self.hosts) | set(lab_nspawn_processes())
            names |= {ns[len(NETNS_PREFIX):] for ns in netns_names()}
            if self.machines_dir.is_dir():
                names |= {p.name for p in self.machines_dir.iterdir() if p.is_dir()}
            with ThreadPoolExecutor(max_workers=max(len(names), 1)) as pool:
                list(pool.map(self._stop, sorted(names)))
            remove_tree(self.machines_dir)
            self.stop_apt_proxy()
            for netns in netns_names():
                run(["ip", "netns", "del", netns])
            for link in links():
                ifname = link.get("ifname", "")
                if ifname.startswith(VETH_PREFIX):
                    run(["ip", "link", "del", ifname], check=False, capture=True)
            if link_exists(BRIDGE):
                run(["ip", "link", "del", BRIDGE])
            for group in lab_cgroup_roots():
                remove_cgroup_tree(group)
            for name in names:
                with contextlib.suppress(OSError):
                    os.rmdir(f"/run/systemd/nspawn/propagate/{name}")
        self.log("lab is down")

    def status(self) -> list[MachineStatus]:
        """Every machine: running or not, its link, what its systemd says over ssh."""
        def one(host: Host) -> MachineStatus:
            pid = self.pid(host.name)
            up = link_is_up(veth_name(host.name))
            link = "absent" if up is None else "up" if up else "cut"
            system = "no answer"
            if pid and up:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    result = self.ssh(host.name, "systemctl is-system-running", check=False,
                                      timeout=SSH_CONNECT_TIMEOUT_S + 3)
                    system = result.stdout.strip() or "no answer"
            return MachineStatus(host.name, host.address, host.groups, pid is not None, pid,
                                 link, system, memory_use(pid) if pid else None)

        with ThreadPoolExecutor(max_workers=max(len(self.hosts), 1)) as pool:
            return list(pool.map(one, self.hosts.values()))

    def memory(self) -> dict[str, tuple[int, int] | None]:
        """Memory per running machine: (resident, with page cache) bytes, from its cgroup."""
        pids = {n: self.pid(n) for n in self.hosts}
        return {n: memory_use(pid) for n, pid in pids.items() if pid}


# --------------------------------------------------------------------------- CLI

def mib(value: tuple[int, int] | None) -> str:
    """(resident, with cache) bytes as MiB for people, '-' when unknown."""
    if value is None:
        return "-"
    return f"{value[0] / 2**20:.0f} MiB ({value[1] / 2**20:.0f} with cache)"


def lab_command() -> str:
    """How to call this tool from where the user stands, for the printed hints."""
    here = Path(__file__).resolve()
    with contextlib.suppress(ValueError):
        return str(here.relative_to(Path.cwd()))
    return str(here)


def print_summary(lab: Lab, result: UpResult) -> None:
    """What is up, how long it took, and how to get in."""
    base = (f"built in {result.base_seconds:.0f} s" if result.base_seconds
            else "reused")
    print(f"lab up: {len(lab.hosts)} machines ready in {result.boot_seconds:.1f} s "
          f"(base root {base}); controller {lab.controller.ip} on {BRIDGE}")
    for host in lab.hosts.values():
        emulated = f", {host.arch} under qemu-user" if host.foreign else ""
        print(f"  {host.name:<12} {host.address:<15} {','.join(host.groups):<18} "
              f"{host.os}{emulated}")
    example = (lab.groups.get("sensors") or list(lab.hosts))[0]
    cmd = lab_command()
    print("get in:")
    print(f"  {cmd} ssh {example}")
    print(f"  {cmd} ssh {example} systemctl status zk-sensor")
    print(f"  {cmd} ssh {example} journalctl -u zk-sensor -f")
    print(f"  {cmd} status | provision | cut NAME | restore NAME | poweroff NAME | "
          "start NAME | down")


def print_status(rows: list[MachineStatus]) -> None:
    """The `status` table."""
    print(f"{'machine':<12} {'address':<15} {'groups':<12} {'state':<8} {'link':<7} "
          f"{'system':<12} memory")
    for r in rows:
        state = "running" if r.running else "down"
        print(f"{r.name:<12} {r.address:<15} {','.join(r.groups):<12} {state:<8} "
              f"{r.link:<7} {r.system:<12} {mib(r.memory)}")


def cmd_up(lab: Lab, args: argparse.Namespace) -> int:
    """`up`: the whole lab, provisioned unless --no-provision."""
    result = lab.up(provision=False)
    print_summary(lab, result)
    if args.no_provision:
        return 0
    if not lab.site.is_file():
        print(f"{lab.site.relative_to(REPO)} does not exist yet: stopping after boot; "
              f"run `{lab_command()} provision` once it does.")
        return 0
    return lab.run_playbook(check=False).returncode


def cmd_provision(lab: Lab, args: argparse.Namespace) -> int:
    """`provision`: only the playbook, extra arguments passed to ansible-playbook."""
    return lab.run_playbook(*args.ansible_args, check=False).returncode


def cmd_down(lab: Lab, args: argparse.Namespace) -> int:
    """`down`: everything but the base root and the key."""
    lab.down()
    return 0


def cmd_status(lab: Lab, args: argparse.Namespace) -> int:
    """`status`: exit 0 only if every machine runs and answers."""
    rows = lab.status()
    print_status(rows)
    return 0 if all(r.system in ("running", "degraded") for r in rows) else 3


def cmd_ssh(lab: Lab, args: argparse.Namespace) -> int:
    """`ssh NAME [CMD...]`: replaces this process, so status, stdin and signals pass through."""
    lab.host(args.name)
    tty = not args.command and sys.stdin.isatty()
    argv = lab.ssh_argv(args.name, *args.command, tty=tty)
    os.execvp(argv[0], argv)
    return 127  # not reached


def cmd_machine(lab: Lab, args: argparse.Namespace) -> int:
    """`cut`, `restore`, `poweroff`, `start` on one machine."""
    getattr(lab, args.command_name)(args.name)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command line: one subcommand per lab operation."""
    parser = argparse.ArgumentParser(
        prog="lab.py", description="systemd-nspawn machines for zk-sensor's Ansible playbook")
    sub = parser.add_subparsers(dest="command_name", required=True)
    up = sub.add_parser("up", help="build the base once, boot every machine, run site.yml")
    up.add_argument("--no-provision", action="store_true", help="stop after booting")
    up.set_defaults(func=cmd_up)
    prov = sub.add_parser("provision", help="run site.yml on the running lab")
    prov.add_argument("ansible_args", nargs=argparse.REMAINDER,
                      help="passed to ansible-playbook (e.g. --tags zookeeper -v)")
    prov.set_defaults(func=cmd_provision)
    sub.add_parser("down", help="stop and remove every machine and the network") \
        .set_defaults(func=cmd_down)
    sub.add_parser("status", help="machines, links, system state, memory") \
        .set_defaults(func=cmd_status)
    ssh = sub.add_parser("ssh", help="run a command (or a shell) as root on a machine")
    ssh.add_argument("name")
    ssh.add_argument("command", nargs=argparse.REMAINDER)
    ssh.set_defaults(func=cmd_ssh)
    for name, text in (("cut", "unplug a machine's network"),
                       ("restore", "plug a machine's network back"),
                       ("poweroff", "clean shutdown of one machine"),
                       ("start", "boot one machine again on its disk")):
        one = sub.add_parser(name, help=text)
        one.add_argument("name")
        one.set_defaults(func=cmd_machine)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; errors are one line on stderr and a non-zero exit status."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if args.func is cmd_provision:
        args.ansible_args = unknown + args.ansible_args
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if os.geteuid() != 0:
        print("lab: error: run as root (namespaces, mounts, containers)", file=sys.stderr)
        return 1
    try:
        return args.func(Lab(), args)
    except LabError as error:
        print(f"lab: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

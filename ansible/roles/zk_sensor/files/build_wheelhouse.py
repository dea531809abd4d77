#!/usr/bin/env python3
"""Build (or find in the cache) the wheelhouses that zk-sensor's nodes install offline.

Run on the Ansible controller by the zk_sensor role. A wheelhouse holds the project's
wheel and a wheel of every dependency, so a node with no network (a Pi fleet, the lab)
installs with ``pip install --no-index``.

One wheelhouse per target: the nodes' Python version, machine and C library, given as
``--target PYTHON:MACHINE[:GLIBC]`` (``3.11.2:x86_64:2.36``, ``3.13.5:aarch64:2.41``),
as the role reads them on each node. The wheelhouse is resolved for the target, not for
the Python that runs this script: pip judges environment markers by the interpreter it
runs in, even with ``--python-version`` (psycopg needs typing-extensions only below
Python 3.13, so a 3.13 controller would leave it out of a 3.11 node's wheelhouse), so
pip runs here with packaging's ``default_environment()`` answering for the target:

1. ``pip wheel`` of the project (and, for the target's markers, of every dependency):
   the project's wheel, and wheels of the dependencies PyPI has as sources only, built
   here (pure Python ones only are of use to a node);
2. ``pip download --only-binary=:all:`` with the target's ``--python-version``,
   ``--implementation``/``--abi`` and manylinux ``--platform`` tags, the wheels of step 1
   offered with ``--find-links``: the resolution, with the target's Requires-Python;
3. platform wheels swapped for their pure-Python ``py3-none-any`` build when PyPI has
   one (any that remain are listed as ``platform_specific`` and are the target's);
4. the check, ``pip check``'s rules applied to the wheel files for the target before
   anything is copied: every wheel installs on the target (its tags, its
   Requires-Python), every requirement of the project and of each wheel that applies on
   the target (markers evaluated for it, extras followed) is met by a wheel of the
   wheelhouse, and every wheel is needed by one of them. A failed check stops the build.

Content-addressed: a wheelhouse lives in ``CACHE/<key>/`` where ``key`` is a SHA-256 over
the project's source files (their paths, modes and bytes), this script, the pip arguments
and the target. An unchanged source finds its wheelhouse and builds nothing, so a second
playbook run copies the very same bytes and changes nothing; any edit to the source gives
a new key, hence new code on the nodes even when the project's version number did not
change. The project wheel is also built reproducibly (from a pristine copy of exactly the
hashed files, with SOURCE_DATE_EPOCH fixed), so a rebuild from the same source, on
another controller or after the cache was cleared, produces the same bytes.

The Python that runs this script needs pip; any of 3.10 to 3.13 builds for any target.

Prints one JSON object on stdout: {"built": bool, "wheelhouses": {TARGET: {"key", "dir",
"built", "wheels", "platform_specific"}}}, TARGET as given; pip's own output goes to
stderr.
"""

from __future__ import annotations

import argparse
import email.parser
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

try:  # ansible-core depends on packaging, so the controller's Python has it
    from packaging.markers import Marker
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet
    from packaging.tags import Tag, compatible_tags, cpython_tags
    from packaging.utils import canonicalize_name, parse_wheel_filename
except ImportError:  # pip's own copy
    from pip._vendor.packaging.markers import Marker  # type: ignore[no-redef]
    from pip._vendor.packaging.requirements import Requirement  # type: ignore[no-redef]
    from pip._vendor.packaging.specifiers import SpecifierSet  # type: ignore[no-redef]
    from pip._vendor.packaging.tags import (  # type: ignore[no-redef]
        Tag,
        compatible_tags,
        cpython_tags,
    )
    from pip._vendor.packaging.utils import (  # type: ignore[no-redef]
        canonicalize_name,
        parse_wheel_filename,
    )

# Bump when the way wheelhouses are built changes, to invalidate every cached one.
RECIPE = 2
# 2020-01-01T00:00:00Z: any fixed instant works; zip files cannot go before 1980.
SOURCE_DATE_EPOCH = 1577836800
SKIPPED_NAMES = {"__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache", "build", "dist"}
SKIPPED_SUFFIXES = (".pyc", ".pyo", ".egg-info")
# The oldest manylinux (glibc 2.17) is the floor of the platform tags offered to pip.
MANYLINUX_FLOOR = 17

# pip with packaging's default_environment() answering for the target (argv[1], JSON):
# pip evaluates every environment marker through it, and nothing else there reads it.
PIP_FOR_TARGET = """
import json, sys
from pip._vendor.packaging import markers
target = json.loads(sys.argv[1])
own = markers.default_environment
def default_environment():
    environment = own()
    environment.update(target)
    return environment
markers.default_environment = default_environment
from pip._internal.cli.main import main
sys.argv = ["pip", *sys.argv[2:]]
sys.exit(main())
"""


@dataclass(frozen=True)
class Target:
    """What a node runs: CPython's version (X.Y.Z), the machine (uname -m) and glibc."""

    python: str
    machine: str
    glibc: str = f"2.{MANYLINUX_FLOOR}"

    @classmethod
    def parse(cls, text: str) -> Target:
        parts = text.split(":")
        if len(parts) not in (2, 3) or not all(parts):
            raise SystemExit(f"build_wheelhouse: --target {text!r} is not PYTHON:MACHINE[:GLIBC]")
        version = parts[0].split(".")
        if len(version) < 2 or not all(v.isdigit() for v in version):
            raise SystemExit(f"build_wheelhouse: --target {text!r}: {parts[0]!r} is no version")
        return cls(*parts)

    @property
    def version(self) -> tuple[int, int]:
        major, minor = self.python.split(".")[:2]
        return int(major), int(minor)

    @property
    def short(self) -> str:
        return "{}.{}".format(*self.version)

    @property
    def abi(self) -> str:
        return "cp{}{}".format(*self.version)

    def platforms(self) -> list[str]:
        """manylinux tags this glibc runs, newest first, and the legacy alias."""
        try:
            newest = int(self.glibc.split(".")[1])
        except (IndexError, ValueError):
            newest = MANYLINUX_FLOOR
        found = [f"manylinux_2_{minor}_{self.machine}"
                 for minor in range(max(newest, MANYLINUX_FLOOR), MANYLINUX_FLOOR - 1, -1)]
        return [*found, f"manylinux2014_{self.machine}"]

    def tags(self) -> set[Tag]:
        platforms = [*self.platforms(), "manylinux2010_" + self.machine,
                     "manylinux1_" + self.machine]
        return {*cpython_tags(self.version, abis=[self.abi], platforms=platforms),
                *compatible_tags(self.version, interpreter=self.abi, platforms=platforms)}

    def environment(self) -> dict[str, str]:
        """The environment markers' values on the node (PEP 508)."""
        return {"implementation_name": "cpython", "implementation_version": self.python,
                "os_name": "posix", "platform_machine": self.machine,
                "platform_python_implementation": "CPython", "platform_system": "Linux",
                "python_full_version": self.python, "python_version": self.short,
                "sys_platform": "linux"}

    def __str__(self) -> str:
        return f"Python {self.python} on {self.machine} (glibc {self.glibc})"


def source_files(project: Path, paths: list[str]) -> list[Path]:
    """Every file under the given project paths, relative, sorted; caches left out."""
    found: list[Path] = []
    for name in paths:
        top = project / name
        if top.is_file():
            found.append(Path(name))
            continue
        if not top.is_dir():
            raise SystemExit(f"build_wheelhouse: {top} does not exist")
        for root, dirs, files in os.walk(top):
            dirs[:] = sorted(d for d in dirs
                             if d not in SKIPPED_NAMES and not d.endswith(SKIPPED_SUFFIXES))
            for file in files:
                if not file.endswith(SKIPPED_SUFFIXES):
                    found.append((Path(root) / file).relative_to(project))
    return sorted(set(found))


def source_key(project: Path, files: list[Path], pip_args: list[str], target: Target) -> str:
    digest = hashlib.sha256()
    digest.update(f"recipe {RECIPE}\n".encode())
    digest.update(Path(__file__).read_bytes())
    digest.update(f"target {target.python} {target.machine} {target.glibc}\n".encode())
    digest.update(json.dumps(pip_args).encode())
    for rel in files:
        path = project / rel
        executable = bool(path.stat().st_mode & stat.S_IXUSR)
        digest.update(f"\0{rel.as_posix()}\0{int(executable)}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def pristine_copy(project: Path, files: list[Path], target: Path) -> None:
    """Exactly the hashed files, with fixed times and modes: nothing else gets built in."""
    for rel in files:
        dest = target / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(project / rel, dest)
        executable = (project / rel).stat().st_mode & stat.S_IXUSR
        dest.chmod(0o755 if executable else 0o644)
        os.utime(dest, (SOURCE_DATE_EPOCH, SOURCE_DATE_EPOCH))


def pip(target: Target, args: list[str], env: dict[str, str], check: bool = True) -> bool:
    """pip with the target's environment markers."""
    command = [sys.executable, "-c", PIP_FOR_TARGET, json.dumps(target.environment()),
               "--disable-pip-version-check", *args]
    result = subprocess.run(command, stdout=sys.stderr, stderr=sys.stderr, env=env,
                            check=False)
    if check and result.returncode != 0:
        raise SystemExit(f"build_wheelhouse: {target}: pip {' '.join(args)} failed "
                         f"({result.returncode})")
    return result.returncode == 0


def target_options(target: Target) -> list[str]:
    return ["--only-binary=:all:", "--python-version", target.python,
            "--implementation", "cp", "--abi", target.abi, "--abi", "abi3", "--abi", "none",
            *[option for platform in target.platforms() for option in ("--platform", platform)]]


def make_portable(wheelhouse: Path, target: Target, pip_args: list[str],
                  env: dict[str, str]) -> list[str]:
    """Swap platform-specific wheels for pure ones of the same version when they exist."""
    remaining = []
    for wheel in sorted(wheelhouse.glob("*.whl")):
        if wheel.name.endswith("-none-any.whl"):
            continue
        name, version = parse_wheel_filename(wheel.name)[:2]
        pure_dir = wheelhouse.parent / f"pure-{name}"
        fetched = pip(target, ["download", "--no-deps", "--only-binary=:all:",
                               "--platform", "any", "--implementation", "py", "--abi", "none",
                               "--python-version", target.python, *pip_args,
                               "--dest", str(pure_dir), f"{name}=={version}"], env, check=False)
        pure = sorted(pure_dir.glob("*-none-any.whl")) if pure_dir.is_dir() else []
        if fetched and pure:
            wheel.unlink()
            shutil.move(str(pure[0]), wheelhouse / pure[0].name)
        else:
            remaining.append(wheel.name)
        shutil.rmtree(pure_dir, ignore_errors=True)
    return remaining


def wheel_metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as archive:
        names = [n for n in archive.namelist()
                 if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
        if len(names) != 1:
            raise SystemExit(f"build_wheelhouse: {wheel.name} has no METADATA")
        return email.parser.Parser().parsestr(archive.read(names[0]).decode("utf-8"))


def check(wheelhouse: Path, target: Target, root: str) -> list[str]:
    """What `pip check` would say on the target after installing the wheelhouse, plus the
    wheels that cannot install there and those nothing needs; empty when all is well."""
    problems: list[str] = []
    tags = target.tags()
    dists: dict[str, tuple[str, list[str], str]] = {}
    for wheel in sorted(wheelhouse.glob("*.whl")):
        name, version, _, wheel_tags = parse_wheel_filename(wheel.name)
        metadata = wheel_metadata(wheel)
        if not wheel_tags & tags:
            problems.append(f"{wheel.name} does not install on {target}")
        requires_python = metadata.get("Requires-Python")
        if requires_python and not SpecifierSet(requires_python).contains(
                target.python, prereleases=True):
            problems.append(f"{wheel.name} requires Python {requires_python}")
        dists[name] = (str(version), metadata.get_all("Requires-Dist") or [], wheel.name)
    root = canonicalize_name(root)
    if root not in dists:
        return [*problems, f"the project's wheel ({root}) is missing"]
    environment = target.environment()
    seen: set[tuple[str, str]] = set()
    pending = [(root, "")]
    while pending:
        name, extra = pending.pop()
        if (name, extra) in seen or name not in dists:
            continue
        seen.add((name, extra))
        version, requires, _ = dists[name]
        for line in requires:
            requirement = Requirement(line)
            marker: Marker | None = requirement.marker
            applies = (marker.evaluate({**environment, "extra": extra}) if marker
                       else extra == "")
            if not applies:
                continue
            wanted = canonicalize_name(requirement.name)
            if wanted not in dists:
                problems.append(f"{name} {version} requires {requirement}, which is missing")
                continue
            have = dists[wanted][0]
            if not requirement.specifier.contains(have, prereleases=True):
                problems.append(f"{name} {version} requires {requirement}, "
                                f"but the wheelhouse has {wanted} {have}")
            pending.append((wanted, ""))
            pending.extend((wanted, e) for e in sorted(requirement.extras))
    needed = {name for name, _ in seen}
    for name in sorted(set(dists) - needed):
        problems.append(f"{dists[name][2]} is not needed on {target}")
    return problems


def build(project: Path, files: list[Path], pip_args: list[str], target: Target,
          dest: Path) -> list[str]:
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(SOURCE_DATE_EPOCH), PYTHONHASHSEED="0")
    with tempfile.TemporaryDirectory(prefix="zk-sensor-wheelhouse-") as tmp:
        source = Path(tmp) / "source"
        own = Path(tmp) / "project"
        local = Path(tmp) / "local"
        resolved = Path(tmp) / "resolved"
        pristine_copy(project, files, source)
        # 1. The project's wheel, then wheels of what it needs on the target (the
        # controller's Python builds them: its Requires-Python is the target's business,
        # judged in 2 and 4).
        # (--use-pep517: an isolated build with setuptools and wheel from the index, also
        # for a source without pyproject.toml on a pip older than 23.1.)
        pip(target, ["wheel", "--use-pep517", "--no-deps", "--ignore-requires-python",
                     "--wheel-dir", str(own), *pip_args, str(source)], env)
        project_wheels = sorted(own.glob("*.whl"))
        if len(project_wheels) != 1:
            raise SystemExit(f"build_wheelhouse: the project built {len(project_wheels)} wheels")
        project_wheel = project_wheels[0]
        pip(target, ["wheel", "--use-pep517", "--ignore-requires-python",
                     "--wheel-dir", str(local), "--find-links", str(own), *pip_args,
                     str(project_wheel)], env)
        # 2. The resolution for the target.
        pip(target, ["download", *target_options(target), "--find-links", str(local),
                     *pip_args, "--dest", str(resolved), str(project_wheel)], env)
        # 3. Pure wheels where PyPI has them.
        platform_specific = make_portable(resolved, target, pip_args, env)
        # 4. pip check's verdict for the target, before anything leaves the controller.
        root = parse_wheel_filename(project_wheel.name)[0]
        problems = check(resolved, target, root)
        if problems:
            raise SystemExit(f"build_wheelhouse: the wheelhouse for {target} fails its "
                             "check: " + "; ".join(problems))
        dest.mkdir(parents=True)
        for wheel in sorted(resolved.glob("*.whl")):
            shutil.copyfile(wheel, dest / wheel.name)
            (dest / wheel.name).chmod(0o644)
    return platform_specific


def prune(cache: Path, keep: set[str], count: int) -> None:
    """Keep this run's wheelhouses and the newest `count` others; drop the rest."""
    markers = sorted((p for p in cache.glob("*.json") if p.stem not in keep),
                     key=lambda p: p.stat().st_mtime, reverse=True)
    for old in markers[max(count, 0):]:
        old.unlink()
        shutil.rmtree(cache / old.stem, ignore_errors=True)


def wheelhouse(project: Path, cache: Path, files: list[Path], pip_args: list[str],
               target: Target) -> dict[str, object]:
    key = source_key(project, files, pip_args, target)
    final = cache / key
    # Written last: a wheelhouse without its marker is an interrupted build.
    marker = cache / f"{key}.json"
    built = False
    if marker.is_file() and final.is_dir():
        platform_specific = json.loads(marker.read_text())["platform_specific"]
    else:
        cache.mkdir(parents=True, exist_ok=True)
        partial = cache / f".{key}.tmp-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        try:
            platform_specific = build(project, files, pip_args, target, partial)
            shutil.rmtree(final, ignore_errors=True)
            partial.rename(final)
            marker.write_text(json.dumps({
                "key": key, "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "target": {"python": target.python, "machine": target.machine,
                           "glibc": target.glibc},
                "files": [f.as_posix() for f in files],
                "platform_specific": platform_specific}, indent=1) + "\n")
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        built = True
    wheels = sorted(p.name for p in final.glob("*.whl"))
    return {"key": key, "dir": str(final), "built": built, "wheels": wheels,
            "platform_specific": platform_specific}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", required=True, type=Path, help="the repository root")
    parser.add_argument("--cache", required=True, type=Path, help="where wheelhouses live")
    parser.add_argument("--source", action="append", required=True,
                        help="a file or directory of the project that goes into the wheel")
    parser.add_argument("--target", action="append", required=True,
                        help="PYTHON:MACHINE[:GLIBC] of the nodes, e.g. 3.11.2:aarch64:2.36 "
                             "(repeatable: one wheelhouse each)")
    parser.add_argument("--pip-arg", action="append", default=[],
                        help="an extra argument for every pip command (repeatable)")
    parser.add_argument("--keep", type=int, default=6,
                        help="wheelhouses kept in the cache besides this run's")
    args = parser.parse_args()

    project = args.project.resolve()
    cache = args.cache.resolve()
    files = source_files(project, args.source)
    result = {text: wheelhouse(project, cache, files, args.pip_arg, Target.parse(text))
              for text in dict.fromkeys(args.target)}
    built = any(entry["built"] for entry in result.values())
    if built:
        prune(cache, {str(entry["key"]) for entry in result.values()}, args.keep)
    print(json.dumps({"built": built, "wheelhouses": result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

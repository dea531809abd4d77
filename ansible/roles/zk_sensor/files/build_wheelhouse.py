#!/usr/bin/env python3
"""Build (or find in the cache) the wheelhouse that zk-sensor's nodes install offline.

Run on the Ansible controller by the zk_sensor role. The wheelhouse holds the project's
wheel and a wheel of every dependency, so a node with no network (a Pi fleet, the lab)
installs with ``pip install --no-index``.

Content-addressed: the wheelhouse lives in ``CACHE/<key>/`` where ``key`` is a SHA-256
over the project's source files (their paths, modes and bytes), this script, the pip
arguments and the build Python's version. An unchanged source finds its wheelhouse and
builds nothing, so a second playbook run copies the very same bytes and changes nothing;
any edit to the source gives a new key, hence new code on the nodes even when the
project's version number did not change. The project wheel is also built reproducibly
(from a pristine copy of exactly the hashed files, with SOURCE_DATE_EPOCH fixed), so a
rebuild from the same source, on another controller or after the cache was cleared,
produces the same bytes.

Wheels that pip picked for the controller's platform (a C-accelerated build for x86_64,
say) are replaced by their pure-Python ``py3-none-any`` build when PyPI has one, so the
same wheelhouse serves an ARM Raspberry Pi; any that remain are listed as
``platform_specific`` in the output.

Prints one JSON object on stdout: {"key", "dir", "built", "wheels", "platform_specific"};
pip's own output goes to stderr.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Bump when the way wheelhouses are built changes, to invalidate every cached one.
RECIPE = 1
# 2020-01-01T00:00:00Z: any fixed instant works; zip files cannot go before 1980.
SOURCE_DATE_EPOCH = 1577836800
SKIPPED_NAMES = {"__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache", "build", "dist"}
SKIPPED_SUFFIXES = (".pyc", ".pyo", ".egg-info")


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


def source_key(project: Path, files: list[Path], pip_args: list[str]) -> str:
    digest = hashlib.sha256()
    digest.update(f"recipe {RECIPE}\n".encode())
    digest.update(Path(__file__).read_bytes())
    digest.update(f"python {sys.version_info.major}.{sys.version_info.minor}\n".encode())
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


def pip(args: list[str], env: dict[str, str]) -> None:
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    result = subprocess.run(command, stdout=sys.stderr, stderr=sys.stderr, env=env,
                            check=False)
    if result.returncode != 0:
        raise SystemExit(f"build_wheelhouse: {' '.join(command)} failed ({result.returncode})")


def make_portable(wheelhouse: Path, env: dict[str, str]) -> list[str]:
    """Swap platform-specific dependency wheels for pure ones when they exist."""
    remaining = []
    for wheel in sorted(wheelhouse.glob("*.whl")):
        name, version = wheel.name.split("-")[:2]
        if wheel.name.endswith("-none-any.whl"):
            continue
        pure_dir = wheelhouse.parent / f"pure-{name}"
        command = [sys.executable, "-m", "pip", "--disable-pip-version-check", "download",
                   "--no-deps", "--only-binary=:all:", "--platform", "any",
                   "--implementation", "py", "--abi", "none",
                   "--python-version", f"{sys.version_info.major}.{sys.version_info.minor}",
                   "--dest", str(pure_dir), f"{name}=={version}"]
        result = subprocess.run(command, stdout=sys.stderr, stderr=sys.stderr, env=env,
                                check=False)
        pure = sorted(pure_dir.glob("*-none-any.whl")) if pure_dir.is_dir() else []
        if result.returncode == 0 and pure:
            wheel.unlink()
            shutil.move(str(pure[0]), wheelhouse / pure[0].name)
        else:
            remaining.append(wheel.name)
        shutil.rmtree(pure_dir, ignore_errors=True)
    return remaining


def build(project: Path, files: list[Path], pip_args: list[str], target: Path) -> list[str]:
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(SOURCE_DATE_EPOCH), PYTHONHASHSEED="0")
    with tempfile.TemporaryDirectory(prefix="zk-sensor-wheelhouse-") as tmp:
        source = Path(tmp) / "source"
        wheels = Path(tmp) / "wheels"
        pristine_copy(project, files, source)
        pip(["wheel", "--wheel-dir", str(wheels), *pip_args, str(source)], env)
        platform_specific = make_portable(wheels, env)
        target.mkdir(parents=True)
        for wheel in sorted(wheels.glob("*.whl")):
            shutil.copyfile(wheel, target / wheel.name)
            (target / wheel.name).chmod(0o644)
    return platform_specific


def prune(cache: Path, keep: str, count: int) -> None:
    """Keep the newest `count` wheelhouses (the current one among them); drop the rest."""
    markers = sorted((p for p in cache.glob("*.json") if p.stem != keep),
                     key=lambda p: p.stat().st_mtime, reverse=True)
    for old in markers[max(count - 1, 0):]:
        old.unlink()
        shutil.rmtree(cache / old.stem, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", required=True, type=Path, help="the repository root")
    parser.add_argument("--cache", required=True, type=Path, help="where wheelhouses live")
    parser.add_argument("--source", action="append", required=True,
                        help="a file or directory of the project that goes into the wheel")
    parser.add_argument("--pip-arg", action="append", default=[],
                        help="an extra argument for `pip wheel` (repeatable)")
    parser.add_argument("--keep", type=int, default=3, help="wheelhouses kept in the cache")
    args = parser.parse_args()

    project = args.project.resolve()
    cache = args.cache.resolve()
    files = source_files(project, args.source)
    key = source_key(project, files, args.pip_arg)
    final = cache / key
    # Written last: a wheelhouse without its marker is an interrupted build.
    marker = cache / f"{key}.json"
    built = False
    platform_specific: list[str] = []
    if marker.is_file() and final.is_dir():
        platform_specific = json.loads(marker.read_text())["platform_specific"]
    else:
        cache.mkdir(parents=True, exist_ok=True)
        partial = cache / f".{key}.tmp-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        try:
            platform_specific = build(project, files, args.pip_arg, partial)
            shutil.rmtree(final, ignore_errors=True)
            partial.rename(final)
            marker.write_text(json.dumps({
                "key": key, "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "files": [f.as_posix() for f in files],
                "platform_specific": platform_specific}, indent=1) + "\n")
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        built = True
        prune(cache, key, args.keep)
    wheels = sorted(p.name for p in final.glob("*.whl"))
    print(json.dumps({"key": key, "dir": str(final), "built": built, "wheels": wheels,
                      "platform_specific": platform_specific}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

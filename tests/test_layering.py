"""The layering the docs describe (docs/explanation/architecture.md), checked on every import
of the package, at module level or inside a function: a change that reaches across it
fails here instead of slowly turning the tree back into one flat room.

    node/  ctl/          collector/      (programs)
        fleet/                           (the protocol)
        zk/                              (the only package that imports kazoo)
    config/, sensors/, codec, logs, waker (shared, below everything)
"""

import ast
from pathlib import Path

import pytest

# Pure logic, no server: part of the fast tier (make check).
pytestmark = pytest.mark.fast

PACKAGE = Path(__file__).resolve().parent.parent / "daemon" / "zk_sensor"

# What each room may import from the package, beside itself.
ALLOWED = {
    "config": set(),
    "codec": set(),
    "logs": set(),
    "waker": set(),
    "sensors": {"config"},
    "zk": {"config"},
    "fleet": {"zk", "config", "codec", "waker"},
    "node": {"fleet", "zk", "config", "codec", "logs", "waker", "sensors"},
    # zk-sensorctl reads the node's own settings file to connect as the node does: the one
    # declaration of those settings (node/settings.py), not a copy.
    "ctl": {"fleet", "zk", "config", "codec", "logs", "waker", "node.settings"},
    "collector": {"config", "codec", "logs"},
    "testing": {"*"},
}
# The collector's one look at ZooKeeper: its fence reads the fleet's epoch and barrier.
EXCEPTIONS = {"collector/fence.py": {"zk", "fleet"}}


def room_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0].removesuffix(".py")


def imported_modules(path: Path) -> set[str]:
    return imported_modules_of(path, ["zk_sensor", *path.relative_to(PACKAGE).parent.parts])


def imported_modules_of(path: Path, package: list[str]) -> set[str]:
    """Absolute names of everything the module imports (relative imports resolved)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            names.add(module)
            # `from package import module` imports the module too.
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


MODULES = sorted(path for path in PACKAGE.rglob("*.py") if path.name != "__init__.py"
                 or path.parent != PACKAGE)


def crossings(relative: str, imported: set[str]) -> list[str]:
    """The imports of the module at `relative` (to the package) that break the layering."""
    room = relative.split("/")[0].removesuffix(".py")
    allowed = ALLOWED[room] | EXCEPTIONS.get(relative, set()) | {room}
    found = []
    for name in sorted(imported):
        parts = name.split(".")
        if parts[0] == "kazoo" and room not in ("zk", "testing"):
            found.append(f"{name} (kazoo only in zk/)")
        if parts[0] != "zk_sensor" or len(parts) < 2 or "*" in allowed:
            continue
        if parts[1] not in allowed and ".".join(parts[1:3]) not in allowed:
            found.append(f"{name} ({room}/ may use {sorted(allowed - {room}) or 'nothing'})")
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(PACKAGE)))
def test_each_module_imports_only_the_rooms_below_it(path: Path) -> None:
    relative = str(path.relative_to(PACKAGE))
    found = crossings(relative, imported_modules(path))
    assert not found, f"{relative} reaches across the layers: {found}"


def test_nothing_in_the_product_imports_the_test_harnesses() -> None:
    offenders = [str(path.relative_to(PACKAGE)) for path in MODULES
                 if room_of(path) != "testing"
                 and any(name.startswith("zk_sensor.testing") for name in imported_modules(path))]
    assert not offenders, offenders


def test_the_check_sees_each_kind_of_crossing(tmp_path: Path) -> None:
    """Guard against a checker that passes everything: a parsing slip would."""
    module = tmp_path / "probe.py"
    module.write_text("import kazoo.client\n"
                      "def later():\n    from zk_sensor.node import daemon\n"
                      "from zk_sensor.zk.errors import ZK_ERRORS\n")
    imported = imported_modules_of(module, ["zk_sensor", "fleet"])
    assert imported >= {"kazoo.client", "zk_sensor.node", "zk_sensor.node.daemon"}
    assert len(crossings("fleet/probe.py", imported)) == 3
    assert crossings("collector/fence.py", {"zk_sensor.zk.client"}) == []
    assert crossings("collector/app.py", {"zk_sensor.zk.client"}) != []
    assert crossings("ctl/cli.py", {"zk_sensor.node.settings"}) == []
    assert crossings("ctl/cli.py", {"zk_sensor.node.daemon"}) != []

"""The one layering of every program's settings: defaults, then a TOML file, then
`<PREFIX>*` environment variables, then the command line, which wins. The result keeps
where each setting came from, so a default can be told from a value an operator chose:
a default may follow what a server grants, a chosen value must be honoured or refused."""

import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic

from zk_sensor.config.table import S, Spec, Table


class SettingsError(ValueError):
    """A setting that stops a program from starting; one line for the operator."""


@dataclass(frozen=True)
class Layered(Generic[S]):
    """Settings as layered, with where each explicit value came from: a default the
    operator never set may follow what a server grants; an explicit one must fit or stop."""
    settings: S
    # Each setting given by the file, the environment or the command line: where from
    # ("in FILE", "from VARIABLE", "from --flag"). The others are at their default.
    origins: Mapping[str, str]

    @property
    def explicit(self) -> frozenset[str]:
        return frozenset(self.origins)


# A setting's raw value and where it was found.
Found = dict[str, tuple[object, str]]


def _known(table: Table[Any], key: str, where: str) -> Spec:
    spec = table.find(key)
    if spec is None:
        raise SettingsError(f"unknown setting {key!r} {where}")
    return spec


def from_file(table: Table[Any], path: Path) -> Found:
    try:
        data = tomllib.loads(path.read_text())
    except OSError as error:
        raise SettingsError(f"cannot read config file {path}: {error.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise SettingsError(f"config file {path} is not valid TOML: {error}") from None
    where = f"in {path}"
    return {_known(table, key, where).name: (value, where) for key, value in data.items()}


def from_env(table: Table[Any], env: Mapping[str, str]) -> Found:
    found: Found = {}
    prefix = table.env_prefix
    for variable, value in env.items():
        if variable.startswith(prefix) and variable != table.config_variable:
            where = f"from {variable}"
            found[_known(table, variable[len(prefix):].lower(), where).name] = (value, where)
    return found


def from_cli(table: Table[Any], cli: Mapping[str, Any]) -> Found:
    found: Found = {}
    for name, value in cli.items():
        if value is not None:
            spec = _known(table, name, "on the command line")
            found[spec.name] = (value, f"from {spec.flag or 'the command line'}")
    return found


def parse(spec: Spec, raw: object, where: str) -> Any:
    try:
        return spec.about.parse(raw)
    except ValueError as error:
        raise SettingsError(f"setting {spec.name}={raw!r} is not {error} ({where})") from None


def layered(table: Table[S], cli: Mapping[str, Any], env: Mapping[str, str],
            config_file: str | None, only: Collection[str] | None = None) -> Layered[S]:
    """Every source merged and each value parsed; checks across settings are the
    program's. With `only`, the other settings of the table are left at their default,
    unparsed: zk-sensorctl takes just the connection from a node's file."""
    found: Found = {}
    file_name = config_file or env.get(table.config_variable)
    if file_name:
        found.update(from_file(table, Path(file_name)))
    found.update(from_env(table, env))
    found.update(from_cli(table, cli))
    chosen = {name: entry for name, entry in found.items() if only is None or name in only}
    specs = {spec.name: spec for spec in table}
    values = {name: parse(specs[name], raw, where) for name, (raw, where) in chosen.items()}
    return Layered(table.cls(**values),
                   {name: where for name, (_raw, where) in chosen.items()})

"""Layered settings for the daemon and the collector alike: defaults, then a TOML file,
then `<PREFIX>*` environment variables, then the command line, which wins."""

import tomllib
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class SettingsError(ValueError):
    """A setting that stops a program from starting; one line for the operator."""


# TOML's true arrives as a bool, an environment variable as anything people write.
FLAG_WORDS = {"true": True, "yes": True, "on": True, "1": True,
              "false": False, "no": False, "off": False, "0": False}


def _coerce(cls: type, name: str, raw: Any) -> Any:
    kind = type(getattr(cls(), name))
    if kind is bool:
        try:
            return FLAG_WORDS[str(raw).strip().lower()]
        except KeyError:
            raise SettingsError(f"setting {name}={raw!r} is not true or false") from None
    try:
        if kind is float:
            return float(raw)
        if kind is int:
            return int(raw)
    except (TypeError, ValueError):
        raise SettingsError(f"setting {name}={raw!r} is not a {kind.__name__}") from None
    return str(raw)


def _known(cls: type, aliases: Mapping[str, str], name: str, source: str) -> str:
    name = aliases.get(name, name)
    if name not in {f.name for f in fields(cls)}:
        raise SettingsError(f"unknown setting {name!r} in {source}")
    return name


def from_file(cls: type, aliases: Mapping[str, str], path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except OSError as error:
        raise SettingsError(f"cannot read config file {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise SettingsError(f"config file {path} is not valid TOML: {error}") from None
    return {_known(cls, aliases, key, str(path)): value for key, value in data.items()}


def from_env(cls: type, aliases: Mapping[str, str], prefix: str,
             env: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, value in env.items():
        if not key.startswith(prefix) or key == f"{prefix}CONFIG":
            continue
        values[_known(cls, aliases, key[len(prefix):].lower(), key)] = value
    return values


def layered(
    cls: type[T], prefix: str, cli: Mapping[str, Any], env: Mapping[str, str],
    config_file: str | None, aliases: Mapping[str, str] | None = None,
) -> T:
    """An instance of the dataclass `cls` from every source, unchecked."""
    aliases = aliases or {}
    values: dict[str, Any] = {}
    file_name = config_file or env.get(f"{prefix}CONFIG")
    if file_name:
        values.update(from_file(cls, aliases, Path(file_name)))
    values.update(from_env(cls, aliases, prefix, env))
    values.update({key: value for key, value in cli.items() if value is not None})
    return cls(**{name: _coerce(cls, name, value) for name, value in values.items()})

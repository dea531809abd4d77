"""Each setting is declared once, as a field of a program's frozen settings dataclass
whose metadata says how an operator writes it. Its TOML key, environment variable and
`--flag` are derived from that one declaration, so no setting can be missing from a
source or spelled two ways, and the help that man pages are made from always states the
real default."""

import argparse
import math
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import Field, dataclass, field, fields
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T")
# A program's settings dataclass.
S = TypeVar("S", bound="DataclassInstance")
# Turns a value as an operator wrote it (TOML's typed value, an environment variable's
# text, a flag's) into the setting's; a ValueError says what it is not, e.g. "a number".
Parse = Callable[[object], Any]
METADATA_KEY = "zk_sensor.setting"

# TOML's true arrives as a bool, an environment variable as anything people write.
FLAG_WORDS = {"true": True, "yes": True, "on": True, "1": True,
              "false": False, "no": False, "off": False, "0": False}


def text(raw: object) -> str:
    return str(raw)


def whole(raw: object) -> int:
    if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
        raise ValueError("a whole number")
    try:
        return int(raw) if isinstance(raw, int | float) else int(str(raw).strip())
    except (ValueError, OverflowError):
        raise ValueError("a whole number") from None


def number(raw: object) -> float:
    try:
        value = float(str(raw))
    except ValueError:
        raise ValueError("a number") from None
    if not math.isfinite(value):
        raise ValueError("a finite number")
    return value


def optional_number(raw: object) -> float | None:
    """Unset is None; an empty value (ZK_SENSOR_SENSOR_MIN=) unsets one from the file."""
    return None if raw is None or str(raw).strip() == "" else number(raw)


def switch(raw: object) -> bool:
    try:
        return FLAG_WORDS[str(raw).strip().lower()]
    except KeyError:
        raise ValueError("true or false") from None


def one_of(choices: tuple[str, ...]) -> Parse:
    def choose(raw: object) -> str:
        if str(raw) not in choices:
            raise ValueError(f"one of {', '.join(choices)}")
        return str(raw)
    return choose


PARSERS: dict[type, Parse] = {str: text, int: whole, float: number, bool: switch}


@dataclass(frozen=True)
class About:
    """How operators write one setting, and what its help says."""

    help: str
    parse: Parse
    flag: str
    secret: bool
    aliases: tuple[str, ...]
    choices: tuple[str, ...]
    shown_default: str


def setting(default: T, help: str, *, parse: Parse | None = None, flag: str = "",
            aliases: tuple[str, ...] = (), choices: tuple[str, ...] = (),
            secret: bool = False, shown_default: str = "") -> T:
    """A settings dataclass field. `help` says what it is and its unit; the default is
    added to it. A `secret` gets no flag, since every user can read a command line, and
    stays out of repr; `flag` is only for a spelling older than `--name-with-dashes`."""
    parse = parse or (one_of(choices) if choices else PARSERS[type(default)])
    about = About(help, parse, flag, secret, aliases, choices, shown_default)
    return field(default=default, repr=not secret, metadata={METADATA_KEY: about})


@dataclass(frozen=True)
class Spec:
    """One setting of a table as declared, from which its TOML key, environment
    variable and flag are derived."""
    name: str
    default: Any
    about: About

    @property
    def flag(self) -> str | None:
        if self.about.secret:
            return None
        return self.about.flag or "--" + self.name.replace("_", "-")

    @property
    def keys(self) -> tuple[str, ...]:
        """What the TOML file may call it; the environment variables follow the same."""
        return (self.name, *self.about.aliases)

    @property
    def is_switch(self) -> bool:
        return self.about.parse is switch

    def help(self) -> str:
        shown = self.about.shown_default or describe(self.default)
        return f"{self.about.help} (default: {shown})".replace("%", "%%")


def describe(value: object) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value) if value != "" else "none"


def _spec(item: Field[Any]) -> Spec | None:
    about = item.metadata.get(METADATA_KEY)
    return Spec(item.name, item.default, about) if isinstance(about, About) else None


@dataclass(frozen=True)
class Table(Generic[S]):
    """One program's settings: its dataclass and its environment variables' prefix."""

    cls: type[S]
    env_prefix: str

    def __iter__(self) -> Iterator[Spec]:
        for item in fields(self.cls):
            spec = _spec(item)
            if spec is not None:
                yield spec

    def find(self, key: str) -> Spec | None:
        """The setting a TOML key, or an environment variable's name less the prefix
        and lowered, stands for."""
        return next((spec for spec in self if key in spec.keys), None)

    def env_names(self, spec: Spec) -> list[str]:
        return [f"{self.env_prefix}{key.upper()}" for key in spec.keys]

    @property
    def config_variable(self) -> str:
        return f"{self.env_prefix}CONFIG"

    def add_arguments(self, parser: argparse.ArgumentParser,
                      names: Collection[str] | None = None) -> None:
        """A flag for each setting (of `names` only, if given) but the secrets, as raw
        text: the layering parses it, so that a bad value is one line naming the flag."""
        for spec in self:
            if spec.flag is None or (names is not None and spec.name not in names):
                continue
            choices = spec.about.choices
            if spec.is_switch:
                parser.add_argument(spec.flag, dest=spec.name, help=spec.help(),
                                    action=argparse.BooleanOptionalAction)
            else:
                parser.add_argument(spec.flag, dest=spec.name, help=spec.help(),
                                    metavar="{" + ",".join(choices) + "}" if choices else None)

    def parser(self, prog: str, summary: str) -> argparse.ArgumentParser:
        """A program's parser: `--config` and a flag for every setting, with the layering
        said once in its description and the secrets in its epilog."""
        parser = argparse.ArgumentParser(
            prog=prog, description=f"{summary} Every setting is also a key of the TOML file "
            f"(--config) and a {self.env_prefix}<NAME> environment variable; the command line "
            "wins over the environment, which wins over the file.",
            epilog=self.secrets_note())
        parser.add_argument("--config",
                            help=f"TOML file of settings (also {self.config_variable})")
        self.add_arguments(parser)
        return parser

    def secrets_note(self) -> str:
        """For the parser's epilog: the settings that have no flag, and where they go."""
        secrets = [spec for spec in self if spec.flag is None]
        return " ".join(
            f"{spec.name}: {spec.about.help} (default: {describe(spec.default)}), only in "
            f"the TOML file or {self.env_names(spec)[0]}, since a command line is visible "
            "to every user." for spec in secrets)

    def from_args(self, args: argparse.Namespace) -> Mapping[str, Any]:
        return {spec.name: getattr(args, spec.name) for spec in self
                if getattr(args, spec.name, None) is not None}

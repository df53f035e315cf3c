"""Settings read from the environment: how one is declared, parsed and refused.

Both services (the hub and init in `gpuhub.settings`, the monitor in `gpu_monitor.settings`)
declare each variable they read once, as a `Setting`: its name, its default and its parser.
The operator's documentation of the same variables (the example file, the README's table) is
generated from the catalogue in `gpuhub.catalogue`, which lists these declarations with their
help; a fast test checks that both generated texts and the compose file agree with it.

A wrong value is a `ConfigError` naming the variable, shown as one line
(`gpuhub: configuration error: VARIABLE: what is wrong and what to set`). An empty value means
unset: Compose passes `${VAR:-}` through as an empty string.

This module imports nothing outside the standard library: the hub image uses it without the
monitor's dependencies.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")


class ConfigError(Exception):
    """A setting is missing or wrong. `str()` is the one line shown to the operator."""

    def __init__(self, variable: str, message: str):
        self.variable = variable
        self.message = message
        super().__init__(f"{variable}: {message}")


class Invalid(ValueError):
    """Raised by a parser: the message says what was expected (the variable is added)."""


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One environment variable: its name, its parser and the value when it is empty.

    `default` may be a function of the whole environment (a default that depends on another
    variable, e.g. per-user subdomains on unless DOMAIN is set)."""

    name: str
    parse: Callable[[str], T]
    default: T | Callable[[Mapping[str, str]], T]
    readers: tuple[str, ...] = field(default=(), compare=False)

    def raw(self, environ: Mapping[str, str]) -> str:
        return environ.get(self.name, "").strip()

    def read(self, environ: Mapping[str, str]) -> T:
        raw = self.raw(environ)
        if not raw:
            return self.default(environ) if callable(self.default) else self.default  # type: ignore[return-value]
        try:
            return self.parse(raw)
        except Invalid as e:
            raise ConfigError(self.name, str(e)) from None


# ---- parsers: each takes the non-empty, stripped value ----------------------------------------

def text(value: str) -> str:
    return value


SWITCH = {"1": True, "true": True, "yes": True, "on": True,
          "0": False, "false": False, "no": False, "off": False}


def switch(value: str) -> bool:
    try:
        return SWITCH[value.lower()]
    except KeyError:
        raise Invalid(f"expected true or false, got {value!r}") from None


def names(value: str) -> frozenset[str]:
    """A comma-separated list (blanks around items ignored)."""
    return frozenset(item.strip() for item in value.split(",") if item.strip())


NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def node_name(value: str) -> str:
    """A node's id: Swarm's node id, or a name of letters, digits and . _ - (at most 64)."""
    if not NODE_NAME.fullmatch(value):
        raise Invalid(f"{value!r} is not a node name (letters, digits and . _ -, at most 64, e.g. gpu-2)")
    return value


LABEL_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,126}")


def labels(value: str) -> dict[str, str]:
    """Node labels, comma-separated: `gpu=a100,large-memory` (a label without `=` has the value
    ""). Keys as Docker writes them: letters, digits and `. _ / -`, starting with a letter or digit."""
    found: dict[str, str] = {}
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        key, _, val = item.partition("=")
        key, val = key.strip(), val.strip()
        if not LABEL_KEY.fullmatch(key):
            raise Invalid(f"{key!r} is not a label name (letters, digits and . _ / -, e.g. gpu=a100)")
        if key in found:
            raise Invalid(f"label {key!r} is given twice")
        found[key] = val
    return found


def one_of(*choices: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value.lower() not in choices:
            raise Invalid(f"unknown value {value!r}; choose one of {', '.join(choices)}")
        return value.lower()
    return parse


def _whole(value: str) -> bool:
    """ASCII digits only: refuses nan, inf, 1e309, signs and fractions, and what str.isdigit()
    alone lets through (superscripts, other scripts' digits), which int() then refuses with a
    traceback instead of the variable's name."""
    return value.isascii() and value.isdigit()


def whole_number(minimum: int = 0, what: str = "a whole number") -> Callable[[str], int]:
    def parse(value: str) -> int:
        if not _whole(value):
            raise Invalid(f"expected {what}, got {value!r}")
        if int(value) < minimum:
            raise Invalid(f"must be at least {minimum}, got {value}")
        return int(value)
    return parse


def number(minimum: float) -> Callable[[str], float]:
    """A finite decimal number of at least `minimum`. float() reads "nan", "inf" and "1e999":
    a NaN interval compares false with everything, an infinite one never ends."""
    def parse(value: str) -> float:
        try:
            result = float(value)
        except ValueError:
            raise Invalid(f"expected a number, got {value!r}") from None
        if not math.isfinite(result):
            raise Invalid(f"expected a finite number, got {value!r}")
        if result < minimum:
            raise Invalid(f"must be at least {minimum:g}, got {value}")
        return result
    return parse


def port(value: str) -> int:
    if not _whole(value) or not 0 < int(value) < 65536:
        raise Invalid(f"expected a TCP port number (1-65535), got {value!r}")
    return int(value)


def url(value: str) -> str:
    if not value.startswith(("https://", "http://")):
        raise Invalid(f"expected an http(s) URL, got {value!r}")
    return value.rstrip("/")


def deployment_name(value: str) -> str:
    """Compose's rule for project names, which is where the default comes from. Also safe in
    a Docker label filter (`label=key=value` splits at the first "=") and in container names."""
    if not (value[:1].isascii() and value[:1].isalnum() and len(value) <= 63
            and all(c.isascii() and (c.isdigit() or c.islower() or c in "-_") for c in value)):
        raise Invalid("expected a name of lowercase letters, digits, '-' and '_' "
                      f"(like a Compose project name), got {value[:80]!r}")
    return value


# ---- secrets -----------------------------------------------------------------------------------

def read_secret_file(variable: str, path: str | os.PathLike[str], min_length: int = 1,
                     hint: str = "") -> str:
    """A secret from a file, refusing a missing, unreadable or short one. The secret itself is
    never shown. `hint` says who makes the file (e.g. "the init service writes it")."""
    suffix = f"; {hint}" if hint else ""
    try:
        value = Path(path).read_text().strip()
    except FileNotFoundError:
        raise ConfigError(variable, f"file {path} does not exist{suffix}") from None
    except OSError as e:
        raise ConfigError(variable, f"cannot read {path}: {e.strerror}{suffix}") from None
    if not value:
        raise ConfigError(variable, f"file {path} is empty{suffix}")
    if len(value) < min_length:
        raise ConfigError(variable, f"{path} holds fewer than {min_length} characters")
    return value

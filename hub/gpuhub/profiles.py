"""Image profiles: what a person may start, declared in `config/profiles.yaml`, never in code.

`load_profiles(path)` validates the file against a schema that rejects unknown keys (a typo
stops the hub at startup with the key's location), and `resolve_options(profiles, options)`
turns untrusted spawn options, from the form or the REST API, into a `Choice` or raises
`OptionsError` with a sentence for the person who asked. Both are pure, so they are tested
as tables of cases without Docker.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema
import yaml

from gpu_monitor.env import ConfigError

NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,31}$"
SIZE_PATTERN = r"^[0-9]+(\.[0-9]+)?[kmgKMG]?$"
# a node label's name, as GPUHUB_NODE_LABELS and Docker write them
LABEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,126}$"

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["profiles"],
    "properties": {
        "default_profile": {"type": "string"},
        "profiles": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "display_name", "image"],
                "properties": {
                    "name": {"type": "string", "pattern": NAME_PATTERN},
                    "display_name": {"type": "string", "minLength": 1},
                    "description": {"type": "string"},
                    "image": {"type": "string", "minLength": 1},
                    "gpus": {
                        "type": "array",
                        "minItems": 1,
                        "uniqueItems": True,
                        "items": {"type": "integer", "minimum": 0, "maximum": 64},
                    },
                    "cpu_limit": {"type": "number", "exclusiveMinimum": 0},
                    "mem_limit": {"type": "string", "pattern": SIZE_PATTERN},
                    "shm_size": {"type": "string", "pattern": SIZE_PATTERN},
                    "pids_limit": {"type": "integer", "minimum": 64},
                    "tmp_size": {"type": "string", "pattern": SIZE_PATTERN},
                    "node_labels": {
                        "type": "object",
                        "maxProperties": 32,
                        "propertyNames": {"pattern": LABEL_PATTERN},
                        "additionalProperties": {"type": "string", "maxLength": 255},
                    },
                },
            },
        },
    },
}

# The only keys a spawn request may carry. Anything else (notably "image") is refused.
OPTION_KEYS = frozenset({"profile", "gpus"})


class OptionsError(ValueError):
    """Spawn options a person sent are not acceptable; `str()` tells them why."""


@dataclass(frozen=True)
class Profile:
    name: str
    display_name: str
    image: str
    description: str = ""
    gpus: tuple[int, ...] = (0,)
    cpu_limit: float | None = None
    mem_limit: str | None = None
    shm_size: str | None = None
    pids_limit: int = 1024
    # each of the writable tmpfs (/tmp, /var/tmp) of a container whose root filesystem is read-only
    tmp_size: str = "1G"
    # a kind of node its devices must come from (a GPU model, "large memory"): every label must
    # be on the node (GPUHUB_NODE_LABELS on a single host)
    node_labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Profiles:
    profiles: tuple[Profile, ...]
    default: str

    def get(self, name: str) -> Profile | None:
        return next((p for p in self.profiles if p.name == name), None)


@dataclass(frozen=True)
class Choice:
    profile: Profile
    gpus: int


def parse_profiles(data: Any, source: str = "profiles") -> Profiles:
    try:
        jsonschema.validate(data, SCHEMA)
    except jsonschema.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        raise ConfigError("GPUHUB_PROFILES_FILE", f"{source}: at {where}: {e.message}") from None
    profiles = tuple(
        Profile(**{**entry, "gpus": tuple(sorted(entry.get("gpus", [0]))),
                   "node_labels": tuple(sorted((entry.get("node_labels") or {}).items()))})
        for entry in data["profiles"]
    )
    names = [p.name for p in profiles]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(
            "GPUHUB_PROFILES_FILE", f"{source}: profile names must be unique: {', '.join(duplicates)}"
        )
    default = data.get("default_profile", names[0])
    if default not in names:
        raise ConfigError(
            "GPUHUB_PROFILES_FILE",
            f"{source}: default_profile {default!r} is not one of the profiles ({', '.join(names)})",
        )
    return Profiles(profiles=profiles, default=default)


def size_in_bytes(size: str) -> int:
    """A size as profiles write it (SIZE_PATTERN: "512M", "1.5G", "4096"), in bytes."""
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([kmgKMG]?)", size)
    if match is None:
        raise ValueError(f"not a size like 512M or 2G: {size!r}")
    number, unit = match.groups()
    return int(float(number) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit.lower()])


def load_profiles(path: str) -> Profiles:
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError("GPUHUB_PROFILES_FILE", f"{path} does not exist") from None
    except yaml.YAMLError as e:
        raise ConfigError("GPUHUB_PROFILES_FILE", f"{path} is not valid YAML: {e}") from None
    return parse_profiles(data, path)


def _gpu_count(value: Any) -> int:
    # The form sends strings, the REST API sends JSON: accept an int or a string of digits,
    # and nothing that merely coerces to one (bools, floats, " 1 ").
    if isinstance(value, bool):
        raise OptionsError(f"gpus must be a whole number, got {value!r}")
    if isinstance(value, int):
        count = value
    elif isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,3}", value):
        count = int(value)
    else:
        raise OptionsError(f"gpus must be a whole number, got {value!r}"[:200])
    if count < 0:
        raise OptionsError(f"gpus cannot be negative, got {count}")
    return count


def resolve_options(profiles: Profiles, options: Mapping[str, Any] | None) -> Choice:
    """Validate spawn options; with none, the default profile and no GPU."""
    options = options or {}
    if not isinstance(options, Mapping):
        raise OptionsError("spawn options must be a JSON object with 'profile' and 'gpus'")
    unknown = sorted(str(k) for k in options if k not in OPTION_KEYS)
    if unknown:
        raise OptionsError(
            f"unknown spawn option(s): {', '.join(unknown)[:200]}; "
            f"only {', '.join(sorted(OPTION_KEYS))} may be given (images come from profiles)"
        )
    name = options.get("profile", profiles.default)
    if not isinstance(name, str):
        raise OptionsError(f"profile must be a profile name, got {name!r}"[:200])
    profile = profiles.get(name)
    if profile is None:
        known = ", ".join(p.name for p in profiles.profiles)
        raise OptionsError(f"unknown profile {name[:64]!r}; choose one of: {known}")
    gpus = _gpu_count(options.get("gpus", profile.gpus[0]))
    if gpus not in profile.gpus:
        allowed = ", ".join(str(n) for n in profile.gpus)
        raise OptionsError(f"profile {profile.name!r} allows {allowed} GPU(s), not {gpus}")
    return Choice(profile=profile, gpus=gpus)

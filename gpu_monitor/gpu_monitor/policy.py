"""The GPU policy an operator writes in `config/gpu-policy.yaml`, validated at startup.

`load_policy(path)` reads the file, checks it against `SCHEMA` (unknown keys are refused, so a
typo stops the monitor with the key's location rather than being ignored) and returns the
allocator's `Policy` and the idle-reclaim settings. Pure apart from reading the file; tested as
a table of files in the fast tier.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jsonschema
import yaml

from .allocator import PLACEMENTS, Policy
from .env import ConfigError

VARIABLE = "GPUHUB_POLICY_FILE"
LIMIT = {"type": "object", "additionalProperties": False,
         "properties": {"max_gpus_per_user": {"type": "integer", "minimum": 0}}}
SHARING = {"oneOf": [
    {"const": "exclusive"},
    {"type": "object", "additionalProperties": False, "required": ["shared"],
     "properties": {"shared": {"type": "integer", "minimum": 1, "maximum": 256}}},
]}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "max_gpus_per_user": {"type": ["integer", "null"], "minimum": 0},
        "placement": {"enum": list(PLACEMENTS)},
        "profiles": {"type": "object", "additionalProperties": LIMIT},
        "groups": {"type": "object", "additionalProperties": LIMIT},
        "sharing": {"type": "object", "additionalProperties": False,
                    "properties": {"gpu": SHARING, "mig": SHARING, "cpu-slice": SHARING}},
        "idle_reclaim": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "enabled": {"type": "boolean"},
                "below_utilization": {"type": "number", "minimum": 0, "maximum": 1},
                "notice_after_minutes": {"type": "number", "exclusiveMinimum": 0},
                "stop_after_minutes": {"type": "number", "exclusiveMinimum": 0},
            },
        },
    },
}


@dataclass(frozen=True)
class IdleReclaim:
    """Stop a server whose devices sat below `below_utilization` for `stop_after_minutes`,
    after showing a notice from `notice_after_minutes` on. Off unless enabled."""

    enabled: bool = False
    below_utilization: float = 0.05
    notice_after_minutes: float = 30.0
    stop_after_minutes: float = 60.0


@dataclass(frozen=True)
class GPUPolicy:
    allocation: Policy
    idle_reclaim: IdleReclaim


def parse_policy(data: Any, source: str = "policy") -> GPUPolicy:
    if data is None:  # an empty file: the defaults
        data = {}
    try:
        jsonschema.validate(data, SCHEMA)
    except jsonschema.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        raise ConfigError(VARIABLE, f"{source}: at {where}: {e.message}") from None
    share = {kind: mode["shared"] for kind, mode in (data.get("sharing") or {}).items() if mode != "exclusive"}
    allocation = Policy(
        max_gpus_per_user=data.get("max_gpus_per_user"),
        max_gpus_per_profile={name: entry["max_gpus_per_user"]
                              for name, entry in (data.get("profiles") or {}).items() if "max_gpus_per_user" in entry},
        max_gpus_per_group={name: entry["max_gpus_per_user"]
                            for name, entry in (data.get("groups") or {}).items() if "max_gpus_per_user" in entry},
        share=share,
        placement=data.get("placement", "pack"),
    )
    idle = IdleReclaim(**(data.get("idle_reclaim") or {}))
    if idle.notice_after_minutes > idle.stop_after_minutes:
        raise ConfigError(VARIABLE, f"{source}: idle_reclaim: notice_after_minutes ({idle.notice_after_minutes:g}) "
                                     f"must not exceed stop_after_minutes ({idle.stop_after_minutes:g})")
    return GPUPolicy(allocation, idle)


def load_policy(path: str) -> GPUPolicy:
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(VARIABLE, f"{path} does not exist (config/gpu-policy.yaml ships one)") from None
    except yaml.YAMLError as e:
        raise ConfigError(VARIABLE, f"{path} is not valid YAML: {e}") from None
    return parse_policy(data, path)

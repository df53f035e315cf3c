"""Every setting the monitor service reads from its environment, read once and validated.

`load_settings(environ)` is the only place that reads environment variables; a wrong value stops
the monitor with one line naming the variable (`SettingError`). The operator-facing list is in
config/gpuhub.env.example (section "GPU monitor"); compose fixes the wiring ones.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .contract import SERVICE_PREFIX

BACKENDS = ("auto", "nvml", "cpu-slices")


class SettingError(Exception):
    def __init__(self, variable: str, message: str):
        self.variable = variable
        super().__init__(f"{variable}: {message}")


@dataclass(frozen=True)
class Settings:
    backend: str = "auto"
    cpu_slices: int = 2
    sample_seconds: float = 5.0
    reconcile_seconds: float = 60.0
    grace_seconds: float = 120.0
    flush_seconds: float = 60.0
    policy_file: str = "/srv/gpuhub/config/gpu-policy.yaml"
    port: int = 8000
    service_prefix: str = SERVICE_PREFIX
    hub_api_url: str = "http://hub:8081/hub/api"
    api_token_file: str = "/srv/gpuhub/monitor-secrets/api_token"
    db_host: str = "db"
    db_name: str = "jupyterhub"
    db_user: str = "jupyterhub"
    db_password_file: str = "/run/gpuhub/db/password"
    docker_url: str = "unix:///var/run/docker.sock"
    # which stack's containers this monitor looks after (label org.gpuhub.deployment): two
    # stacks on one Docker daemon must never reconcile each other's containers
    deployment: str = "gpuhub"
    # the hub serves each user's server on a subdomain (GPUHUB_USER_SUBDOMAINS, validated by the
    # hub): this service's login cookie is then `__Host-` prefixed, as the hub's own, so that a
    # user's server cannot toss a cookie for the parent domain that the dashboard would read
    user_subdomains: bool = False

    def read_api_token(self) -> str:
        return _read_file("GPUHUB_MONITOR_TOKEN_FILE", self.api_token_file, min_length=32)

    def read_db_password(self) -> str:
        return _read_file("GPUHUB_DB_PASSWORD_FILE", self.db_password_file, min_length=1)


def _read_file(variable: str, path: str, min_length: int) -> str:
    try:
        value = Path(path).read_text().strip()
    except OSError as e:
        raise SettingError(variable, f"cannot read {path}: {e.strerror}; the init service writes it") from None
    if len(value) < min_length:
        raise SettingError(variable, f"{path} holds fewer than {min_length} characters")
    return value


def _get(environ: Mapping[str, str], name: str) -> str:
    return environ.get(name, "").strip()


def _number(environ: Mapping[str, str], name: str, default: float, minimum: float,
            integer: bool = False) -> float:
    raw = _get(environ, name)
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise SettingError(name, f"expected {kind}, got {raw!r}") from None
    if not math.isfinite(value):
        # float() reads "nan", "inf" and "1e999": a NaN grace compares false with everything
        # (every allocation would leak at once), an infinite one keeps devices forever
        raise SettingError(name, f"expected a finite number, got {raw!r}")
    if value < minimum:
        raise SettingError(name, f"must be at least {minimum:g}, got {raw}")
    return value


def load_settings(environ: Mapping[str, str] = os.environ) -> Settings:
    backend = _get(environ, "GPUHUB_MONITOR_BACKEND") or "auto"
    if backend not in BACKENDS:
        raise SettingError("GPUHUB_MONITOR_BACKEND", f"expected one of {', '.join(BACKENDS)}, got {backend!r}")
    defaults = Settings()
    return Settings(
        backend=backend,
        cpu_slices=int(_number(environ, "GPUHUB_CPU_SLICES", defaults.cpu_slices, 1, integer=True)),
        sample_seconds=_number(environ, "GPUHUB_MONITOR_SAMPLE_SECONDS", defaults.sample_seconds, 0.1),
        reconcile_seconds=_number(environ, "GPUHUB_MONITOR_RECONCILE_SECONDS", defaults.reconcile_seconds, 1),
        grace_seconds=_number(environ, "GPUHUB_MONITOR_GRACE_SECONDS", defaults.grace_seconds, 0),
        flush_seconds=_number(environ, "GPUHUB_MONITOR_FLUSH_SECONDS", defaults.flush_seconds, 1),
        policy_file=_get(environ, "GPUHUB_POLICY_FILE") or defaults.policy_file,
        hub_api_url=(_get(environ, "GPUHUB_HUB_API_URL") or defaults.hub_api_url).rstrip("/"),
        api_token_file=_get(environ, "GPUHUB_MONITOR_TOKEN_FILE") or defaults.api_token_file,
        db_host=_get(environ, "GPUHUB_DB_HOST") or defaults.db_host,
        db_password_file=_get(environ, "GPUHUB_DB_PASSWORD_FILE") or defaults.db_password_file,
        docker_url=_get(environ, "GPUHUB_MONITOR_DOCKER_URL") or defaults.docker_url,
        deployment=_deployment(environ),
        user_subdomains=_switch(environ, "GPUHUB_USER_SUBDOMAINS"),
    )


SWITCH = {"": False, "0": False, "false": False, "no": False, "off": False,
          "1": True, "true": True, "yes": True, "on": True}


def _switch(environ: Mapping[str, str], name: str) -> bool:
    raw = _get(environ, name).lower()
    if raw not in SWITCH:
        raise SettingError(name, f"expected true or false, got {raw!r}")
    return SWITCH[raw]


def _deployment(environ: Mapping[str, str]) -> str:
    value = _get(environ, "GPUHUB_DEPLOYMENT") or Settings.deployment
    # a Docker label filter `label=key=value` is split at the first "=": no "=" or "," in it,
    # and nothing a person could not read in a log
    if not all(c.isalnum() or c in "._-" for c in value) or len(value) > 63:
        raise SettingError("GPUHUB_DEPLOYMENT", f"expected letters, digits, '.', '_' or '-' "
                                                f"(at most 63), got {value[:80]!r}")
    return value

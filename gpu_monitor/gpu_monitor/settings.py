"""Every setting the monitor service reads from its environment, declared once, read once.

`load_settings(environ)` is the only place that reads environment variables; a wrong value stops
the monitor with one line naming the variable (`ConfigError`, gpu_monitor/gpu_monitor/env.py). Settings the
hub reads too (GPUHUB_DEPLOYMENT, GPUHUB_USER_SUBDOMAINS, DOMAIN, GPUHUB_POLICY_FILE,
GPUHUB_DB_PASSWORD_FILE) are declared here and imported by `gpuhub.settings`, so both services
parse them the same way. The operator's documentation comes from `gpuhub.catalogue`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from .contract import SERVICE_PREFIX
from .env import (
    ConfigError,
    Setting,
    deployment_name,
    labels,
    node_name,
    number,
    one_of,
    read_secret_file,
    switch,
    text,
    url,
    whole_number,
)

BACKENDS = ("auto", "nvml", "cpu-slices")
M = ("gpu-monitor",)
BOTH = ("hub", "init", "gpu-monitor")

# ---- read by the hub and the monitor -----------------------------------------------------------
DOMAIN = Setting("DOMAIN", text, "", ("proxy", "hub", "init", "gpu-monitor"))
DEPLOYMENT = Setting("GPUHUB_DEPLOYMENT", deployment_name, "gpuhub", BOTH)
# on by default without DOMAIN (every *.localhost name is the loopback address in browsers, and
# the local CA signs the wildcard), off by default with one (a wildcard DNS record and a DNS-01
# certificate are the operator's to set up; gpuhub.settings checks them)
USER_SUBDOMAINS = Setting("GPUHUB_USER_SUBDOMAINS", switch, lambda environ: not DOMAIN.read(environ),
                          ("proxy", *BOTH))
POLICY_FILE = Setting("GPUHUB_POLICY_FILE", text, "/srv/gpuhub/config/gpu-policy.yaml", BOTH)
DB_PASSWORD_FILE = Setting("GPUHUB_DB_PASSWORD_FILE", text, "/run/gpuhub/db/password", BOTH)
DB_HOST = Setting("GPUHUB_DB_HOST", text, "db", BOTH)

# ---- the monitor's own -------------------------------------------------------------------------
BACKEND = Setting("GPUHUB_MONITOR_BACKEND", one_of(*BACKENDS), "auto", M)
CPU_SLICES = Setting("GPUHUB_CPU_SLICES", whole_number(1), 2, M)
SAMPLE_SECONDS = Setting("GPUHUB_MONITOR_SAMPLE_SECONDS", number(0.1), 5.0, M)
RECONCILE_SECONDS = Setting("GPUHUB_MONITOR_RECONCILE_SECONDS", number(1), 60.0, M)
GRACE_SECONDS = Setting("GPUHUB_MONITOR_GRACE_SECONDS", number(0), 120.0, M)
FLUSH_SECONDS = Setting("GPUHUB_MONITOR_FLUSH_SECONDS", number(1), 60.0, M)
HUB_API_URL = Setting("GPUHUB_HUB_API_URL", url, "http://hub:8081/hub/api", M)
TOKEN_FILE = Setting("GPUHUB_MONITOR_TOKEN_FILE", text, "/srv/gpuhub/monitor-secrets/api_token", M)
DOCKER_URL = Setting("GPUHUB_MONITOR_DOCKER_URL", text, "unix:///var/run/docker.sock", M)
NODE_LABELS = Setting("GPUHUB_NODE_LABELS", labels, lambda environ: {}, M)
NODE_NAME = Setting("GPUHUB_NODE_NAME", node_name, "local", M)
NODE_TIMEOUT_SECONDS = Setting("GPUHUB_NODE_TIMEOUT_SECONDS", number(1), 30.0, M)
SWARM = Setting("GPUHUB_SWARM", switch, False, ("gpu-monitor", "hub"))

SETTINGS = (DOMAIN, DEPLOYMENT, USER_SUBDOMAINS, POLICY_FILE, DB_PASSWORD_FILE, DB_HOST, BACKEND, CPU_SLICES,
            SAMPLE_SECONDS, RECONCILE_SECONDS, GRACE_SECONDS, FLUSH_SECONDS, HUB_API_URL, TOKEN_FILE, DOCKER_URL,
            NODE_LABELS, NODE_NAME, NODE_TIMEOUT_SECONDS, SWARM)


@dataclass(frozen=True)
class Settings:
    backend: str
    cpu_slices: int
    sample_seconds: float
    reconcile_seconds: float
    grace_seconds: float
    flush_seconds: float
    policy_file: str
    hub_api_url: str
    api_token_file: str
    db_host: str
    db_password_file: str
    docker_url: str
    # which stack's containers this monitor looks after (label org.gpuhub.deployment): two
    # stacks on one Docker daemon must never reconcile each other's containers
    deployment: str
    # the hub serves each user's server on a subdomain: this service's login cookie is then
    # `__Host-` prefixed, as the hub's own, so that a user's server cannot toss a cookie for the
    # parent domain that the dashboard would read
    user_subdomains: bool
    # what kind of node this host is, for profiles' node_labels (a Swarm node's own labels later)
    node_labels: Mapping[str, str] = field(default_factory=dict)
    # this node's id in the inventory ("local" on a single host; Swarm's node id on a swarm)
    node_name: str = "local"
    # a node whose agent has not reported for this long is lost: its devices are offered to no one
    node_timeout_seconds: float = 30.0
    # on a swarm, read Swarm's node list from the manager's engine (drained, down, no agent)
    swarm: bool = False
    port: int = 8000
    service_prefix: str = SERVICE_PREFIX
    db_name: str = "jupyterhub"
    db_user: str = "jupyterhub"

    def read_api_token(self) -> str:
        return read_secret_file(TOKEN_FILE.name, self.api_token_file, min_length=32,
                                hint="the init service writes it")

    def read_db_password(self) -> str:
        return read_secret_file(DB_PASSWORD_FILE.name, self.db_password_file, hint="the init service writes it")


def load_settings(environ: Mapping[str, str] = os.environ) -> Settings:
    """Read and check every setting; raise ConfigError on the first problem."""
    settings = Settings(
        backend=BACKEND.read(environ),
        cpu_slices=CPU_SLICES.read(environ),
        sample_seconds=SAMPLE_SECONDS.read(environ),
        reconcile_seconds=RECONCILE_SECONDS.read(environ),
        grace_seconds=GRACE_SECONDS.read(environ),
        flush_seconds=FLUSH_SECONDS.read(environ),
        policy_file=POLICY_FILE.read(environ),
        hub_api_url=HUB_API_URL.read(environ),
        api_token_file=TOKEN_FILE.read(environ),
        db_host=DB_HOST.read(environ),
        db_password_file=DB_PASSWORD_FILE.read(environ),
        docker_url=DOCKER_URL.read(environ),
        deployment=DEPLOYMENT.read(environ),
        user_subdomains=USER_SUBDOMAINS.read(environ),
        node_labels=NODE_LABELS.read(environ),
        node_name=NODE_NAME.read(environ),
        node_timeout_seconds=NODE_TIMEOUT_SECONDS.read(environ),
        swarm=SWARM.read(environ),
    )
    if settings.node_timeout_seconds < 2 * settings.sample_seconds:
        raise ConfigError(NODE_TIMEOUT_SECONDS.name, (
            f"{settings.node_timeout_seconds:g} s is less than twice GPUHUB_MONITOR_SAMPLE_SECONDS "
            f"({settings.sample_seconds:g} s): agents report once per sample, so every node would be lost "
            "between two reports"))
    return settings


__all__ = ["ConfigError", "Settings", "SETTINGS", "load_settings"]

"""Assemble JupyterHub's configuration from validated settings.

`configure(c, settings)` fills a traitlets `Config` and is tested against an empty one; the
hub's `jupyterhub_config.py` only calls it. Secrets are read here from the files the init step
created (never from the command line), and the operator token from a file the operator supplied.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import bcrypt

from gpu_monitor.contract import ACCESS_SCOPE as MONITOR_ACCESS
from gpu_monitor.contract import SCOPE_ALLOCATE, SCOPE_READ_ALL
from gpu_monitor.contract import SERVICE_NAME as MONITOR_SERVICE
from gpu_monitor.dns import connector_options as dns_connector_options
from gpu_monitor.env import ConfigError, read_secret_file

from . import cryptcheck
from .auth import authenticator_config, warn_if_usernames_are_mutable
from .logs import LOGGING_CONFIG
from .monitor_client import MonitorClient
from .profiles import Profiles
from .settings import Settings
from .siteconfig import SiteConfig, load_site_config
from .subdomains import configure_subdomains

OPERATOR_SERVICE = "gpuhub-operator"
# The hub's identity towards the GPU monitor (its own container, a hub service).
ALLOCATOR_SERVICE = "gpuhub-spawner"

DEMO_NOTICE = (
    "Demo mode: anyone on this computer can log in as 'demo' through the bundled test "
    "provider. Configure a real OAuth provider (GPUHUB_AUTHENTICATOR) before sharing this hub."
)


def _operator_token(settings: Settings) -> str | None:
    path = Path(settings.operator_token_file)
    if not path.exists():
        return None
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise ConfigError(
            "GPUHUB_API_TOKEN_FILE",
            f"{path} is readable by others (mode {mode:o}); chmod 600 it",
        )
    token = read_secret_file("GPUHUB_API_TOKEN_FILE", str(path))
    if len(token) < 32:
        raise ConfigError("GPUHUB_API_TOKEN_FILE", f"{path} holds a token shorter than 32 characters")
    return token


def configure(c: Any, settings: Settings, check_crypt_key: bool = False) -> None:
    """Fill `c`. With `check_crypt_key` (the running hub), the crypt key's fingerprint is
    compared with the one recorded in the database (gpuhub.cryptcheck)."""
    secrets = Path(settings.secrets_dir)
    site = load_site_config(settings)
    profiles = site.profiles

    # --- where the hub listens and how it is reached --------------------------------------
    c.JupyterHub.bind_url = settings.public_url
    c.JupyterHub.public_url = settings.public_url
    c.JupyterHub.hub_bind_url = "http://0.0.0.0:8081"
    c.JupyterHub.hub_connect_url = "http://hub:8081"
    # the hub's requests to servers and services resolve names afresh (gpu_monitor.dns)
    c.JupyterHubHTTPClient.connector_options = dns_connector_options()
    # Restarting the hub must not stop anyone's server: they are picked up again.
    c.JupyterHub.cleanup_servers = False
    c.JupyterHub.cleanup_proxy = False
    # no query string (OAuth codes, ?token=) in the hub's log (gpuhub.logs)
    c.JupyterHub.logging_config = LOGGING_CONFIG
    # every user server on a host of its own (GPUHUB_USER_SUBDOMAINS)
    configure_subdomains(c, settings)

    # --- proxy: Traefik, driven through its file provider on a shared volume -------------
    # traefik_file, keeping service routes whose spec changed (gpuhub.proxy)
    c.JupyterHub.proxy_class = "gpuhub.proxy.TraefikFileProxy"
    c.TraefikFileProviderProxy.should_start = False
    c.TraefikFileProviderProxy.dynamic_config_file = settings.traefik_rules_file
    c.TraefikFileProviderProxy.traefik_api_url = settings.proxy_api_url
    c.TraefikFileProviderProxy.traefik_api_username = "jupyterhub"
    api_password = read_secret_file("GPUHUB_SECRETS_DIR", str(secrets / "proxy_api_password"))
    c.TraefikFileProviderProxy.traefik_api_password = api_password
    # Traefik checks this bcrypt hash on every API request, and jupyterhub-traefik-proxy polls
    # the API (two requests per poll) until a new route is loaded: at bcrypt's default cost
    # (12, ~0.2 s per check on a small host) that was ~0.7 s of every spawn. The password is 32
    # random bytes (init), so a low cost gives nothing up: there is nothing to guess.
    c.TraefikFileProviderProxy.traefik_api_hashed_password = bcrypt.hashpw(
        api_password.encode(), bcrypt.gensalt(rounds=4)).decode("ascii")
    c.TraefikFileProviderProxy.traefik_entrypoint = "websecure"
    c.TraefikFileProviderProxy.traefik_api_entrypoint = "api"

    # --- database ----------------------------------------------------------------------------
    # The password is read by libpq from a pgpass file (PGPASSFILE, written by the init step),
    # never put in the URL: JupyterHub logs the URL, and alembic builds its own engine from it.
    pgpass = settings.pgpass_file
    if not Path(pgpass).exists():
        raise ConfigError("GPUHUB_SECRETS_DIR", f"{pgpass} does not exist; the init service writes it")
    c.JupyterHub.db_url = (
        f"postgresql+psycopg2://{settings.db_user}@{settings.db_host}:5432/{settings.db_name}"
        f"?passfile={pgpass}&connect_timeout=10"
    )
    c.JupyterHub.db_kwargs = {"pool_pre_ping": True}
    c.JupyterHub.upgrade_db = True

    # --- secrets ----------------------------------------------------------------------------
    c.JupyterHub.cookie_secret_file = str(secrets / "cookie_secret")
    crypt_key = bytes.fromhex(read_secret_file("GPUHUB_SECRETS_DIR", str(secrets / "crypt_key")))
    c.CryptKeeper.keys = [crypt_key]
    if check_crypt_key:
        import psycopg2

        try:
            conn = cryptcheck.connect(settings)
        except psycopg2.OperationalError as e:
            raise ConfigError("GPUHUB_DB_HOST", f"cannot reach the database to check the crypt key: {e}".strip()) from None
        try:
            cryptcheck.check(conn, crypt_key)
        finally:
            conn.close()

    # --- login ------------------------------------------------------------------------------
    cls, traits = authenticator_config(settings)
    warn_if_usernames_are_mutable(settings)
    c.JupyterHub.authenticator_class = cls
    for name, value in traits.items():
        setattr(c[cls.__name__], name, value)
    if settings.demo:
        c.JupyterHub.template_vars = {"announcement": DEMO_NOTICE, "announcement_login": DEMO_NOTICE}

    # --- services and roles: the operator's token, the GPU monitor, the hub's allocator ------
    token = _operator_token(settings)
    services, roles = _services_and_roles(settings, site, token)
    c.JupyterHub.services = services
    c.JupyterHub.load_roles = roles
    c.JupyterHub.custom_scopes = {
        SCOPE_ALLOCATE: {"description": "Allocate and release devices through the GPU monitor."},
        SCOPE_READ_ALL: {"description": "See every GPU allocation, who holds it, and the monitor's metrics."},
    }

    # --- spawner ------------------------------------------------------------------------------
    # on a swarm, each server is a service on the node of its devices (gpuhub.swarm_spawner)
    c.JupyterHub.spawner_class = (
        "gpuhub.swarm_spawner.GPUSwarmSpawner" if settings.swarm else "gpuhub.spawner.GPUDockerSpawner")
    c.GPUDockerSpawner.profiles = profiles
    # config/templates/options_form.html, if the site made one (a missing directory is skipped)
    c.GPUDockerSpawner.additional_options_form_template_paths = [settings.form_templates_dir]
    c.GPUDockerSpawner.monitor_url = settings.monitor_url
    c.GPUDockerSpawner.deployment = settings.deployment
    c.GPUDockerSpawner.monitor_token = read_secret_file(
        "GPUHUB_SECRETS_DIR", str(secrets / "gpu_allocator_token"))
    if check_crypt_key:  # the running hub (its config loads inside its event loop)
        _check_profiles_have_nodes_at_start(settings, profiles, c.GPUDockerSpawner.monitor_token)
    c.DockerSpawner.network_name = settings.user_network
    c.DockerSpawner.use_internal_ip = True
    # Docker's names for servers and homes carry the deployment's name (GPUHUB_DEPLOYMENT, by
    # default the Compose project's, `gpuhub`: gpuhub-<user>, gpuhub-home-<user>), so that two
    # stacks on one daemon (a test stack beside a production hub) never share a container or a home
    c.DockerSpawner.prefix = settings.deployment
    # A stopped server's container is removed; its home volume stays. Every start therefore
    # gets the current profile's settings instead of an old container's.
    if not settings.swarm:  # a service is always removed (SwarmSpawner has no such setting)
        c.DockerSpawner.remove = True
    c.DockerSpawner.volumes = {f"{settings.deployment}-home-{{username}}": "/home/jovyan"}
    c.DockerSpawner.notebook_dir = "/home/jovyan"
    # on a swarm each node pulls the image from the registry it names
    c.DockerSpawner.pull_policy = "skip" if settings.swarm else "ifnotpresent"
    c.Spawner.default_url = "/lab"
    # A burst of logins: servers start a few at a time (each then answers in seconds instead of
    # all of them late), so the queue's wait is part of start_timeout (bench/login_burst.py).
    c.GPUDockerSpawner.start_concurrency = settings.start_concurrency
    c.Spawner.start_timeout = 300
    c.Spawner.http_timeout = 60


def _check_profiles_have_nodes_at_start(settings: Settings, profiles: Profiles, token: str) -> None:
    """A profile asking for a kind of node no node is gets a warning in the hub's log at start
    (gpuhub.spawner.check_profiles_have_nodes, in the background: the monitor may come later)."""
    if not settings.monitor_url or not any(p.node_labels for p in profiles.profiles):
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # not the hub itself (a tool that reads the configuration)
        return
    from .spawner import check_profiles_have_nodes  # dockerspawner: only where the hub runs

    client = MonitorClient(settings.monitor_url, token, 10.0)
    task = loop.create_task(check_profiles_have_nodes(client, profiles, logging.getLogger("JupyterHub")))
    _background.add(task)
    task.add_done_callback(_background.discard)


_background: set[asyncio.Task] = set()  # referenced until done


def _services_and_roles(settings: Settings, site: SiteConfig, operator_token: str | None) -> tuple[list[dict], list[dict]]:
    """The hub's services and the roles that give each exactly what it needs.

    - gpu-monitor: an external service behind the proxy at /services/gpu-monitor/; people log
      in to it through the hub (OAuth, no confirmation page). Its token may list users' servers
      (reconciliation) and nothing else.
    - gpuhub-spawner: the hub's own token towards the monitor, the only one (with admins) that
      may allocate and release.
    - every user may open the monitor; admins (GPUHUB_ADMIN_USERS) and the operator's token see
      every allocation and the metrics.
    """
    monitor = urlsplit(settings.monitor_url)
    monitor_token = read_secret_file(
        "GPUHUB_MONITOR_SECRETS_DIR", str(Path(settings.monitor_secrets_dir) / "api_token"))
    allocator_token = read_secret_file(
        "GPUHUB_SECRETS_DIR", str(Path(settings.secrets_dir) / "gpu_allocator_token"))
    services: list[dict] = [
        {
            "name": MONITOR_SERVICE,
            "url": f"{monitor.scheme}://{monitor.netloc}",
            "api_token": monitor_token,
            "oauth_client_id": f"service-{MONITOR_SERVICE}",
            "oauth_redirect_uri": f"/services/{MONITOR_SERVICE}/oauth_callback",
            "oauth_no_confirm": True,
            # what a person's login to the monitor may carry: read-all, if they have it
            "oauth_client_allowed_scopes": [SCOPE_READ_ALL],
            "display": True,
        },
        {"name": ALLOCATOR_SERVICE, "api_token": allocator_token, "display": False},
    ]
    monitor_admins: dict = {
        "name": "gpu-monitor-admin",
        "description": "See and manage every GPU allocation",
        "scopes": [SCOPE_ALLOCATE, SCOPE_READ_ALL, MONITOR_ACCESS],
        "users": sorted(settings.admin_users),
    }
    roles: list[dict] = [
        {"name": "user", "scopes": ["self", MONITOR_ACCESS]},
        {"name": "gpu-monitor-service", "description": "What the GPU monitor reads from the hub",
         # stopping servers only when the policy reclaims idle devices
         "scopes": ["list:users", "read:servers"] + (["servers"] if site.policy.idle_reclaim.enabled else []),
         "services": [MONITOR_SERVICE]},
        {"name": "gpu-allocator", "description": "Allocate and release GPUs (the hub's spawner)",
         "scopes": [SCOPE_ALLOCATE, MONITOR_ACCESS], "services": [ALLOCATOR_SERVICE]},
        monitor_admins,
    ]
    if settings.cull_idle_seconds:
        # jupyterhub-idle-culler, run by the hub (its token reaches it in the environment)
        services.append({"name": "idle-culler", "command": [
            sys.executable, "-m", "jupyterhub_idle_culler", f"--timeout={settings.cull_idle_seconds}"]})
        roles.append({"name": "idle-culler", "description": "Stop servers idle for GPUHUB_CULL_IDLE_SECONDS",
                      "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
                      "services": ["idle-culler"]})
    if operator_token:
        services.append({"name": OPERATOR_SERVICE, "api_token": operator_token})
        roles.append({"name": "admin", "services": [OPERATOR_SERVICE]})
        monitor_admins["services"] = [OPERATOR_SERVICE]
    return services, roles

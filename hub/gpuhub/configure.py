"""Assemble JupyterHub's configuration from validated settings.

`configure(c, settings)` fills a traitlets `Config` and is tested against an empty one; the
hub's `jupyterhub_config.py` only calls it. Secrets are read here from the files the init step
created (never from the command line), and the operator token from a file the operator supplied.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .auth import authenticator_config
from .profiles import load_profiles
from .settings import ConfigError, Settings, read_secret_file

OPERATOR_SERVICE = "gpuhub-operator"

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


def configure(c: Any, settings: Settings) -> None:
    secrets = Path(settings.secrets_dir)
    profiles = load_profiles(settings.profiles_file)

    # --- where the hub listens and how it is reached --------------------------------------
    c.JupyterHub.bind_url = settings.public_url
    c.JupyterHub.public_url = settings.public_url
    c.JupyterHub.hub_bind_url = "http://0.0.0.0:8081"
    c.JupyterHub.hub_connect_url = "http://hub:8081"
    # Restarting the hub must not stop anyone's server: they are picked up again.
    c.JupyterHub.cleanup_servers = False
    c.JupyterHub.cleanup_proxy = False

    # --- proxy: Traefik, driven through its file provider on a shared volume -------------
    c.JupyterHub.proxy_class = "traefik_file"
    c.TraefikFileProviderProxy.should_start = False
    c.TraefikFileProviderProxy.dynamic_config_file = settings.traefik_rules_file
    c.TraefikFileProviderProxy.traefik_api_url = settings.proxy_api_url
    c.TraefikFileProviderProxy.traefik_api_username = "jupyterhub"
    c.TraefikFileProviderProxy.traefik_api_password = read_secret_file("GPUHUB_SECRETS_DIR", str(secrets / "proxy_api_password"))
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
    c.CryptKeeper.keys = [bytes.fromhex(read_secret_file("GPUHUB_SECRETS_DIR", str(secrets / "crypt_key")))]

    # --- login ------------------------------------------------------------------------------
    cls, traits = authenticator_config(settings)
    c.JupyterHub.authenticator_class = cls
    for name, value in traits.items():
        setattr(c[cls.__name__], name, value)
    if settings.demo:
        c.JupyterHub.template_vars = {"announcement": DEMO_NOTICE, "announcement_login": DEMO_NOTICE}

    # --- operator automation token -------------------------------------------------------
    token = _operator_token(settings)
    if token:
        c.JupyterHub.services = [{"name": OPERATOR_SERVICE, "api_token": token}]
        c.JupyterHub.load_roles = [{"name": "admin", "services": [OPERATOR_SERVICE]}]

    # --- spawner ------------------------------------------------------------------------------
    c.JupyterHub.spawner_class = "gpuhub.spawner.GPUDockerSpawner"
    c.GPUDockerSpawner.profiles = profiles
    c.DockerSpawner.network_name = settings.user_network
    c.DockerSpawner.use_internal_ip = True
    c.DockerSpawner.prefix = "gpuhub"
    # A stopped server's container is removed; its home volume stays. Every start therefore
    # gets the current profile's settings instead of an old container's.
    c.DockerSpawner.remove = True
    c.DockerSpawner.volumes = {"gpuhub-home-{username}": "/home/jovyan"}
    c.DockerSpawner.notebook_dir = "/home/jovyan"
    c.DockerSpawner.pull_policy = "ifnotpresent"
    c.Spawner.default_url = "/lab"
    c.Spawner.start_timeout = 120
    c.Spawner.http_timeout = 60

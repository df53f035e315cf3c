"""One-shot preparation before the stack starts (`python -m gpuhub.init`, the `init` service).

Validates the hub's configuration, so a bad setting stops `docker compose up` before anything
else starts; creates the secrets that do not exist yet (mode 600; the database password owned
by the database's user); and writes or renews the local TLS certificate. Safe to run at every
start: what exists is kept.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from gpu_monitor.env import ConfigError, read_secret_file

from .secrets import ensure_secret
from .settings import load_settings
from .siteconfig import load_site_config
from .subdomains import certificate_names
from .tls import needs_certificate, write_localhost_certificate

POSTGRES_UID = 999  # the uid of `postgres` in the official image (and in our stand-in)
# gpu_allocator_token: the hub's token for the monitor's allocate API (service gpuhub-spawner)
HUB_SECRETS = ("cookie_secret", "crypt_key", "proxy_api_password", "gpu_allocator_token")
# The monitor's own API token (service gpu-monitor), in a volume only the hub and monitor mount.
MONITOR_SECRETS = ("api_token",)


def write_pgpass(settings) -> None:
    """The hub's libpq password file for the database (host:port:db:user:password, mode 600)."""
    password = read_secret_file("GPUHUB_DB_PASSWORD_FILE", settings.db_password_file)
    line = f"{settings.db_host}:5432:{settings.db_name}:{settings.db_user}:{password}\n"
    path = Path(settings.pgpass_file)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(line)
    os.replace(tmp, path)


def main(environ=os.environ) -> int:
    try:
        settings = load_settings(environ)
        load_site_config(settings)
    except ConfigError as e:
        print(f"gpuhub: configuration error: {e}", file=sys.stderr)
        return 1

    secrets = Path(settings.secrets_dir)
    for name in HUB_SECRETS:
        if ensure_secret(secrets / name):
            print(f"gpuhub init: created secret {name}")
    for name in MONITOR_SECRETS:
        if ensure_secret(Path(settings.monitor_secrets_dir) / name):
            print(f"gpuhub init: created the GPU monitor's secret {name}")
    password = Path(settings.db_password_file)
    if password.exists() and not os.access(password, os.W_OK):
        # given read-only (a Swarm secret, docker-compose.swarm.yml): used as it is
        print(f"gpuhub init: the database password is {password} (read-only, kept as given)")
    elif ensure_secret(password, uid=POSTGRES_UID, gid=POSTGRES_UID):
        print("gpuhub init: created the database password")
    write_pgpass(settings)

    certs = Path(settings.certs_dir)
    hostnames = certificate_names(settings)
    if needs_certificate(certs / "local.crt", names=hostnames):
        write_localhost_certificate(certs, secrets / "local-ca.key", hostnames)
        print(f"gpuhub init: wrote a certificate for {', '.join(hostnames)} signed by {certs}/local-ca.crt")

    mode = "demo login (bundled provider, localhost only)" if settings.demo else settings.authenticator
    print(f"gpuhub init: ready; login: {mode}; public URL {settings.public_url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

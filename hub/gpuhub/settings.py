"""Every setting the hub reads from its environment, declared once, read once, validated at startup.

`load_settings(environ)` is the only place that looks at environment variables. It returns a
frozen `Settings` or raises `ConfigError` naming the variable and what to set, so that a
misconfigured hub stops with one readable line instead of starting in a surprising state
(above all: never open to everyone because a variable is missing). Each variable is a
`Setting` (gpu_monitor/gpu_monitor/env.py: name, parser, default) declared below; those the GPU monitor
reads too are declared in gpu_monitor/gpu_monitor/settings.py and imported. The operator's documentation
(config/gpuhub.env.example, the README's table) is generated from gpuhub/catalogue.py.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gpu_monitor.env import ConfigError, Invalid, Setting, names, one_of, port, read_secret_file, switch, text, url, whole_number
from gpu_monitor.settings import DB_HOST, DB_PASSWORD_FILE, DEPLOYMENT, DOMAIN, POLICY_FILE, SWARM, USER_SUBDOMAINS

from .providers import PROVIDER_SETTINGS, PROVIDERS, OAuthSettings

# The login providers (one record each: gpuhub/providers.py).
AUTHENTICATORS = tuple(PROVIDERS)
GROUP_SUPPORT = frozenset(name for name, p in PROVIDERS.items() if p.groups is not None)

DEMO_USER = "demo"

H = ("hub", "init")


def _true_or_false(value: str) -> str:
    # exactly these two: images/netpolicy/netpolicy.sh compares the text
    if value not in ("true", "false"):
        raise Invalid(f"expected true or false, got {value!r}")
    return value


# ---- the declarations (documented in gpuhub/catalogue.py) ----------------------------------------
AUTHENTICATOR = Setting("GPUHUB_AUTHENTICATOR", one_of(*AUTHENTICATORS), "demo", ("hub", "init", "demo-oidc"))
OAUTH_CLIENT_ID = Setting("OAUTH_CLIENT_ID", text, "", H)
OAUTH_CLIENT_SECRET_FILE = Setting("OAUTH_CLIENT_SECRET_FILE", text, "/run/gpuhub/secrets/oauth_client_secret", H)
ALLOWED_USERS = Setting("GPUHUB_ALLOWED_USERS", names, frozenset(), H)
ALLOWED_GROUPS = Setting("GPUHUB_ALLOWED_GROUPS", names, frozenset(), H)
ALLOW_ALL = Setting("GPUHUB_ALLOW_ALL", switch, False, H)
ADMIN_USERS = Setting("GPUHUB_ADMIN_USERS", names, frozenset(), H)
LISTEN = Setting("GPUHUB_LISTEN", text, "127.0.0.1", ("compose", *H))
HTTPS_PORT = Setting("GPUHUB_HTTPS_PORT", port, 443, ("compose", *H))
ACME_DNS_PROVIDER = Setting("ACME_DNS_PROVIDER", text, "", ("proxy", *H))
API_TOKEN_FILE = Setting("GPUHUB_API_TOKEN_FILE", text, "/run/gpuhub/secrets/api_token", H)
PROFILES_FILE = Setting("GPUHUB_PROFILES_FILE", text, "/srv/gpuhub/config/profiles.yaml", H)
# a site's own spawn form (options_form.html), searched before gpuhub's; config/templates/
FORM_TEMPLATES_DIR = Setting("GPUHUB_FORM_TEMPLATES_DIR", text, "/srv/gpuhub/config/templates", H)
USER_NETWORK = Setting("GPUHUB_USER_NETWORK", text, "gpuhub-users", ("compose", *H))
USERS_SUBNET = Setting("GPUHUB_USERS_SUBNET", text, "10.213.240.0/20", ("compose", "netpolicy", *H))
USERS_IP_RANGE = Setting("GPUHUB_USERS_IP_RANGE", text, "10.213.248.0/21", ("compose", *H))
USERS_HUB_IP = Setting("GPUHUB_USERS_HUB_IP", text, "10.213.240.2", ("compose", "netpolicy", *H))
USERS_PROXY_IP = Setting("GPUHUB_USERS_PROXY_IP", text, "10.213.240.3", ("compose", "netpolicy", *H))
SERVER_TO_SERVER = Setting("GPUHUB_SERVER_TO_SERVER", _true_or_false, "false", ("compose", "netpolicy", *H))
CULL_IDLE_SECONDS = Setting("GPUHUB_CULL_IDLE_SECONDS", whole_number(0, "a whole number of seconds (0: off)"), 0, H)
# two per CPU: measured best for a burst of logins (bench/login_burst.py)
START_CONCURRENCY = Setting("GPUHUB_START_CONCURRENCY", whole_number(0, "a whole number of servers (0: no limit)"),
                            lambda environ: 2 * (os.cpu_count() or 1), H)
# wiring that docker-compose.yml fixes
SECRETS_DIR = Setting("GPUHUB_SECRETS_DIR", text, "/srv/gpuhub/secrets", H)
CERTS_DIR = Setting("GPUHUB_CERTS_DIR", text, "/srv/gpuhub/certs", H)
DB_NAME = Setting("GPUHUB_DB_NAME", text, "jupyterhub", H)
DB_USER = Setting("GPUHUB_DB_USER", text, "jupyterhub", H)
PROXY_API_URL = Setting("GPUHUB_PROXY_API_URL", url, "http://proxy-api:8099", H)
TRAEFIK_RULES_FILE = Setting("GPUHUB_TRAEFIK_RULES_FILE", text, "/srv/gpuhub/traefik/rules.yaml", H)
MONITOR_URL = Setting("GPUHUB_MONITOR_URL", url, "http://gpu-monitor:8000/services/gpu-monitor", H)
MONITOR_SECRETS_DIR = Setting("GPUHUB_MONITOR_SECRETS_DIR", text, "/srv/gpuhub/monitor-secrets", H)

SETTINGS = (
    AUTHENTICATOR, OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET_FILE, *PROVIDER_SETTINGS,
    ALLOWED_USERS, ALLOWED_GROUPS, ALLOW_ALL, ADMIN_USERS, DOMAIN, LISTEN, HTTPS_PORT, ACME_DNS_PROVIDER,
    USER_SUBDOMAINS, API_TOKEN_FILE, PROFILES_FILE, USER_NETWORK, USERS_SUBNET, USERS_IP_RANGE, USERS_HUB_IP,
    USERS_PROXY_IP, SERVER_TO_SERVER, DEPLOYMENT, POLICY_FILE, CULL_IDLE_SECONDS, START_CONCURRENCY, SWARM,
    SECRETS_DIR, CERTS_DIR, DB_HOST, DB_NAME, DB_USER, DB_PASSWORD_FILE, PROXY_API_URL, TRAEFIK_RULES_FILE,
    MONITOR_URL, MONITOR_SECRETS_DIR, FORM_TEMPLATES_DIR,
)


def _check_users_network(environ: Mapping[str, str]) -> None:
    """The users' network's addresses (docker-compose.yml): the hub and the proxy need fixed
    addresses in the subnet, outside the range servers get theirs from, for the network policy
    that keeps servers from connecting to one another (images/netpolicy/netpolicy.sh)."""
    SERVER_TO_SERVER.read(environ)

    def network(setting: Setting[str]) -> ipaddress.IPv4Network:
        value = setting.read(environ)
        try:
            return ipaddress.IPv4Network(value)
        except ValueError as error:
            raise ConfigError(setting.name, f"expected an IPv4 subnet like {setting.default}, "
                                            f"got {value!r} ({error})") from None

    subnet = network(USERS_SUBNET)
    servers = network(USERS_IP_RANGE)
    if not servers.subnet_of(subnet):
        raise ConfigError(USERS_IP_RANGE.name, f"{servers} is not inside GPUHUB_USERS_SUBNET {subnet}")
    seen: dict[ipaddress.IPv4Address, str] = {}
    for setting in (USERS_HUB_IP, USERS_PROXY_IP):
        name, value = setting.name, setting.read(environ)
        try:
            address = ipaddress.IPv4Address(value)
        except ValueError:
            raise ConfigError(name, f"expected an IPv4 address like {setting.default}, got {value!r}") from None
        if address not in subnet or address in (subnet.network_address, subnet.broadcast_address):
            raise ConfigError(name, f"{address} is not a host address of GPUHUB_USERS_SUBNET {subnet}")
        if address == subnet.network_address + 1:
            raise ConfigError(name, f"{address} is the subnet's gateway (Docker takes the first address)")
        if address in servers:
            raise ConfigError(name, f"{address} is inside GPUHUB_USERS_IP_RANGE {servers}, where "
                              "servers get their addresses; pick one outside it")
        if address in seen:
            raise ConfigError(name, f"{address} is also {seen[address]}")
        seen[address] = name


@dataclass(frozen=True)
class Settings:
    authenticator: str
    oauth: OAuthSettings
    allowed_users: frozenset[str]
    allowed_groups: frozenset[str]
    admin_users: frozenset[str]
    allow_all: bool
    public_host: str
    https_port: int
    listen: str
    user_network: str
    profiles_file: str
    form_templates_dir: str
    secrets_dir: str
    certs_dir: str
    operator_token_file: str
    db_host: str
    db_name: str
    db_user: str
    db_password_file: str
    proxy_api_url: str
    traefik_rules_file: str
    # the GPU monitor service: where the hub reaches it, and the volume holding its token
    monitor_url: str
    monitor_secrets_dir: str
    policy_file: str
    cull_idle_seconds: int  # jupyterhub-idle-culler's --timeout; 0: not run
    # servers starting at once (GPUDockerSpawner.start_concurrency); 0: no limit
    start_concurrency: int
    # servers as Swarm services on their devices' node (gpuhub.swarm_spawner)
    swarm: bool
    # labels every user container (org.gpuhub.deployment): the GPU monitor counts only its own
    deployment: str
    # every user server on a host of its own (gpuhub.subdomains)
    user_subdomains: bool

    @property
    def demo(self) -> bool:
        return self.authenticator == "demo"

    @property
    def pgpass_file(self) -> str:
        """libpq's password file for the hub, written by the init step beside the other secrets."""
        return str(Path(self.secrets_dir) / "pgpass")

    @property
    def public_url(self) -> str:
        port = "" if self.https_port == 443 else f":{self.https_port}"
        return f"https://{self.public_host}{port}/"

    @property
    def oauth_callback_url(self) -> str:
        return self.public_url + "hub/oauth_callback"


def _is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _oauth_settings(environ: Mapping[str, str], authenticator: str) -> OAuthSettings:
    provider = PROVIDERS[authenticator]
    if authenticator == "demo":
        return OAuthSettings(username_claim=provider.username_claim, **provider.read(environ))
    client_id = OAUTH_CLIENT_ID.read(environ)
    if not client_id:
        raise ConfigError(
            "OAUTH_CLIENT_ID",
            f"is required for GPUHUB_AUTHENTICATOR={authenticator}; "
            "set it to the client id of the OAuth app you registered with the provider",
        )
    secret_file = OAUTH_CLIENT_SECRET_FILE.read(environ)
    if not Path(secret_file).exists():
        raise ConfigError(
            "OAUTH_CLIENT_SECRET_FILE",
            f"{secret_file} does not exist, but GPUHUB_AUTHENTICATOR={authenticator} needs the "
            "OAuth client secret: put it in secrets/oauth_client_secret (chmod 600)",
        )
    client_secret = read_secret_file("OAUTH_CLIENT_SECRET_FILE", secret_file)
    return OAuthSettings(client_id=client_id, client_secret=client_secret,
                         **{"username_claim": provider.username_claim, **provider.read(environ)})


def _user_subdomains(environ: Mapping[str, str]) -> bool:
    """GPUHUB_USER_SUBDOMAINS (declared with the monitor's settings: on by default without
    DOMAIN), and what it needs with a DOMAIN: a DNS name, and a DNS-01 certificate."""
    if not USER_SUBDOMAINS.read(environ):
        return False
    domain = DOMAIN.read(environ)
    if domain:
        try:
            ipaddress.ip_address(domain)
        except ValueError:
            pass
        else:
            raise ConfigError("GPUHUB_USER_SUBDOMAINS", f"is on, but DOMAIN={domain} is an IP address, which "
                              "has no subdomains: set DOMAIN to a DNS name with a wildcard record "
                              "(*.<name>), or GPUHUB_USER_SUBDOMAINS=false")
        if not ACME_DNS_PROVIDER.read(environ):
            raise ConfigError("GPUHUB_USER_SUBDOMAINS", f"is on, which needs a certificate for *.{domain}, and "
                              "Let's Encrypt issues wildcards only over the DNS-01 challenge, not HTTP-01: "
                              "set ACME_DNS_PROVIDER and its credentials (README, 'Per-user subdomains'), "
                              "or GPUHUB_USER_SUBDOMAINS=false")
    return True


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the hub's settings; raise ConfigError on the first problem."""
    if environ is None:
        environ = os.environ

    authenticator = AUTHENTICATOR.read(environ)
    listen = LISTEN.read(environ)
    public_host = DOMAIN.read(environ) or "localhost"
    allowed_users = ALLOWED_USERS.read(environ)
    allowed_groups = ALLOWED_GROUPS.read(environ)
    admin_users = ADMIN_USERS.read(environ)
    allow_all = ALLOW_ALL.read(environ)

    if authenticator == "demo":
        if not _is_loopback(listen):
            raise ConfigError(
                "GPUHUB_LISTEN",
                f"is {listen}, but the demo login lets anyone pick a user name: configure a real "
                "provider with GPUHUB_AUTHENTICATOR, or listen on 127.0.0.1 only",
            )
        if allow_all:
            raise ConfigError("GPUHUB_ALLOW_ALL", "cannot be used with the demo login")
        allowed_users = allowed_users or frozenset({DEMO_USER})
        admin_users = admin_users or frozenset({DEMO_USER})
    else:
        if allowed_groups and authenticator not in GROUP_SUPPORT:
            raise ConfigError(
                "GPUHUB_ALLOWED_GROUPS",
                f"is not supported with GPUHUB_AUTHENTICATOR={authenticator}; "
                "list the people in GPUHUB_ALLOWED_USERS instead",
            )
        if not (allowed_users or allowed_groups or allow_all):
            raise ConfigError(
                "GPUHUB_ALLOWED_USERS",
                "no one is allowed to log in: set GPUHUB_ALLOWED_USERS and/or "
                "GPUHUB_ALLOWED_GROUPS (or GPUHUB_ALLOW_ALL=true to admit every account the "
                "provider knows, deliberately)",
            )

    _check_users_network(environ)

    return Settings(
        authenticator=authenticator,
        oauth=_oauth_settings(environ, authenticator),
        allowed_users=allowed_users,
        allowed_groups=allowed_groups,
        admin_users=admin_users,
        allow_all=allow_all,
        public_host=public_host,
        https_port=HTTPS_PORT.read(environ),
        listen=listen,
        user_network=USER_NETWORK.read(environ),
        profiles_file=PROFILES_FILE.read(environ),
        form_templates_dir=FORM_TEMPLATES_DIR.read(environ),
        secrets_dir=SECRETS_DIR.read(environ),
        certs_dir=CERTS_DIR.read(environ),
        operator_token_file=API_TOKEN_FILE.read(environ),
        db_host=DB_HOST.read(environ),
        db_name=DB_NAME.read(environ),
        db_user=DB_USER.read(environ),
        db_password_file=DB_PASSWORD_FILE.read(environ),
        proxy_api_url=PROXY_API_URL.read(environ),
        traefik_rules_file=TRAEFIK_RULES_FILE.read(environ),
        monitor_url=MONITOR_URL.read(environ) + "/",
        monitor_secrets_dir=MONITOR_SECRETS_DIR.read(environ),
        policy_file=POLICY_FILE.read(environ),
        cull_idle_seconds=CULL_IDLE_SECONDS.read(environ),
        start_concurrency=START_CONCURRENCY.read(environ),
        swarm=SWARM.read(environ),
        deployment=DEPLOYMENT.read(environ),
        user_subdomains=_user_subdomains(environ),
    )

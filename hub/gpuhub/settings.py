"""Every setting the hub reads from its environment, read once and validated at startup.

`load_settings(environ)` is the only place that looks at environment variables. It returns a
frozen `Settings` or raises `ConfigError` naming the variable and what to set, so that a
misconfigured hub stops with one readable line instead of starting in a surprising state
(above all: never open to everyone because a variable is missing). The operator-facing
documentation of each variable is `config/gpuhub.env.example`; keep the two in step.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

AUTHENTICATORS = ("demo", "generic", "github", "gitlab", "google", "azuread")

# Providers whose group/organisation membership can be checked (what a "group" means for each
# is documented in config/gpuhub.env.example).
GROUP_SUPPORT = frozenset({"demo", "generic", "github", "gitlab", "azuread"})

DEMO_USER = "demo"

# The claim that becomes the hub's username, per provider. Two people must never get the same
# username (they would share one account, admin rights included), and a username should not
# change under a person. So where the provider has a stable, unique identifier, it is the
# default: OpenID Connect's `sub` (the only claim the specification makes stable and unique per
# provider) and Azure AD's `oid` (the object id, unique in the tenant). OIDC_USERNAME_CLAIM
# changes them (generic and azuread). GitHub, GitLab and Google: their unique login names
# (login, username, e-mail), which their owners can change; see README, "Usernames".
USERNAME_CLAIMS = {
    "demo": "sub",
    "generic": "sub",
    "azuread": "oid",
    "github": "login",
    "gitlab": "username",
    "google": "email",
}
# Claims that identify a person for good; the others can change hands (gpuhub.auth warns).
STABLE_CLAIMS = frozenset({"sub", "oid"})
DEFAULT_CLIENT_SECRET_FILE = "/run/gpuhub/secrets/oauth_client_secret"


class ConfigError(Exception):
    """A setting is missing or wrong. `str()` is the one line shown to the operator."""

    def __init__(self, variable: str, message: str):
        self.variable = variable
        self.message = message
        super().__init__(f"{variable}: {message}")


def _clean(environ: Mapping[str, str], name: str) -> str:
    """A variable's value with surrounding blanks removed; empty means unset.

    Compose passes `${VAR:-}` through as an empty string, so empty and unset must mean the same.
    """
    return environ.get(name, "").strip()


def _list(environ: Mapping[str, str], name: str) -> frozenset[str]:
    return frozenset(item.strip() for item in _clean(environ, name).split(",") if item.strip())


def _bool(environ: Mapping[str, str], name: str, default: bool = False) -> bool:
    value = _clean(environ, name).lower()
    if not value:
        return default
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(name, f"expected true or false, got {value!r}")


def _whole_number(value: str) -> bool:
    """ASCII digits only. Refuses nan, inf, -inf, 1e309, signs and fractions, and also what
    str.isdigit() alone lets through: superscripts ("²", which int() then refuses with a
    traceback instead of the variable's name) and other scripts' digits."""
    return value.isascii() and value.isdigit()


def _port(environ: Mapping[str, str], name: str, default: int) -> int:
    value = _clean(environ, name)
    if not value:
        return default
    if not _whole_number(value) or not 0 < int(value) < 65536:
        raise ConfigError(name, f"expected a TCP port number (1-65535), got {value!r}")
    return int(value)


def _seconds(environ: Mapping[str, str], name: str) -> int:
    return _count(environ, name, 0, "a whole number of seconds (0: off)")


def _count(environ: Mapping[str, str], name: str, default: int, what: str = "a whole number") -> int:
    value = _clean(environ, name)
    if not value:
        return default
    if not _whole_number(value):
        raise ConfigError(name, f"expected {what}, got {value!r}")
    return int(value)


def _check_users_network(environ: Mapping[str, str]) -> None:
    """The users' network's addresses (docker-compose.yml): the hub and the proxy need fixed
    addresses in the subnet, outside the range servers get theirs from, for the network policy
    that keeps servers from connecting to one another (images/netpolicy/netpolicy.sh)."""
    isolation = _clean(environ, "GPUHUB_SERVER_TO_SERVER") or "false"
    if isolation not in {"true", "false"}:
        raise ConfigError("GPUHUB_SERVER_TO_SERVER", f"expected true or false, got {isolation!r}")

    def network(name: str, default: str) -> ipaddress.IPv4Network:
        value = _clean(environ, name) or default
        try:
            return ipaddress.IPv4Network(value)
        except ValueError as error:
            raise ConfigError(name, f"expected an IPv4 subnet like {default}, got {value!r} ({error})") from None

    subnet = network("GPUHUB_USERS_SUBNET", "10.213.240.0/20")
    servers = network("GPUHUB_USERS_IP_RANGE", "10.213.248.0/21")
    if not servers.subnet_of(subnet):
        raise ConfigError("GPUHUB_USERS_IP_RANGE", f"{servers} is not inside GPUHUB_USERS_SUBNET {subnet}")
    seen: dict[ipaddress.IPv4Address, str] = {}
    for name, default in (("GPUHUB_USERS_HUB_IP", "10.213.240.2"), ("GPUHUB_USERS_PROXY_IP", "10.213.240.3")):
        value = _clean(environ, name) or default
        try:
            address = ipaddress.IPv4Address(value)
        except ValueError:
            raise ConfigError(name, f"expected an IPv4 address like {default}, got {value!r}") from None
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


def _deployment(environ: Mapping[str, str]) -> str:
    # Compose's rule for project names, which is where the default comes from
    value = _clean(environ, "GPUHUB_DEPLOYMENT") or Settings.deployment
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,62}", value):
        raise ConfigError("GPUHUB_DEPLOYMENT", f"expected a name of lowercase letters, digits, '-' and '_' "
                          f"(like a Compose project name), got {value[:80]!r}")
    return value


def _url(environ: Mapping[str, str], name: str, required_for: str | None = None) -> str:
    value = _clean(environ, name)
    if not value:
        if required_for:
            raise ConfigError(name, f"is required for {required_for}; set it to the provider's URL")
        return ""
    if not value.startswith(("https://", "http://")):
        raise ConfigError(name, f"expected an http(s) URL, got {value!r}")
    return value.rstrip("/")


def read_secret_file(variable: str, path: str) -> str:
    """Read a secret from a file, refusing an empty one. The secret itself is never shown."""
    try:
        value = Path(path).read_text().strip()
    except FileNotFoundError:
        raise ConfigError(variable, f"file {path} does not exist") from None
    except OSError as e:
        raise ConfigError(variable, f"cannot read {path}: {e.strerror}") from None
    if not value:
        raise ConfigError(variable, f"file {path} is empty")
    return value


@dataclass(frozen=True)
class OAuthSettings:
    client_id: str = ""
    client_secret: str = field(default="", repr=False)
    # generic OIDC (and the demo provider, which is driven through the same code path)
    authorize_url: str = ""
    token_url: str = ""
    userdata_url: str = ""
    username_claim: str = "sub"
    groups_claim: str = "groups"
    scopes: tuple[str, ...] = ("openid", "profile", "email")
    # provider specifics
    gitlab_url: str = ""
    azuread_tenant_id: str = ""


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
    monitor_url: str = "http://gpu-monitor:8000/services/gpu-monitor/"
    monitor_secrets_dir: str = "/srv/gpuhub/monitor-secrets"
    policy_file: str = "/srv/gpuhub/config/gpu-policy.yaml"
    cull_idle_seconds: int = 0  # jupyterhub-idle-culler's --timeout; 0: not run
    # servers starting at once (GPUDockerSpawner.start_concurrency); 0: no limit
    start_concurrency: int = 2
    # labels every user container (org.gpuhub.deployment): the GPU monitor counts only its own
    deployment: str = "gpuhub"
    # every user server on a host of its own (gpuhub.subdomains)
    user_subdomains: bool = False

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
    if authenticator == "demo":
        # The bundled provider: the browser reaches it on the host's loopback, the hub on the
        # compose network. Client id and secret are accepted as given by the demo provider.
        public = _url(environ, "GPUHUB_DEMO_OIDC_PUBLIC_URL") or "http://localhost:9400"
        internal = _url(environ, "GPUHUB_DEMO_OIDC_URL") or "http://demo-oidc:9400"
        return OAuthSettings(
            client_id="gpuhub-demo",
            client_secret="gpuhub-demo-not-a-secret",
            authorize_url=f"{public}/oauth2/authorize",
            token_url=f"{internal}/oauth2/token",
            userdata_url=f"{internal}/userinfo",
            username_claim="sub",
        )

    client_id = _clean(environ, "OAUTH_CLIENT_ID")
    if not client_id:
        raise ConfigError(
            "OAUTH_CLIENT_ID",
            f"is required for GPUHUB_AUTHENTICATOR={authenticator}; "
            "set it to the client id of the OAuth app you registered with the provider",
        )
    secret_file = _clean(environ, "OAUTH_CLIENT_SECRET_FILE") or DEFAULT_CLIENT_SECRET_FILE
    if not Path(secret_file).exists():
        raise ConfigError(
            "OAUTH_CLIENT_SECRET_FILE",
            f"{secret_file} does not exist, but GPUHUB_AUTHENTICATOR={authenticator} needs the "
            "OAuth client secret: put it in secrets/oauth_client_secret (chmod 600)",
        )
    client_secret = read_secret_file("OAUTH_CLIENT_SECRET_FILE", secret_file)

    extra: dict[str, object] = {}
    if authenticator == "generic":
        extra = dict(
            authorize_url=_url(environ, "OIDC_AUTHORIZE_URL", "GPUHUB_AUTHENTICATOR=generic"),
            token_url=_url(environ, "OIDC_TOKEN_URL", "GPUHUB_AUTHENTICATOR=generic"),
            userdata_url=_url(environ, "OIDC_USERINFO_URL", "GPUHUB_AUTHENTICATOR=generic"),
            username_claim=_clean(environ, "OIDC_USERNAME_CLAIM") or USERNAME_CLAIMS["generic"],
            groups_claim=_clean(environ, "OIDC_GROUPS_CLAIM") or "groups",
            scopes=tuple(_clean(environ, "OIDC_SCOPES").split()) or ("openid", "profile", "email"),
        )
    elif authenticator == "gitlab":
        extra = dict(gitlab_url=_url(environ, "GITLAB_URL") or "https://gitlab.com")
    elif authenticator == "azuread":
        tenant = _clean(environ, "AZUREAD_TENANT_ID")
        if not tenant:
            raise ConfigError(
                "AZUREAD_TENANT_ID",
                "is required for GPUHUB_AUTHENTICATOR=azuread; set it to your directory (tenant) id",
            )
        extra = dict(azuread_tenant_id=tenant,
                     username_claim=_clean(environ, "OIDC_USERNAME_CLAIM") or USERNAME_CLAIMS["azuread"])
    # github, gitlab, google: their own claim, always set explicitly (OAuthenticator's default
    # would otherwise follow an OAUTH2_USERNAME_KEY in the hub's environment)
    extra = {"username_claim": USERNAME_CLAIMS[authenticator], **extra}
    return OAuthSettings(client_id=client_id, client_secret=client_secret, **extra)  # type: ignore[arg-type]


def _user_subdomains(environ: Mapping[str, str]) -> bool:
    """GPUHUB_USER_SUBDOMAINS: on by default without DOMAIN (every *.localhost name is the
    loopback address in browsers, and the local CA signs the wildcard), off by default with one
    (a wildcard DNS record and a DNS-01 certificate are the operator's to set up)."""
    domain = _clean(environ, "DOMAIN")
    if not _bool(environ, "GPUHUB_USER_SUBDOMAINS", default=not domain):
        return False
    if domain:
        try:
            ipaddress.ip_address(domain)
        except ValueError:
            pass
        else:
            raise ConfigError("GPUHUB_USER_SUBDOMAINS", f"is on, but DOMAIN={domain} is an IP address, which "
                              "has no subdomains: set DOMAIN to a DNS name with a wildcard record "
                              "(*.<name>), or GPUHUB_USER_SUBDOMAINS=false")
        if not _clean(environ, "ACME_DNS_PROVIDER"):
            raise ConfigError("GPUHUB_USER_SUBDOMAINS", f"is on, which needs a certificate for *.{domain}, and "
                              "Let's Encrypt issues wildcards only over the DNS-01 challenge, not HTTP-01: "
                              "set ACME_DNS_PROVIDER and its credentials (README, 'Per-user subdomains'), "
                              "or GPUHUB_USER_SUBDOMAINS=false")
    return True


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the hub's settings; raise ConfigError on the first problem."""
    if environ is None:
        environ = os.environ

    authenticator = _clean(environ, "GPUHUB_AUTHENTICATOR").lower() or "demo"
    if authenticator not in AUTHENTICATORS:
        raise ConfigError(
            "GPUHUB_AUTHENTICATOR",
            f"unknown value {authenticator!r}; choose one of {', '.join(AUTHENTICATORS)}",
        )

    listen = _clean(environ, "GPUHUB_LISTEN") or "127.0.0.1"
    public_host = _clean(environ, "DOMAIN") or "localhost"
    allowed_users = _list(environ, "GPUHUB_ALLOWED_USERS")
    allowed_groups = _list(environ, "GPUHUB_ALLOWED_GROUPS")
    admin_users = _list(environ, "GPUHUB_ADMIN_USERS")
    allow_all = _bool(environ, "GPUHUB_ALLOW_ALL")

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
        https_port=_port(environ, "GPUHUB_HTTPS_PORT", 443),
        listen=listen,
        user_network=_clean(environ, "GPUHUB_USER_NETWORK") or "gpuhub-users",
        profiles_file=_clean(environ, "GPUHUB_PROFILES_FILE") or "/srv/gpuhub/config/profiles.yaml",
        secrets_dir=_clean(environ, "GPUHUB_SECRETS_DIR") or "/srv/gpuhub/secrets",
        certs_dir=_clean(environ, "GPUHUB_CERTS_DIR") or "/srv/gpuhub/certs",
        operator_token_file=_clean(environ, "GPUHUB_API_TOKEN_FILE") or "/run/gpuhub/secrets/api_token",
        db_host=_clean(environ, "GPUHUB_DB_HOST") or "db",
        db_name=_clean(environ, "GPUHUB_DB_NAME") or "jupyterhub",
        db_user=_clean(environ, "GPUHUB_DB_USER") or "jupyterhub",
        db_password_file=_clean(environ, "GPUHUB_DB_PASSWORD_FILE") or "/run/gpuhub/db/password",
        proxy_api_url=_url(environ, "GPUHUB_PROXY_API_URL") or "http://proxy-api:8099",
        traefik_rules_file=_clean(environ, "GPUHUB_TRAEFIK_RULES_FILE")
        or "/srv/gpuhub/traefik/rules.yaml",
        monitor_url=(_url(environ, "GPUHUB_MONITOR_URL") or Settings.monitor_url).rstrip("/") + "/",
        monitor_secrets_dir=_clean(environ, "GPUHUB_MONITOR_SECRETS_DIR") or Settings.monitor_secrets_dir,
        policy_file=_clean(environ, "GPUHUB_POLICY_FILE") or Settings.policy_file,
        cull_idle_seconds=_seconds(environ, "GPUHUB_CULL_IDLE_SECONDS"),
        # two per CPU: measured best for a burst of logins (bench/login_burst.py)
        start_concurrency=_count(environ, "GPUHUB_START_CONCURRENCY", 2 * (os.cpu_count() or 1),
                                 "a whole number of servers (0: no limit)"),
        deployment=_deployment(environ),
        user_subdomains=_user_subdomains(environ),
    )

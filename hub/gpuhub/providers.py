"""The login providers, one record each: everything gpuhub knows about a provider is here.

A `Provider` names the OAuthenticator class that speaks its protocol, the claim that becomes
the username, what a "group" is for it (or that it has none gpuhub can check), the variables
it needs (declared `Setting`s, documented in gpuhub/catalogue.py), how they become
`OAuthSettings` and how those become the authenticator's traits. gpuhub.settings reads the
record of GPUHUB_AUTHENTICATOR; gpuhub.auth turns it into JupyterHub configuration.

Adding a provider that OAuthenticator supports: one record in PROVIDERS, its variables' help in
the catalogue (then regenerate config/gpuhub.env.example), and the variables passed to the hub
in docker-compose.yml (`x-hub-environment`); tests/fast/test_catalogue.py fails until those
agree. Any OpenID Connect provider needs none of this: GPUHUB_AUTHENTICATOR=generic.

Usernames: two people must never get the same username (they would share one account, admin
rights included), and a username should not change under a person. So where the provider has a
stable, unique identifier, it is the default: OpenID Connect's `sub` (the only claim the
specification makes stable and unique per provider) and Azure AD's `oid` (the object id, unique
in the tenant); OIDC_USERNAME_CLAIM changes them. GitHub, GitLab and Google: their unique login
names (login, username, e-mail), which their owners can change; see README, "Usernames". The
claim is always set explicitly: OAuthenticator's default would otherwise follow an
OAUTH2_USERNAME_KEY in the hub's environment.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gpu_monitor.env import ConfigError, Setting, text, url

H = ("hub", "init")

# Claims that identify a person for good; the others can change hands (gpuhub.auth warns).
STABLE_CLAIMS = frozenset({"sub", "oid"})

OIDC_AUTHORIZE_URL = Setting("OIDC_AUTHORIZE_URL", url, "", H)
OIDC_TOKEN_URL = Setting("OIDC_TOKEN_URL", url, "", H)
OIDC_USERINFO_URL = Setting("OIDC_USERINFO_URL", url, "", H)
OIDC_USERNAME_CLAIM = Setting("OIDC_USERNAME_CLAIM", text, "", H)  # empty: the provider's own
OIDC_GROUPS_CLAIM = Setting("OIDC_GROUPS_CLAIM", text, "groups", H)
OIDC_SCOPES = Setting("OIDC_SCOPES", lambda v: tuple(v.split()), ("openid", "profile", "email"), H)
GITLAB_URL = Setting("GITLAB_URL", url, "https://gitlab.com", H)
AZUREAD_TENANT_ID = Setting("AZUREAD_TENANT_ID", text, "", H)
DEMO_OIDC_PUBLIC_URL = Setting("GPUHUB_DEMO_OIDC_PUBLIC_URL", url, "http://localhost:9400", H)
DEMO_OIDC_URL = Setting("GPUHUB_DEMO_OIDC_URL", url, "http://demo-oidc:9400", H)


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


def _required(environ: Mapping[str, str], setting: Setting[str], provider: str, what: str) -> str:
    value = setting.read(environ)
    if not value:
        raise ConfigError(setting.name, f"is required for GPUHUB_AUTHENTICATOR={provider}; set it to {what}")
    return value


@dataclass(frozen=True)
class Provider:
    name: str  # the value of GPUHUB_AUTHENTICATOR
    authenticator: str  # "module:Class" of the OAuthenticator that speaks its protocol
    username_claim: str  # the default claim that becomes the username
    settings: tuple[Setting[Any], ...] = ()  # the variables only this provider reads
    # OAuthSettings fields from those variables (the client id and secret are read for all)
    read: Callable[[Mapping[str, str]], dict[str, Any]] = lambda environ: {}
    # the authenticator's traits for this provider, beyond those every provider gets
    traits: Callable[[OAuthSettings], dict[str, Any]] = lambda o: {}
    # the traits that admit members of GPUHUB_ALLOWED_GROUPS (in the provider's sense of a
    # group); None: the provider has no groups gpuhub can check
    groups: Callable[[frozenset[str], OAuthSettings], dict[str, Any]] | None = None
    group_meaning: str = ""  # what a group is, for the operator

    def authenticator_class(self) -> type:
        module, _, name = self.authenticator.partition(":")
        cls: type = getattr(importlib.import_module(module), name)
        return cls


def _oidc_groups(groups: frozenset[str], o: OAuthSettings) -> dict[str, Any]:
    return {"allowed_groups": set(groups), "manage_groups": True,
            "auth_state_groups_key": f"oauth_user.{o.groups_claim}"}


def _oidc_traits(login_service: str) -> Callable[[OAuthSettings], dict[str, Any]]:
    def traits(o: OAuthSettings) -> dict[str, Any]:
        return {"authorize_url": o.authorize_url, "token_url": o.token_url, "userdata_url": o.userdata_url,
                "scope": list(o.scopes), "login_service": login_service}
    return traits


def _read_generic(environ: Mapping[str, str]) -> dict[str, Any]:
    endpoint = "the provider's URL (its /.well-known/openid-configuration lists it)"
    return {
        "authorize_url": _required(environ, OIDC_AUTHORIZE_URL, "generic", endpoint),
        "token_url": _required(environ, OIDC_TOKEN_URL, "generic", endpoint),
        "userdata_url": _required(environ, OIDC_USERINFO_URL, "generic", endpoint),
        "username_claim": OIDC_USERNAME_CLAIM.read(environ) or "sub",
        "groups_claim": OIDC_GROUPS_CLAIM.read(environ),
        "scopes": OIDC_SCOPES.read(environ),
    }


def _read_demo(environ: Mapping[str, str]) -> dict[str, Any]:
    # The bundled provider: the browser reaches it on the host's loopback, the hub on the
    # compose network. Client id and secret are accepted as given by the demo provider.
    public, internal = DEMO_OIDC_PUBLIC_URL.read(environ), DEMO_OIDC_URL.read(environ)
    return {"client_id": "gpuhub-demo", "client_secret": "gpuhub-demo-not-a-secret",
            "authorize_url": f"{public}/oauth2/authorize", "token_url": f"{internal}/oauth2/token",
            "userdata_url": f"{internal}/userinfo"}


def _read_azuread(environ: Mapping[str, str]) -> dict[str, Any]:
    return {"azuread_tenant_id": _required(environ, AZUREAD_TENANT_ID, "azuread", "your directory (tenant) id"),
            "username_claim": OIDC_USERNAME_CLAIM.read(environ) or "oid"}


def _github_groups(groups: frozenset[str], o: OAuthSettings) -> dict[str, Any]:
    return {"allowed_organizations": set(groups), "scope": ["read:org"]}


PROVIDERS: dict[str, Provider] = {p.name: p for p in (
    Provider("demo", "oauthenticator.generic:GenericOAuthenticator", "sub",
             settings=(DEMO_OIDC_PUBLIC_URL, DEMO_OIDC_URL), read=_read_demo,
             traits=_oidc_traits("the gpuhub demo provider"), groups=_oidc_groups,
             group_meaning="values of the groups claim"),
    Provider("generic", "oauthenticator.generic:GenericOAuthenticator", "sub",
             settings=(OIDC_AUTHORIZE_URL, OIDC_TOKEN_URL, OIDC_USERINFO_URL, OIDC_USERNAME_CLAIM,
                       OIDC_GROUPS_CLAIM, OIDC_SCOPES),
             read=_read_generic, traits=_oidc_traits("OpenID Connect"), groups=_oidc_groups,
             group_meaning="values of the groups claim (OIDC_GROUPS_CLAIM)"),
    Provider("github", "oauthenticator.github:GitHubOAuthenticator", "login", groups=_github_groups,
             group_meaning="organisations (org) or teams (org:team)"),
    Provider("gitlab", "oauthenticator.gitlab:GitLabOAuthenticator", "username",
             settings=(GITLAB_URL,), read=lambda environ: {"gitlab_url": GITLAB_URL.read(environ)},
             traits=lambda o: {"gitlab_url": o.gitlab_url},
             groups=lambda groups, o: {"allowed_gitlab_groups": set(groups)}, group_meaning="group paths"),
    Provider("google", "oauthenticator.google:GoogleOAuthenticator", "email"),
    Provider("azuread", "oauthenticator.azuread:AzureAdOAuthenticator", "oid",
             settings=(AZUREAD_TENANT_ID, OIDC_USERNAME_CLAIM), read=_read_azuread,
             traits=lambda o: {"tenant_id": o.azuread_tenant_id},
             groups=lambda groups, o: {"allowed_groups": set(groups), "manage_groups": True,
                                       "auth_state_groups_key": "user.groups"},
             group_meaning="group object ids"),
)}

# every provider's own variables, each declared once
PROVIDER_SETTINGS: tuple[Setting[Any], ...] = tuple(dict.fromkeys(s for p in PROVIDERS.values() for s in p.settings))

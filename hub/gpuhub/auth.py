"""Which OAuthenticator logs people in, and with which access rules.

`authenticator_config(settings)` returns the authenticator class and the trait values to set
on it. Every provider gets the same rules: the people in GPUHUB_ALLOWED_USERS, members of
GPUHUB_ALLOWED_GROUPS (in that provider's sense of a group), and the GPUHUB_ADMIN_USERS;
`allow_all` only when the operator set GPUHUB_ALLOW_ALL deliberately (settings refuse to start
with no rule at all). The demo login is the generic OIDC authenticator pointed at the bundled
provider, so demo and production share one code path. The username comes from the claim
gpuhub.settings.USERNAME_CLAIMS names for each provider (stable and unique where the provider has
such a claim); `warn_if_usernames_are_mutable` says so in the hub's log when lists name people
by a claim that can change hands.
"""

from __future__ import annotations

import logging
from typing import Any

from oauthenticator.azuread import AzureAdOAuthenticator
from oauthenticator.generic import GenericOAuthenticator
from oauthenticator.github import GitHubOAuthenticator
from oauthenticator.gitlab import GitLabOAuthenticator
from oauthenticator.google import GoogleOAuthenticator

from .settings import STABLE_CLAIMS, Settings

log = logging.getLogger("JupyterHub")  # the hub's own logger: the warning lands in its log

CLASSES = {
    "demo": GenericOAuthenticator,
    "generic": GenericOAuthenticator,
    "github": GitHubOAuthenticator,
    "gitlab": GitLabOAuthenticator,
    "google": GoogleOAuthenticator,
    "azuread": AzureAdOAuthenticator,
}


def authenticator_config(settings: Settings) -> tuple[type, dict[str, Any]]:
    o = settings.oauth
    traits: dict[str, Any] = {
        "client_id": o.client_id,
        "client_secret": o.client_secret,
        "oauth_callback_url": settings.oauth_callback_url,
        # the claim that becomes the username: stable and unique where the provider has one
        # (gpuhub.settings.USERNAME_CLAIMS), set for every provider
        "username_claim": o.username_claim,
        "allowed_users": set(settings.allowed_users),
        "admin_users": set(settings.admin_users),
        "allow_all": settings.allow_all,
        "enable_auth_state": True,
        # OAuthenticator turns refresh_pre_spawn on with auth state: before every spawn, decrypt
        # the login state, ask the provider's userinfo endpoint again and encrypt it anew, all
        # before JupyterHub marks the spawn pending. Under a burst of logins that outlasts the
        # spawn handler's 1 s wait, and people land on "Server not running" while their server
        # is starting (bench/login_burst.py: 13-27 of 50 people). Groups and allow rules are
        # still refreshed at login and on requests older than auth_refresh_age (5 min).
        "refresh_pre_spawn": False,
    }
    kind = settings.authenticator
    if kind in ("demo", "generic"):
        traits.update(
            authorize_url=o.authorize_url,
            token_url=o.token_url,
            userdata_url=o.userdata_url,
            scope=list(o.scopes),
            login_service="the gpuhub demo provider" if kind == "demo" else "OpenID Connect",
        )
        if settings.allowed_groups:
            traits.update(allowed_groups=set(settings.allowed_groups), manage_groups=True,
                          auth_state_groups_key=f"oauth_user.{o.groups_claim}")
    elif kind == "github":
        if settings.allowed_groups:
            traits["allowed_organizations"] = set(settings.allowed_groups)
            traits["scope"] = ["read:org"]
    elif kind == "gitlab":
        traits["gitlab_url"] = o.gitlab_url
        if settings.allowed_groups:
            traits["allowed_gitlab_groups"] = set(settings.allowed_groups)
    elif kind == "azuread":
        traits["tenant_id"] = o.azuread_tenant_id
        if settings.allowed_groups:
            traits.update(allowed_groups=set(settings.allowed_groups), manage_groups=True,
                          auth_state_groups_key="user.groups")
    return CLASSES[kind], traits


def mutable_username_warning(settings: Settings) -> str | None:
    """A sentence for the hub's log when people are named in allow or admin lists by a claim
    its owner can change: after a rename, whoever takes the old name gets that entry's rights."""
    claim = settings.oauth.username_claim
    named = [name for name, people in (("GPUHUB_ADMIN_USERS", settings.admin_users),
                                      ("GPUHUB_ALLOWED_USERS", settings.allowed_users)) if people]
    if settings.demo or claim in STABLE_CLAIMS or not named:
        return None
    return (f"usernames are the provider's {claim!r} claim (GPUHUB_AUTHENTICATOR={settings.authenticator}), "
            f"which can change hands: {' and '.join(named)} name whoever holds that name when they log "
            "in. Remove people from these lists when they leave or are renamed; README.md, 'Usernames'.")


def warn_if_usernames_are_mutable(settings: Settings) -> None:
    message = mutable_username_warning(settings)
    if message:
        log.warning("gpuhub: %s", message)

"""Which OAuthenticator logs people in, and with which access rules.

`authenticator_config(settings)` returns the authenticator class and the trait values to set
on it. Every provider gets the same rules: the people in GPUHUB_ALLOWED_USERS, members of
GPUHUB_ALLOWED_GROUPS (in that provider's sense of a group), and the GPUHUB_ADMIN_USERS;
`allow_all` only when the operator set GPUHUB_ALLOW_ALL deliberately (settings refuse to start
with no rule at all). The demo login is the generic OIDC authenticator pointed at the bundled
provider, so demo and production share one code path. The username comes from the claim
its provider record names (gpuhub/providers.py) (stable and unique where the provider has
such a claim); `warn_if_usernames_are_mutable` says so in the hub's log when lists name people
by a claim that can change hands.
"""

from __future__ import annotations

import logging
from typing import Any

from .providers import PROVIDERS, STABLE_CLAIMS
from .settings import Settings

log = logging.getLogger("JupyterHub")  # the hub's own logger: the warning lands in its log


def authenticator_config(settings: Settings) -> tuple[type, dict[str, Any]]:
    o = settings.oauth
    traits: dict[str, Any] = {
        "client_id": o.client_id,
        "client_secret": o.client_secret,
        "oauth_callback_url": settings.oauth_callback_url,
        # the claim that becomes the username: stable and unique where the provider has one
        # (gpuhub/providers.py), set for every provider
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
    provider = PROVIDERS[settings.authenticator]
    traits.update(provider.traits(o))
    if settings.allowed_groups and provider.groups is not None:
        traits.update(provider.groups(settings.allowed_groups, o))
    return provider.authenticator_class(), traits


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

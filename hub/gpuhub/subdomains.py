"""Per-user subdomains: every user server on a host name of its own (`GPUHUB_USER_SUBDOMAINS`).

Users control what their server serves. On one origin, a page from `/user/alice/` runs in the
hub's origin and can drive the hub as whoever opens it; on `alice.user.localhost` it cannot
(JupyterHub's web security documentation, "Enable subdomains"). The hub and the GPU monitor stay
on the main host (`DOMAIN`, or `localhost`): the monitor is gpuhub's own code, and its documented
URLs (`/services/gpu-monitor/`, its metrics) keep working; JupyterHub would otherwise move every
service to `<name>--service.<domain>`.

Where the user hosts live: under `DOMAIN` itself (`alice.hub.example.org`) when it has a dot;
under `user.<name>` when it is a single label, as `localhost` is. A wildcard certificate needs
two labels after its star: OpenSSL, Chromium and Firefox all refuse `*.localhost` for
`alice.localhost` (a wildcard over a whole top-level domain), and accept `*.user.localhost`.
Browsers resolve every `*.localhost` name to the loopback address themselves (RFC 6761), so the
demo needs no DNS; a real domain needs a wildcard DNS record and a wildcard certificate.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from jupyterhub.utils import subdomain_hook_idna

from .settings import Settings

# The label put under a single-label host (localhost) so that a wildcard can cover user hosts.
USERS_LABEL = "user"


def users_domain(public_host: str) -> str:
    """The domain whose subdomains are the users' hosts: `alice.<this>`."""
    return public_host if "." in public_host else f"{USERS_LABEL}.{public_host}"


def certificate_names(settings: Settings) -> tuple[str, ...]:
    """DNS names of the local certificate: the hub's host, localhost, and with subdomains on
    the wildcard over the users' hosts."""
    names = [settings.public_host, "localhost"]
    if settings.user_subdomains:
        names.append(f"*.{users_domain(settings.public_host)}")
    return tuple(dict.fromkeys(names))


class SubdomainHook:
    """JupyterHub's `subdomain_hook`: users get `<idna name>.<users domain>` (JupyterHub's own
    'idna' encoding: IDNA for unicode names, a truncated name plus a hash for names that are no
    valid DNS label); services stay on the hub's host."""

    def __init__(self, users_domain: str):
        self.users_domain = users_domain

    def __call__(self, name: str, domain: str, kind: str) -> str:
        if kind == "user":
            return subdomain_hook_idna(name, self.users_domain, kind)
        return domain

    def __repr__(self) -> str:
        return f"SubdomainHook(users_domain={self.users_domain!r})"


def configure_subdomains(c: Any, settings: Settings) -> None:
    """Per-user hosts, when `settings.user_subdomains`; nothing otherwise."""
    if not settings.user_subdomains:
        return
    origin = urlsplit(settings.public_url)
    c.JupyterHub.subdomain_host = f"{origin.scheme}://{origin.netloc}"
    c.JupyterHub.subdomain_hook = SubdomainHook(users_domain(settings.public_host))
    # The hub's login cookie as `__Host-...`: a user's server, on a subdomain, can set cookies
    # for the parent domain (cookie tossing) but never a `__Host-` one, so it cannot log a
    # visitor into another account. JupyterHub recommends it only together with per-user hosts.
    c.JupyterHub.cookie_host_prefix_enabled = True

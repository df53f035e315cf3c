"""Names looked up afresh for JupyterHub's HTTP client (`JupyterHubHTTPClient`), in the hub and
in the monitor.

JupyterHub's client is aiohttp, which resolves with aiodns when it is installed (jupyterhub 6
requires it). aiodns's c-ares keeps an answer for the TTL the DNS server gives, and Docker's
embedded DNS gives 600 s. On a swarm, services are reached by DNS round robin (`dnsrr`): the
name is the task's own address, which changes when the task is replaced. So after the hub was
restarted the monitor kept asking the hub's old address whether a token was valid, and answered
every request "the hub does not answer" for up to ten minutes (found 2026-12-07,
docs/scale-out.md). `SystemResolver` is aiohttp's own getaddrinfo resolver (no cache of its own;
aiohttp's connector keeps an answer 10 s), made so that it can be built before an event loop
runs (in a traitlets config). The single-user servers reach the hub through the same client,
which nothing there lets a site configure: their image goes without aiodns instead
(images/singleuser.Dockerfile), and aiohttp then resolves with getaddrinfo too.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.resolver import ThreadedResolver


class SystemResolver(ThreadedResolver):
    """aiohttp's `ThreadedResolver` on the loop that is running when it resolves."""

    def __init__(self) -> None:  # no loop to take yet: see _loop
        pass

    @property
    def _loop(self) -> asyncio.AbstractEventLoop:  # type: ignore[override]
        return asyncio.get_running_loop()


def connector_options() -> dict[str, Any]:
    """`JupyterHubHTTPClient.connector_options`: names resolved by the system, at most 10 s old."""
    return {"resolver": SystemResolver(), "ttl_dns_cache": 10}

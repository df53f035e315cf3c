"""The hub's proxy: jupyterhub-traefik-proxy's file provider, plus one repair to JupyterHub's
route check.

JupyterHub's `Proxy.check_routes` (run at every hub start) finds a service's route by the
service's name and compares only its target. When the route's spec changes, as it does when
GPUHUB_USER_SUBDOMAINS is switched (`/services/gpu-monitor/` becomes
`localhost/services/gpu-monitor/`), the old route counts as present, is then deleted as stale,
and the new one is never added: the monitor's dashboard answered 404 until a second restart.
Routes of a service under another spec than its current one are removed first, so the check
adds the right one.
"""

from __future__ import annotations

from typing import Any

from jupyterhub_traefik_proxy.fileprovider import TraefikFileProviderProxy


def moved_service_routes(routes: dict[str, dict], services: dict[str, Any]) -> list[str]:
    """Specs of routes that belong to a running service but not under its current spec."""
    moved = []
    for spec, route in routes.items():
        name = (route.get("data") or {}).get("service")
        service = services.get(name) if name else None
        if service is not None and service.server is not None and spec != service.proxy_spec:
            moved.append(spec)
    return moved


class TraefikFileProxy(TraefikFileProviderProxy):
    """`traefik_file`, with service routes whose spec changed replaced instead of lost."""

    async def check_routes(self, user_dict, service_dict, routes=None):
        if routes is None:
            routes = await self.get_all_routes()
        for spec in moved_service_routes(routes, service_dict):
            self.log.info("Replacing route %s of service %s (its spec changed)", spec,
                          routes[spec]["data"]["service"])
            await self.delete_route(spec)
            routes = {k: v for k, v in routes.items() if k != spec}
        return await super().check_routes(user_dict, service_dict, routes)

"""The monitor's HTTP service: a JupyterHub service under /services/gpu-monitor/.

This module only builds the tornado application (`make_app`): the routes below, the handlers
they go to (handlers/, one module per resource) and the shared `Monitor` (monitor.py) in the
application's settings.

Routes (relative to the service prefix):

    GET    api/health               no authentication; {"status": "ok"}, or 503 with what is wrong
                                    with the database (for the healthcheck)
    GET    api/devices              any hub user or service allowed to use the service
    GET    api/host                 the same; {"backend", "driver_version", "cuda_driver_version"}
    GET    api/allocations          one's own; everyone's with scope custom:gpu-monitor:read-all
    GET    api/allocations/{id}     one's own, or any with read-all; 404 otherwise
    POST   api/allocations          scope custom:gpu-monitor:allocate (the hub; admins)
    DELETE api/allocations/{id}     scope custom:gpu-monitor:allocate
    GET    api/history              any hub user; per-device points for the last hour or day
    GET    api/accounting           scope custom:gpu-monitor:read-all; GPU-hours per user or group
    GET    metrics                  scope custom:gpu-monitor:read-all (names users)
    GET    /                        the dashboard (any hub user; admins see who holds what)

Authentication is the hub's (`HubOAuth`): API tokens in an `Authorization: token ...` header,
or the service's OAuth cookie for people in a browser. Requests that change state must carry a
token header: a cookie alone never allocates or releases (no cross-site request forgery).
Everything that blocks (PostgreSQL, Docker, rendering metrics) runs in a thread pool; the event
loop only parses, checks and answers.
"""

from __future__ import annotations

from jupyterhub.services.auth import HubOAuth
from tornado import web

from .dashboard import STATIC
from .handlers.accounting import AccountingHandler
from .handlers.allocations import AllocationHandler, AllocationsHandler
from .handlers.base import NotFoundHandler, OAuthCallbackHandler, StaticHandler
from .handlers.dashboard import DashboardHandler
from .handlers.devices import DevicesHandler, HistoryHandler, HostHandler
from .handlers.health import HealthHandler
from .handlers.metrics import MetricsHandler
from .monitor import Monitor

# What the HTTP server reads of any request body at all (larger: the connection is dropped),
# and what it buffers per connection. The allocation API refuses more than MAX_BODY_BYTES
# (requests.py) with 413 from the Content-Length, before reading the body or asking the hub who
# is asking; other routes take no body. So a flood of large bodies costs at most this much per
# connection.
MAX_READ_BYTES = 64 * 1024
MAX_BUFFER_BYTES = 256 * 1024
ALLOCATION_ID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def make_app(monitor: Monitor, hub_auth: HubOAuth, prefix: str, cookie_secret: bytes) -> web.Application:
    """`hub_auth` must be the `HubOAuth.instance()` singleton: jupyterhub's own callback handler
    finds it that way."""
    p = prefix.rstrip("/")
    return web.Application(
        [
            (rf"{p}/api/health", HealthHandler),
            (rf"{p}/api/devices", DevicesHandler),
            (rf"{p}/api/host", HostHandler),
            (rf"{p}/api/allocations", AllocationsHandler),
            (rf"{p}/api/allocations/({ALLOCATION_ID})", AllocationHandler),
            (rf"{p}/api/history", HistoryHandler),
            (rf"{p}/api/accounting", AccountingHandler),
            (rf"{p}/metrics", MetricsHandler),
            (rf"{p}/oauth_callback", OAuthCallbackHandler),
            (rf"{p}/static/(.*)", StaticHandler, {"path": str(STATIC)}),
            (rf"{p}/?", DashboardHandler),
        ],
        monitor=monitor,
        prefix=prefix,
        cookie_secret=cookie_secret,
        login_url=hub_auth.login_url,
        default_handler_class=NotFoundHandler,
        xsrf_cookies=False,  # state changes require a token header instead (see handlers/base.py)
    )


"""`GET /`: the dashboard page (dashboard.py renders it)."""

from __future__ import annotations

from tornado import web

from ..contract import SCOPE_READ_ALL
from ..dashboard import render_dashboard
from .base import MonitorHandler


class DashboardHandler(MonitorHandler):
    """The dashboard: every device's state, utilisation, memory, temperature and power, which
    are yours, history charts for the last hour or day; admins also see who holds what, since
    when and how busy, and the accounting. Rendered on the server once (readable without
    JavaScript), then kept live by static/dashboard.js."""

    async def get(self) -> None:
        if not self.current_user:
            if getattr(self, "_not_allowed", False):
                raise web.HTTPError(403)
            self.redirect(self.get_login_url())
            return
        m = self.monitor
        allocations = await m.run(m.store.list)
        data = m.devices_json(allocations, self.viewer())
        admin = self.has_scope(SCOPE_READ_ALL)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Content-Security-Policy",
                        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
        # The page's script reads the API with the login cookie; JupyterHub accepts a cookie on
        # such (fetch) requests only with this XSRF token in a header.
        xsrf = self.xsrf_token
        self.finish(render_dashboard(data, allocations, admin, self.settings["prefix"],
                                     (self.current_user or {}).get("name", ""),
                                     xsrf.decode() if isinstance(xsrf, bytes) else str(xsrf)))

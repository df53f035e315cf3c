"""`GET metrics`: Prometheus text, rendered from current state off the event loop."""

from __future__ import annotations

from ..contract import SCOPE_READ_ALL
from ..metrics import MonitorCollector, render
from .base import MonitorHandler


class MetricsHandler(MonitorHandler):
    async def get(self) -> None:
        self.require_scope(SCOPE_READ_ALL)
        m = self.monitor
        allocations = await m.run(m.store.list)
        collector = MonitorCollector(lambda: m.devices, m.states, lambda: allocations)
        body = await m.run(render, collector)
        self.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.finish(body)

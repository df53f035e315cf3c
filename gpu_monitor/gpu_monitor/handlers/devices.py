"""`GET api/devices` (every device, its state and last sample), `GET api/host` (the backend
and the driver's versions) and `GET api/history` (per-device points for the last hour or day):
every hub user and service allowed to use the monitor may read them."""

from __future__ import annotations

import time

from tornado import web

from .base import MonitorHandler


class DevicesHandler(MonitorHandler):
    async def get(self) -> None:
        self.require_user()
        allocations = await self.monitor.run(self.monitor.store.list)
        self.write_json(self.monitor.devices_json(allocations, self.viewer()))


class HostHandler(MonitorHandler):
    """What the host runs: the backend, the driver's version and the CUDA version the driver
    supports, which the spawner checks an image's CUDA against before it allocates. Known from
    start-up: no allocation is read, no database asked."""

    async def get(self) -> None:
        self.require_user()
        self.write_json(self.monitor.host.to_json())


WINDOWS = {"hour": 3600, "day": 86400}


class HistoryHandler(MonitorHandler):
    """Per-device utilisation and memory, one point a minute, for the last hour or day. Names
    no one: every user may read it."""

    async def get(self) -> None:
        self.require_user()
        window = self.get_argument("window", "hour")
        if window not in WINDOWS:
            raise web.HTTPError(400, reason=f"window must be one of {', '.join(WINDOWS)}, not {window[:40]!r}")
        points = await self.monitor.run(self.monitor.store.device_history, time.time() - WINDOWS[window])
        devices: dict[str, list[list[float | None]]] = {}
        for uuid, minute, util, memory in points:
            devices.setdefault(uuid, []).append([minute, util, memory])
        self.write_json({"window": window, "devices": devices})

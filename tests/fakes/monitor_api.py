"""Fakes of the GPU monitor's HTTP API as the hub's spawner uses it (gpu_monitor/gpu_monitor/openapi.yaml:
GET api/host, GET api/devices, POST api/allocations, DELETE api/allocations/{id}), served over real HTTP on
127.0.0.1 by tornado, so the spawner's own client code runs unchanged.

- `FakeMonitor`: allocates like the real allocator for one host: the same request from the
  same (user, server) gets its allocation back (200), another count is a 409 naming the
  allocation held, no device free is a 503; releasing twice is fine (404).
- `AllocationTimeoutMonitor`: answers the device list, never a request for an allocation
  (a monitor stuck on its database).

Every request is appended to `events` ("monitor POST api/allocations"), a list a test may share
with a fake Docker to check the order of things. Use as `async with FakeMonitor() as monitor:`
inside the event loop the spawner runs on; `monitor.url` is the spawner's `monitor_url`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

from tornado import web
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port

CPU_HOST = {"backend": "cpu-slices", "driver_version": None, "cuda_driver_version": None}
NVML_HOST = {"backend": "nvml", "driver_version": "580.65.06", "cuda_driver_version": "13.0"}


class FakeMonitor:
    def __init__(self, devices: int = 2, host: dict[str, Any] | None = None, events: list[str] | None = None):
        self.device_uuids = [f"GPU-{i:08d}-fake" for i in range(devices)]
        self.host = dict(host or CPU_HOST)
        self.allocations: dict[str, dict[str, Any]] = {}
        self.events = events if events is not None else []
        self._ids = itertools.count(1)
        self.url = ""

    # ---- the API ---------------------------------------------------------------------------------
    def devices(self) -> tuple[int, dict[str, Any]]:
        held = {u for a in self.allocations.values() for u in a["device_uuids"]}
        total = len(self.device_uuids)
        return 200, {"total": total, "free": total - len(held), "host": self.host}

    async def allocate(self, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        for a in self.allocations.values():
            if (a["user"], a["server"]) == (request["user"], request["server"]):
                if a["count"] == request["count"]:
                    return 200, self._view(a)
                return 409, {"code": "conflict", "allocation_id": a["id"],
                             "message": f"{request['user']} already holds allocation {a['id']} of {a['count']}"}
        held = {u for a in self.allocations.values() for u in a["device_uuids"]}
        free = [u for u in self.device_uuids if u not in held]
        if len(free) < request["count"]:
            return 503, {"code": "none_free", "message": f"{len(free)} of {len(self.device_uuids)} devices free"}
        return 201, self._view(self.add(request["user"], request["server"], free[: request["count"]]))

    def release(self, allocation_id: str) -> tuple[int, dict[str, Any]]:
        if self.allocations.pop(allocation_id, None) is None:
            return 404, {"message": f"no allocation {allocation_id}"}
        return 200, {"id": allocation_id}

    # ---- for tests ------------------------------------------------------------------------------
    def add(self, user: str, server: str, device_uuids: list[str]) -> dict[str, Any]:
        """An allocation held by (user, server), as if granted earlier."""
        a = {"id": f"alloc-{next(self._ids)}", "user": user, "server": server, "count": len(device_uuids),
             "device_uuids": list(device_uuids)}
        self.allocations[a["id"]] = a
        return a

    def _view(self, a: dict[str, Any]) -> dict[str, Any]:
        return {"id": a["id"], "user": a["user"], "server": a["server"],
                "devices": [{"uuid": u, "kind": "gpu", "docker_device_id": u, "name": f"Fake GPU {u[4:12]}"}
                            for u in a["device_uuids"]]}

    async def __aenter__(self) -> FakeMonitor:
        monitor = self

        class Handler(web.RequestHandler):
            async def prepare(self) -> None:
                monitor.events.append(f"monitor {self.request.method} {self.request.path.split('/gpu-monitor/')[1]}")

            def answer(self, status: int, body: dict[str, Any]) -> None:
                self.set_status(status)
                self.set_header("Content-Type", "application/json")
                self.finish(json.dumps(body))

        class Host(Handler):
            def get(self) -> None:
                self.answer(200, monitor.host)

        class Devices(Handler):
            def get(self) -> None:
                self.answer(*monitor.devices())

        class Allocations(Handler):
            async def post(self) -> None:
                self.answer(*await monitor.allocate(json.loads(self.request.body)))

        class Allocation(Handler):
            def delete(self, allocation_id: str) -> None:
                self.answer(*monitor.release(allocation_id))

        prefix = "/services/gpu-monitor/api"
        app = web.Application([(f"{prefix}/host", Host), (f"{prefix}/devices", Devices), (f"{prefix}/allocations", Allocations),
                               (f"{prefix}/allocations/([^/]+)", Allocation)])
        sock, port = bind_unused_port()
        self._server = HTTPServer(app)
        self._server.add_sockets([sock])
        self.url = f"http://127.0.0.1:{port}/services/gpu-monitor/"
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self._server.stop()
        await self._server.close_all_connections()


class AllocationTimeoutMonitor(FakeMonitor):
    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._never = asyncio.Event()

    async def allocate(self, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        await self._never.wait()  # until the server closes: the client gives up first
        raise AssertionError("unreachable")

"""The GPU monitor's HTTP API as the hub uses it (gpu_monitor/gpu_monitor/openapi.yaml), with typed answers.

`MonitorClient(url, token, timeout)` reads the host's facts and the device counts, asks for an
allocation (a `Grant`, or a `Refusal` carrying the monitor's status, code and sentence) and
releases one. It decides nothing: what to do with a refusal, and when a release is safe, is the
spawner's business. A monitor that does not answer (down, restarting, unreachable, timed out, or
a proxy's error page in its place) raises `MonitorUnavailable`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

# the request the monitor decides on (gpu_monitor/gpu_monitor/requests.py parses its JSON back)
from gpu_monitor.allocator import AllocationRequest


class MonitorUnavailable(Exception):
    """The GPU monitor did not answer (down, restarting, unreachable)."""


@dataclass(frozen=True)
class Host:
    """The monitor's host facts (GET api/host)."""

    backend: str  # "nvml" or "cpu-slices"
    driver_version: str | None = None
    cuda_driver_version: str | None = None  # "12.2": the newest CUDA the NVIDIA driver supports

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Host:
        return cls(backend=str(data.get("backend") or ""), driver_version=data.get("driver_version"),
                   cuda_driver_version=data.get("cuda_driver_version"))


@dataclass(frozen=True)
class Devices:
    """What GET api/devices says: the host, how many devices may be allocated and are free."""

    host: Host
    total: int
    free: int
    rows: tuple[dict[str, Any], ...] = ()  # one record per device, as the monitor sends it
    nodes: tuple[dict[str, Any], ...] = ()  # one record per node: id, hostname, labels, state, ...

    def has_node(self, labels: Mapping[str, str]) -> bool:
        """Does any node carry all of `labels`?"""
        return any(all((n.get("labels") or {}).get(k) == v for k, v in labels.items()) for n in self.nodes)

    def largest_node(self, labels: Mapping[str, str]) -> int:
        """The most devices one node with all of `labels` has (a server runs on one node): what a
        spawn may ask for at most. Without node records (an older monitor), the total."""
        if not self.nodes:
            return 0 if labels else self.total
        return max((int(n.get("total") or 0) for n in self.nodes
                    if all((n.get("labels") or {}).get(k) == v for k, v in labels.items())), default=0)


@dataclass(frozen=True)
class Grant:
    """Devices granted: a new allocation (201) or the one this request already holds (200)."""

    allocation: dict[str, Any]  # the monitor's allocation record: id, devices, ...
    existing: bool = False

    @property
    def id(self) -> str:
        return str(self.allocation["id"])

    @property
    def devices(self) -> list[dict[str, Any]]:
        return list(self.allocation.get("devices") or [])


@dataclass(frozen=True)
class Refusal:
    """The monitor answered, and not with what was asked for.

    `code` is the monitor's (none_free, conflict, over_user_limit, ...), None when the answer
    carried none (401, 403, a bad request). For a conflict, `allocation_id` names the allocation
    that this (user, server) already holds, of another size.
    """

    status: int
    message: str
    code: str | None = None
    allocation_id: str | None = None


class MonitorClient:
    """The monitor's API at `url` (ending in /services/gpu-monitor/), as `token`, waiting at most
    `timeout` seconds for each answer."""

    def __init__(self, url: str, token: str, timeout: float):
        self.url, self.token, self.timeout = url, token, timeout

    async def host(self) -> Host:
        status, data = await self._request("GET", "api/host")
        if status != 200:
            raise MonitorUnavailable(f"the GPU monitor answered {status}: {data.get('message')}")
        return Host.from_json(data)

    async def devices(self) -> Devices:
        status, data = await self._request("GET", "api/devices")
        if status != 200:
            raise MonitorUnavailable(f"the GPU monitor answered {status}: {data.get('message')}")
        return Devices(host=Host.from_json(data.get("host") or {}), total=int(data["total"]),
                       free=int(data["free"]), rows=tuple(data.get("devices") or ()),
                       nodes=tuple(data.get("nodes") or ()))

    async def allocate(self, request: AllocationRequest) -> Grant | Refusal:
        body = asdict(request)
        labels = body.pop("node_labels")
        if labels:  # only when asked: a request without it reads as before
            body["node_labels"] = dict(labels)
        if not body["node"]:
            del body["node"]
        status, data = await self._request("POST", "api/allocations", body)
        if status in (200, 201):
            return Grant(allocation=data, existing=status == 200)
        return _refusal(status, data)

    async def release(self, allocation_id: str) -> Refusal | None:
        """None once the allocation is no longer held: released now, or already (404)."""
        status, data = await self._request("DELETE", f"api/allocations/{allocation_id}")
        if status in (200, 404):
            return None
        return _refusal(status, data)

    async def _request(self, method: str, path: str, body: dict[str, Any] | None = None
                       ) -> tuple[int, dict[str, Any]]:
        request = HTTPRequest(
            self.url + path,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
            body=None if body is None else json.dumps(body),
            request_timeout=self.timeout,
        )
        try:
            response = await AsyncHTTPClient().fetch(request, raise_error=False)
        except (OSError, HTTPClientError) as e:  # refused, unresolvable, timed out
            raise MonitorUnavailable(f"the GPU monitor did not answer ({e})") from None
        # 502-504 without the monitor's JSON: the proxy or the network answered in its place
        if response.code == 599 or response.code >= 502 and not response.body.startswith(b"{"):
            raise MonitorUnavailable(f"the GPU monitor did not answer ({response.error or response.code})")
        try:
            data = json.loads(response.body or b"{}")
        except ValueError:
            data = None
        if not isinstance(data, dict):
            data = {"message": response.body[:200].decode(errors="replace")}
        return response.code, data


def _refusal(status: int, data: dict[str, Any]) -> Refusal:
    allocation_id = data.get("allocation_id")
    return Refusal(status=status, message=str(data.get("message", f"monitor answered {status}")),
                   code=data.get("code"), allocation_id=str(allocation_id) if allocation_id else None)

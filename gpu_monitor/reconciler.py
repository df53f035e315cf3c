"""The shell around `reconcile.plan()`: read Docker and the hub, plan, apply, log.

Runs once when the monitor starts and then every `interval` seconds. Docker is read through
docker-py in the monitor's thread pool (containers carrying `org.gpuhub.allocation`); the hub's
view comes from its REST API with the monitor's own token (`GET users?state=active`, scopes
list:users and read:servers). A hub that does not answer is "no opinion" (see reconcile.py), so
a hub outage neither keeps devices forever nor releases on the hub's word.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from .app import Monitor
from .devices import Device
from .loops import every
from .reconcile import ContainerView, Plan, plan

log = logging.getLogger(__name__)

LABEL = "org.gpuhub"
PAGINATION = "application/jupyterhub-pagination+json"


def container_view(attrs: dict[str, Any], devices: Iterable[Device]) -> ContainerView:
    """One container's `docker inspect` as the planner sees it. Device requests (NVIDIA ids)
    and the cpuset are mapped back to device UUIDs through the device table."""
    labels = (attrs.get("Config") or {}).get("Labels") or {}
    host = attrs.get("HostConfig") or {}
    by_docker_id = {d.docker_device_id: d.uuid for d in devices if d.docker_device_id}
    by_cpuset = {d.cpuset: d.uuid for d in devices if d.cpuset}
    ids: list[str] = []
    for request in host.get("DeviceRequests") or []:
        for device_id in request.get("DeviceIDs") or []:
            ids.append(by_docker_id.get(device_id, device_id))
    cpuset = host.get("CpusetCpus") or ""
    if cpuset in by_cpuset:
        ids.append(by_cpuset[cpuset])
    return ContainerView(
        name=(attrs.get("Name") or "").lstrip("/"),
        allocation_id=labels.get(f"{LABEL}.allocation") or None,
        user=labels.get(f"{LABEL}.user", ""),
        server=labels.get(f"{LABEL}.server", ""),
        running=bool((attrs.get("State") or {}).get("Running")),
        device_ids=tuple(ids),
    )


class Reconciler:
    def __init__(self, monitor: Monitor, docker: Any, hub_api_url: str, api_token: str,
                 interval: float, grace_seconds: float) -> None:
        self.monitor = monitor
        self.docker = docker
        self.hub_api_url = hub_api_url
        self._token = api_token
        self.interval = interval
        self.grace_seconds = grace_seconds
        self.last_plan: Plan | None = None

    def _containers(self) -> list[ContainerView]:
        found = self.docker.containers.list(all=True, filters={"label": f"{LABEL}.allocation"})
        return [container_view(c.attrs, self.monitor.devices) for c in found]

    async def hub_servers(self) -> set[tuple[str, str]] | None:
        """(user, server) of every server the hub lists as running or pending; None if the hub
        cannot be asked."""
        client = AsyncHTTPClient()
        servers: set[tuple[str, str]] = set()
        offset = 0
        try:
            while True:
                response = await client.fetch(HTTPRequest(
                    f"{self.hub_api_url}/users?state=active&offset={offset}&limit=200",
                    headers={"Authorization": f"token {self._token}", "Accept": PAGINATION},
                    request_timeout=10))
                page = json.loads(response.body)
                for user in page["items"]:
                    for name in (user.get("servers") or {}):
                        servers.add((user["name"], name))
                following = (page.get("_pagination") or {}).get("next")
                if not following:
                    return servers
                offset = int(following["offset"])
        except Exception as e:  # noqa: BLE001 - any failure means "no opinion", logged
            log.warning("reconcile: cannot ask the hub which servers run (%s); deciding from Docker alone", e)
            return None

    def _remove_if_stopped(self, name: str) -> bool:
        import docker.errors  # the monitor image has docker-py; imported here for the fast tier

        try:
            container = self.docker.containers.get(name)
            container.reload()
            if container.status == "running":
                return False
            container.remove()
            return True
        except docker.errors.NotFound:
            return False

    async def once(self) -> Plan:
        m = self.monitor
        containers = await m.run(self._containers)
        hub = await self.hub_servers()
        allocations = await m.run(m.store.list)
        result = plan(allocations, containers, hub, now=time.time(), grace_seconds=self.grace_seconds)
        for step in result.release:
            if await m.run(m.store.release, step.target):
                log.warning("reconcile: released %s: %s", step.target, step.reason)
        for step in result.remove_containers:
            if await m.run(self._remove_if_stopped, step.target):
                log.warning("reconcile: removed container %s: %s", step.target, step.reason)
        for step in result.warnings:
            log.warning("reconcile: %s: %s", step.target, step.reason)
        self.last_plan = result
        return result

    async def run_forever(self) -> None:
        await every(self.interval, self.once, "reconcile", now=True)

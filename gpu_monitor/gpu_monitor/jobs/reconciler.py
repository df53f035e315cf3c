"""The shell around `reconcile.plan()`: read Docker and the hub, plan, apply, log.

Runs once when the monitor starts and then every `interval` seconds. Docker is read through
docker-py in the monitor's thread pool, and only through the container list (GET
/containers/json: id, names, labels, state): never `inspect`, which returns every container's
environment, user API tokens included, and which the monitor's Docker API filter refuses. The
list is scoped to this deployment (labels `org.gpuhub.allocation` and
`org.gpuhub.deployment=<GPUHUB_DEPLOYMENT>`), so a test stack beside production on one daemon
never touches the other's containers. A container's devices come from its `org.gpuhub.devices`
label (device UUIDs, comma-separated), set by the spawner. The hub's view comes from its REST
API with the monitor's own token (`GET users?state=active`, scopes list:users and
read:servers). A hub that does not answer is "no opinion" (see reconcile.py), so a hub outage
neither keeps devices forever nor releases on the hub's word.

Applying a plan: releases first (each checked again against Docker just before: a container
that started since the list keeps its allocation), then adoptions (the store checks again
under its lock), then removals of stopped containers (checked stopped through the list, then
DELETE without force: Docker refuses to remove a container that started meanwhile). The
devices of running containers that hold no allocation and could not be adopted are handed to
the allocator as unavailable (`Monitor.unavailable`) until a round finds them gone.

One engine's containers say nothing about another node's: the reconciler plans only for the
allocations of its own node (`node`, GPUHUB_NODE_NAME), and an adopted allocation is on it.
Allocations on other nodes are left alone here (reconciling them against Swarm's tasks comes
with the Swarm spawner).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from ..contract import LABEL_ALLOCATION, LABEL_DEPLOYMENT, LABEL_DEVICES, LABEL_PROFILE, LABEL_SERVER, LABEL_USER
from ..devices import LOCAL_NODE
from ..monitor import Monitor
from ..reconcile import ContainerView, Plan, plan
from .loops import every

# the name of the module this came from (reconciler.py): the service's log lines stay as they were
log = logging.getLogger("gpu_monitor.reconciler")

PAGINATION = "application/jupyterhub-pagination+json"


def container_view(attrs: dict[str, Any]) -> ContainerView:
    """One entry of Docker's container list (`GET /containers/json`) as the planner sees it."""
    labels = attrs.get("Labels") or {}
    names = attrs.get("Names") or []
    devices = labels.get(LABEL_DEVICES)
    return ContainerView(
        name=(names[0] if names else attrs.get("Id", "")[:12]).lstrip("/"),
        allocation_id=labels.get(LABEL_ALLOCATION) or None,
        user=labels.get(LABEL_USER, ""),
        server=labels.get(LABEL_SERVER, ""),
        running=attrs.get("State") == "running",
        device_ids=None if devices is None else tuple(d.strip() for d in devices.split(",") if d.strip()),
        profile=labels.get(LABEL_PROFILE, ""),
        id=attrs.get("Id", ""),
    )


class Reconciler:
    def __init__(self, monitor: Monitor, docker: Any, hub_api_url: str, api_token: str,
                 interval: float, grace_seconds: float, deployment: str, node: str = LOCAL_NODE) -> None:
        self.monitor = monitor
        self.node = node  # the node whose engine `docker` is: only its allocations are planned for
        self.deployment = deployment
        self.docker = docker
        self.hub_api_url = hub_api_url
        self._token = api_token
        self.interval = interval
        self.grace_seconds = grace_seconds

    def _list(self, **filters: Any) -> list[ContainerView]:
        """This deployment's containers that carry an allocation, from the list endpoint only
        (`sparse=True`: docker-py would otherwise inspect each one)."""
        labels = [LABEL_ALLOCATION, f"{LABEL_DEPLOYMENT}={self.deployment}"]
        extra = filters.pop("label", None)
        if extra:
            labels.append(extra)
        found = self.docker.containers.list(all=True, sparse=True, filters={"label": labels, **filters})
        return [container_view(c.attrs) for c in found]

    def _containers(self) -> list[ContainerView]:
        return self._list()

    def _still_unheld(self, allocation_id: str) -> bool:
        """No running container carries `allocation_id` now (one may have started since the
        round's list: releasing then would hand its devices out twice)."""
        return not any(c.running for c in self._list(label=f"{LABEL_ALLOCATION}={allocation_id}"))

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

    def _remove_if_stopped(self, container_id: str) -> bool:
        """Remove a container the list shows stopped; Docker refuses (409) one that started
        since, as the request does not force. No inspect: the list with an id filter says the
        state."""
        import docker.errors  # the monitor image has docker-py; imported here for the fast tier

        now = self._list(id=container_id)
        if not now or now[0].running:
            return False
        try:
            self.docker.api.remove_container(container_id)
        except docker.errors.NotFound:
            return False
        except docker.errors.APIError as e:
            if e.status_code == 409:  # started again meanwhile, or being removed already
                return False
            raise
        return True

    async def once(self) -> Plan:
        m = self.monitor
        containers = await m.run(self._containers)
        hub = await self.hub_servers()
        allocations = [a for a in await m.run(m.store.list) if a.node == self.node]
        seats = m.seats()
        result = plan(allocations, containers, hub, now=time.time(), grace_seconds=self.grace_seconds, seats=seats)
        for step in result.release:
            if not await m.run(self._still_unheld, step.target):
                log.warning("reconcile: kept %s: a container carrying it is running now", step.target)
                continue
            if await m.run(m.store.release, step.target):
                log.warning("reconcile: released %s: %s", step.target, step.reason)
        unavailable = set(result.unavailable)
        for adoption in result.adopt:
            adopted = replace(adoption.allocation, node=self.node)
            refusal = await m.run(m.store.adopt, adopted, seats)
            if refusal is None:
                log.warning("reconcile: adopted %s for %s: %s", adoption.allocation.id, adoption.target,
                            adoption.reason)
            else:
                unavailable.update(adoption.allocation.device_uuids)
                log.error("reconcile: could not hold allocation %s again for running container %s (%s); "
                          "its devices are offered to no one until it is gone. Stop it: docker stop %s",
                          adoption.allocation.id, adoption.target, refusal, adoption.target)
        m.unavailable = frozenset(unavailable)
        by_name = {c.name: c for c in containers}
        for step in result.remove_containers:
            c = by_name.get(step.target)
            if c is not None and await m.run(self._remove_if_stopped, c.id or c.name):
                log.warning("reconcile: removed container %s: %s", step.target, step.reason)
        for step in result.warnings:
            log.error("reconcile: %s: %s", step.target, step.reason)
        return result

    async def run_forever(self) -> None:
        await every(self.interval, self.once, "reconcile", now=True)

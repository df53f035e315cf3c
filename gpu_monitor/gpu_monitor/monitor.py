"""The service's shared state: what the HTTP handlers and the background jobs both work on.

`Monitor` holds the nodes, their devices and the devices' last states (as the agents reported
them: jobs/inventory_refresher.py replaces them every interval), the host's facts (`HostInfo`),
the store, the allocation policy, the thread pool that every blocking call goes through, the allocation
batcher, the devices reconciliation found in use without an allocation (`unavailable`) and the
health of the database. It speaks no HTTP (handlers/ do) and runs no loop (jobs/ do): handlers
import this module, jobs import it too, and it imports neither.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from .allocator import Allocation, Policy
from .batcher import AllocationBatcher
from .devices import LOCAL_NODE, Device, Node
from .idle import Notices
from .sampler import DeviceState
from .store import HEALTH_TIMEOUT_SECONDS, AllocationStore

T = TypeVar("T")


@dataclass
class HostInfo:
    """What the backend says about the host: its name, the driver's version and the CUDA
    version the driver supports (NVML only)."""

    backend: str
    driver_version: str | None = None
    cuda_driver_version: tuple[int, int] | None = None

    def to_json(self) -> dict[str, Any]:
        cuda = self.cuda_driver_version
        return {"backend": self.backend, "driver_version": self.driver_version,
                "cuda_driver_version": f"{cuda[0]}.{cuda[1]}" if cuda else None}


class Monitor:
    """What the handlers and the jobs share: nodes, devices and their states, store, policy, the
    thread pool, the allocation batcher and the idle notices."""

    def __init__(self, devices: list[Device], host: HostInfo, store: AllocationStore, policy: Policy,
                 workers: int = 8, nodes: list[Node] | None = None,
                 states: dict[str, DeviceState] | None = None) -> None:
        # the hosts the devices are on (a single host: this one), replaced together by `set_inventory`
        self.nodes = nodes if nodes is not None else [Node(LOCAL_NODE)]
        self.devices = devices
        self.by_uuid = {d.uuid: d for d in devices}
        self._states = states or {}
        self.host = host
        self.store = store
        self.policy = policy
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix="gpu-monitor")
        self.allocations = AllocationBatcher(self)
        # written by the idle reclaimer (jobs/idle_reclaimer.py) after each check
        self.notices = Notices()
        # devices running containers use without an allocation (set by each reconcile round):
        # never granted while they are
        self.unavailable: frozenset[str] = frozenset()
        # when allocations began to time out waiting for a lock (None: the last one did not)
        self.busy_since: float | None = None
        # the health check's own thread: a pool full of waiting allocations must not delay it
        self._health_executor = ThreadPoolExecutor(1, thread_name_prefix="gpu-monitor-health")
        self._health: asyncio.Future[Any] | None = None

    def set_inventory(self, nodes: list[Node], devices: list[Device], states: dict[str, DeviceState]) -> None:
        """What the agents reported last (jobs/inventory_refresher.py), all at once: readers on the
        event loop never see nodes of one round with devices of another."""
        self.nodes, self.devices, self.by_uuid, self._states = nodes, devices, {d.uuid: d for d in devices}, states

    def states(self) -> dict[str, DeviceState]:
        """Each device's last reading and cumulative counters, as its node's agent reported them."""
        return self._states

    async def database_health(self) -> tuple[bool, str]:
        """(ok, sentence) about PostgreSQL, within HEALTH_TIMEOUT_SECONDS and a little more.
        Checks that arrive while one is in flight share it (no pile-up when the database hangs)."""
        loop = asyncio.get_running_loop()
        if self._health is None or self._health.done():
            self._health = loop.run_in_executor(self._health_executor, self.store.health)
        try:
            health = await asyncio.wait_for(asyncio.shield(self._health), HEALTH_TIMEOUT_SECONDS + 1)
        except TimeoutError:
            return False, f"the database does not answer within {HEALTH_TIMEOUT_SECONDS + 1:g} s"
        if not health.ok:
            return False, health.message
        if self.busy_since is not None:
            return False, ("database busy: allocations have been giving up waiting for the allocation lock "
                           f"since {time.strftime('%H:%M:%S UTC', time.gmtime(self.busy_since))}; look for a "
                           "session holding it in pg_stat_activity (state 'idle in transaction')")
        return True, "ok"

    def seats(self) -> dict[str, int]:
        """Every device that can be handed out, and how many allocations may hold it at once."""
        parents = {d.parent_uuid for d in self.devices if d.parent_uuid}
        return {d.uuid: self.policy.seats(d.kind) for d in self.devices if d.uuid not in parents}

    def notice(self, allocation_id: str) -> dict[str, float] | None:
        n = self.notices.get(allocation_id)
        return None if n is None else {"idle_since": n.idle_since, "reclaim_at": n.reclaim_at}

    def soonest_reclaim(self) -> float | None:
        return self.notices.soonest_reclaim()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, partial(fn, *args))

    def allocation_json(self, a: Allocation) -> dict[str, Any]:
        devices = []
        for uuid in a.device_uuids:
            d = self.by_uuid.get(uuid)
            devices.append({"uuid": uuid, "index": d.index if d else None, "kind": d.kind if d else None,
                            "name": d.name if d else None,
                            "docker_device_id": d.docker_device_id if d else None,
                            "cpuset": d.cpuset if d else None,
                            "cores": int(d.attributes.get("cores", 0)) if d and d.kind == "cpu-slice" else None})
        return {"id": a.id, "user": a.user, "server": a.server, "profile": a.profile,
                "devices": devices, "created_at": a.created_at, "node": a.node}

    def devices_json(self, allocations: list[Allocation], viewer: str | None) -> dict[str, Any]:
        states = self._states
        holders: dict[str, list[Allocation]] = {}
        for a in allocations:
            for uuid in a.device_uuids:
                holders.setdefault(uuid, []).append(a)
        parents = {d.parent_uuid for d in self.devices if d.parent_uuid}
        offering = {n.id for n in self.nodes if n.state == "up"}
        rows = []
        free = 0
        for d in sorted(self.devices, key=lambda d: (d.index, d.uuid)):
            held = holders.get(d.uuid, [])
            seats = self.policy.seats(d.kind)
            allocatable = d.uuid not in parents
            unavailable = d.uuid in self.unavailable
            is_free = allocatable and d.node in offering and len(held) < seats and not unavailable
            free += is_free
            state = states.get(d.uuid)
            last = state.last if state else None
            rows.append({
                "uuid": d.uuid, "node": d.node, "index": d.index, "kind": d.kind, "name": d.name,
                "memory_total_bytes": d.memory_total_bytes, "parent_uuid": d.parent_uuid,
                "allocatable": allocatable, "seats": seats, "holders": len(held), "free": is_free,
                "unavailable": unavailable,
                "mine": viewer is not None and any(a.user == viewer for a in held),
                "utilization_ratio": last.utilization_ratio if last else None,
                "memory_used_bytes": last.memory_used_bytes if last else None,
                "temperature_celsius": last.temperature_celsius if last else None,
                "power_watts": last.power_watts if last else None,
                "sampled_at": last.timestamp if last else None,
                "sample_errors": list(last.errors) if last else [],
                "busy_seconds": state.busy_seconds if state else 0.0,
                "sampled_seconds": state.sampled_seconds if state else 0.0,
            })
        allocatable_total = sum(1 for r in rows if r["allocatable"])
        node_total: Counter[str] = Counter(str(r["node"]) for r in rows if r["allocatable"])
        node_free: Counter[str] = Counter(str(r["node"]) for r in rows if r["free"])
        nodes = [{"id": n.id, "hostname": n.hostname, "labels": dict(n.labels), "state": n.state, "reason": n.reason,
                  "total": node_total[n.id], "free": node_free[n.id]} for n in self.nodes]
        return {"host": self.host.to_json(), "total": allocatable_total, "free": free, "nodes": nodes,
                "devices": rows}

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        self._health_executor.shutdown(wait=False, cancel_futures=True)

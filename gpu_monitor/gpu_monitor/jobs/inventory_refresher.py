"""`InventoryRefresher`: every interval, the nodes, devices and readings the agents wrote
(inventory.py) become the monitor's (`Monitor.set_inventory`), each node's state decided by
`inventory.node_states` from its agent's heartbeat and, on a swarm (GPUHUB_SWARM), from Swarm's
node list (`read_swarm_nodes`: drained, down, or ready without an agent)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..inventory import Inventory, NodeRecord, SwarmNode, node_states
from ..monitor import Monitor
from .loops import every

log = logging.getLogger("gpu_monitor.inventory")


def read_swarm_nodes(docker: Any) -> list[SwarmNode]:
    """Swarm's nodes (`GET /nodes` of a manager's engine; docker-py's low-level client)."""
    nodes = []
    for n in docker.api.nodes():
        spec, status = n.get("Spec") or {}, n.get("Status") or {}
        nodes.append(SwarmNode(n["ID"], (n.get("Description") or {}).get("Hostname", ""), spec.get("Labels") or {},
                               spec.get("Availability", "active"), status.get("State", "unknown"),
                               status.get("Message", "")))
    return nodes


class InventoryRefresher:
    def __init__(self, monitor: Monitor, inventory: Inventory, interval: float, node_timeout: float,
                 swarm_nodes: Callable[[], list[SwarmNode]] | None = None) -> None:
        self.monitor, self.inventory = monitor, inventory
        self.interval, self.node_timeout = interval, node_timeout
        self.swarm_nodes = swarm_nodes
        self._states: dict[str, str] = {}  # node id -> state last seen, to log changes once
        self._swarm_error: str | None = None
        self._down: set[str] = set()  # nodes Swarm reports not ready
        # nodes back from down: their heartbeat then, until their agent reports anew (node_states)
        self._awaiting_report: dict[str, float] = {}

    async def _swarm(self) -> list[SwarmNode] | None:
        """Swarm's node list, or None (heartbeats alone decide) when there is no swarm to ask
        or its manager does not answer: a manager's hiccup must not take every node away."""
        if self.swarm_nodes is None:
            return None
        try:
            nodes = await self.monitor.run(self.swarm_nodes)
        except Exception as e:  # noqa: BLE001 - said once, then heartbeats decide
            if self._swarm_error != str(e):
                log.warning("Swarm's node list is not available (%s); node states follow the agents' reports alone", e)
            self._swarm_error = str(e)
            return None
        if self._swarm_error is not None:
            log.info("Swarm's node list is available again")
            self._swarm_error = None
        return nodes

    async def refresh(self) -> None:
        m = self.monitor
        records, devices, states = await m.run(self.inventory.read)
        swarm = await self._swarm()
        self._track_returns(records, swarm)
        nodes = node_states(records, time.time(), self.node_timeout, swarm, self._awaiting_report)
        for node in nodes:
            before = self._states.get(node.id)
            if before != node.state:
                count = sum(1 for d in devices if d.node == node.id)
                if node.state == "up":
                    log.info("node %s (%s) is up with %d device(s)", node.id, node.hostname, count)
                else:
                    log.warning("node %s (%s) is %s: %s; its %d device(s) are offered to no one", node.id,
                                node.hostname, node.state, node.reason, count)
                self._states[node.id] = node.state
        m.set_inventory(nodes, devices, states)

    def _track_returns(self, records: Sequence[NodeRecord], swarm: Sequence[SwarmNode] | None) -> None:
        """A node Swarm reported down and now ready is not up until its agent reports again: its
        last heartbeat may be from before it went down (measured: "up" for 3 s on that stale
        heartbeat, then "no-agent" until the restarted agent registered). Compared by the
        heartbeat's own value, not by clocks: the agent's and the monitor's may differ."""
        seen = {r.id: r.seen_at for r in records}
        for s in swarm or ():
            if s.status != "ready":
                self._down.add(s.id)
                self._awaiting_report.pop(s.id, None)
            elif s.id in self._down:
                self._down.discard(s.id)
                self._awaiting_report[s.id] = seen.get(s.id, 0.0)
        for node_id, then in list(self._awaiting_report.items()):
            if seen.get(node_id, then) > then:
                del self._awaiting_report[node_id]

    async def run_forever(self) -> None:
        await every(self.interval, self.refresh, "reading the inventory")

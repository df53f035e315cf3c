"""`InventoryRefresher`: every interval, the nodes, devices and readings the agents wrote
(inventory.py) become the monitor's (`Monitor.set_inventory`), each node up or lost by its
heartbeat (`inventory.node_states`)."""

from __future__ import annotations

import logging
import time

from ..inventory import Inventory, node_states
from ..monitor import Monitor
from .loops import every

log = logging.getLogger("gpu_monitor.inventory")


class InventoryRefresher:
    def __init__(self, monitor: Monitor, inventory: Inventory, interval: float, node_timeout: float) -> None:
        self.monitor, self.inventory = monitor, inventory
        self.interval, self.node_timeout = interval, node_timeout
        self._states: dict[str, str] = {}  # node id -> state last seen, to log changes once

    async def refresh(self) -> None:
        m = self.monitor
        records, devices, states = await m.run(self.inventory.read)
        nodes = node_states(records, time.time(), self.node_timeout)
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

    async def run_forever(self) -> None:
        await every(self.interval, self.refresh, "reading the inventory")

"""`Agent`: one node's devices into the inventory (inventory.py), then their readings every
interval.

Every node runs one: on a single host, the monitor service itself for its node; on a Swarm,
the `gpu-monitor-agent` global service (`python -m gpu_monitor agent`). It registers the node
and the devices its backend found, then reports the sampler's states and the node's heartbeat
every `interval` seconds. A device another node already reported is refused at registration
and left out of every report, with an error in the log that names both nodes. A report that
finds the node's row gone (an operator removed it) registers again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from ..devices import Device
from ..inventory import Inventory
from ..monitor import HostInfo
from ..sampler import DeviceState
from .loops import every

log = logging.getLogger("gpu_monitor.agent")


class Agent:
    def __init__(self, inventory: Inventory, node_id: str, hostname: str, labels: Mapping[str, str],
                 host: HostInfo, devices: Sequence[Device], states: Callable[[], dict[str, DeviceState]],
                 interval: float, clock: Callable[[], float] = time.time) -> None:
        self.inventory, self.node_id, self.hostname, self.labels = inventory, node_id, hostname, dict(labels)
        # the backend's devices, on this node
        self.host, self.devices, self._states = host, [replace(d, node=node_id) for d in devices], states
        self.interval, self._clock = interval, clock
        self.started_at = clock()
        self.refused: dict[str, str] = {}  # uuid -> the node that has it
        self.registered = False

    async def register(self) -> None:
        refused = await asyncio.to_thread(self.inventory.register, self.node_id, self.hostname, self.labels,
                                          self.host, self.devices, self.started_at, self._clock())
        for uuid, owner in sorted(refused.items()):
            log.error("device %s is already reported by node %s: not offered from node %s. Two nodes cannot have "
                      "one device; look for a copied disk image or two agents given the same node name", uuid, owner,
                      self.node_id)
        self.refused = refused
        self.registered = True
        log.info("node %s (%s) registered with %d device(s)%s", self.node_id, self.hostname,
                 len(self.devices) - len(refused), f", {len(refused)} refused" if refused else "")

    async def report(self) -> None:
        if not self.registered:
            await self.register()
        states = {uuid: s for uuid, s in self._states().items() if uuid not in self.refused}
        if not await asyncio.to_thread(self.inventory.report, self.node_id, states, self._clock()):
            log.warning("node %s is no longer in the inventory; registering it again", self.node_id)
            self.registered = False
            await self.register()

    async def run_forever(self) -> None:
        await every(self.interval, self.report, f"reporting node {self.node_id}", now=True)

"""`UsageRecorder`: every `interval` seconds, what each device did goes into the store, per
allocation and hour (accounting) and per device and minute (the dashboard's history)."""

from __future__ import annotations

import time

from ..allocator import Allocation
from ..monitor import Monitor
from ..sampler import CounterDeltas, DeviceState
from .loops import every


class UsageRecorder:
    """Every `interval` seconds: what each device did since the last time (the sampler's
    cumulative busy and sampled seconds) goes to every allocation holding it, per hour, and
    each device's utilisation and memory become a point of its per-minute history."""

    def __init__(self, monitor: Monitor, interval: float) -> None:
        self.monitor = monitor
        self.interval = interval
        self._grown = CounterDeltas()

    def deltas(self, states: dict[str, DeviceState], allocations: list[Allocation], now: float
               ) -> tuple[list[tuple[str, float, float, float]], list[tuple[str, float, float | None, float | None]]]:
        hour = now - now % 3600
        minute = now - now % 60
        usage: dict[str, list[float]] = {}
        points = []
        holding: dict[str, list[Allocation]] = {}  # device -> its holders, built once per round
        for a in allocations:
            for uuid in a.device_uuids:
                holding.setdefault(uuid, []).append(a)
        for uuid, (busy, sampled) in self._grown.take(states).items():
            state = states[uuid]
            if sampled <= 0:
                continue
            points.append((uuid, minute, busy / sampled if state.last.utilization_ratio is not None else None,
                           None if state.last.memory_used_bytes is None else float(state.last.memory_used_bytes)))
            for a in holding.get(uuid, ()):
                total = usage.setdefault(a.id, [0.0, 0.0])
                total[0] += busy
                total[1] += sampled
        return [(a, hour, b, s) for a, (b, s) in usage.items()], points

    async def flush(self) -> None:
        m = self.monitor
        allocations = await m.run(m.store.list)
        usage, points = self.deltas(m.states(), allocations, time.time())
        await m.run(m.store.record_usage, usage, points)

    async def run_forever(self) -> None:
        await every(self.interval, self.flush, "writing usage")

"""Idle reclaim: a server whose devices do nothing gets a notice, then is stopped.

`idle_step()` is the pure decision, called every check with each device's mean utilisation
since the previous check (None when it was not measured: no evidence is never idleness). An
allocation is active in a check if any of its devices was at or above the policy's
`below_utilization`; it is idle since the end of its last active check (or since it was
granted, or since the monitor started, whichever is later: a restarted monitor does not know
what happened while it was down). From `notice_after_minutes` of idleness on, it carries a
notice with the time it will be stopped (`reclaim_at`); at `stop_after_minutes` it is stopped
through the hub's API, which stops the container and, through the spawner, releases the
devices. `IdleReclaimer` is the shell: sampler deltas in, notices out, stops through the hub.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from .allocator import Allocation
from .loops import every
from .policy import IdleReclaim
from .sampler import CounterDeltas

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Notice:
    idle_since: float
    reclaim_at: float


def idle_step(
    allocations: Iterable[Allocation],
    activity: Mapping[str, float | None],
    last_active: Mapping[str, float],
    now: float,
    started: float,
    policy: IdleReclaim,
) -> tuple[dict[str, float], dict[str, Notice], list[Allocation]]:
    """(last active time per allocation, notices, allocations to stop now)."""
    active_at: dict[str, float] = {}
    notices: dict[str, Notice] = {}
    stop: list[Allocation] = []
    for a in allocations:
        readings = [activity.get(uuid) for uuid in a.device_uuids]
        busy = any(r is None or r >= policy.below_utilization for r in readings)
        since = now if busy else last_active.get(a.id, max(a.created_at, started))
        active_at[a.id] = since
        idle = now - since
        if not policy.enabled or idle < policy.notice_after_minutes * 60:
            continue
        notices[a.id] = Notice(idle_since=since, reclaim_at=since + policy.stop_after_minutes * 60)
        if idle >= policy.stop_after_minutes * 60:
            stop.append(a)
    return active_at, notices, stop


class IdleReclaimer:
    def __init__(self, monitor: Any, policy: IdleReclaim, hub_api_url: str, api_token: str,
                 interval: float) -> None:
        self.monitor = monitor
        self.policy = policy
        self.hub_api_url = hub_api_url
        self._token = api_token
        self.interval = interval
        self.started = time.time()
        self.last_active: dict[str, float] = {}
        self.notices: dict[str, Notice] = {}
        self._grown = CounterDeltas()
        self._asked_to_stop: dict[str, float] = {}

    def activity(self) -> dict[str, float | None]:
        """Each device's mean utilisation since the previous call (None: not measured)."""
        states = self.monitor.sampler.states()
        result: dict[str, float | None] = {}
        for uuid, (busy, sampled) in self._grown.take(states).items():
            measured = sampled > 0 and states[uuid].last.utilization_ratio is not None
            result[uuid] = busy / sampled if measured else None
        return result

    async def stop_server(self, a: Allocation) -> None:
        user = quote(a.user, safe="")
        path = f"users/{user}/servers/{quote(a.server, safe='')}" if a.server else f"users/{user}/server"
        response = await AsyncHTTPClient().fetch(HTTPRequest(
            f"{self.hub_api_url}/{path}", method="DELETE",
            headers={"Authorization": f"token {self._token}"}, request_timeout=30), raise_error=False)
        if response.code in (202, 204):
            log.warning("idle reclaim: stopped %s/%s (devices %s idle since %s)", a.user, a.server,
                        ",".join(a.device_uuids), time.ctime(self.notices[a.id].idle_since))
        else:
            log.error("idle reclaim: the hub refused to stop %s/%s: %s %s", a.user, a.server, response.code,
                      response.body[:200] if response.body else response.error)

    async def once(self) -> None:
        m = self.monitor
        allocations = await m.run(m.store.list)
        now = time.time()
        self.last_active, self.notices, stop = idle_step(
            allocations, self.activity(), self.last_active, now, self.started, self.policy)
        for a in stop:
            if now - self._asked_to_stop.get(a.id, 0.0) < 60:
                continue  # asked recently; the hub is stopping it
            self._asked_to_stop[a.id] = now
            await self.stop_server(a)
        held = {a.id for a in allocations}
        self._asked_to_stop = {k: v for k, v in self._asked_to_stop.items() if k in held}

    async def run_forever(self) -> None:
        await every(self.interval, self.once, "idle check")

"""`IdleReclaimer`, the shell around `idle.idle_step()`: sampler deltas in, notices out,
servers stopped through the hub's API.

The hub reads the policy too, once, when it starts: only then does it give the monitor's token
the `servers` scope that stopping needs. A policy that turns idle reclaim on, read by a
restarted monitor beside a hub that was not restarted, would show people notices the hub then
refuses (403). So the monitor asks the hub what its token may do (`GET user`, `token_scopes`):
at start, it refuses to start when the hub answers without that scope (`__main__`'s
`check_reclaim_scope`); and every check publishes notices only while the hub has confirmed
the scope (a hub restarted later with reclaim off is noticed too).
"""

from __future__ import annotations

import json
import logging
import time
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from ..allocator import Allocation
from ..idle import idle_step, reclaim_scope_problem
from ..monitor import Monitor
from ..policy import IdleReclaim
from ..sampler import CounterDeltas
from .loops import every

# the name of the module this came from (idle.py): the service's log lines stay as they were
log = logging.getLogger("gpu_monitor.idle")


class HubUnreachable(Exception):
    pass


async def token_scopes(hub_api_url: str, token: str, timeout: float = 10) -> set[str]:
    """The scopes the hub grants `token` (GET user); HubUnreachable if it does not answer."""
    try:
        response = await AsyncHTTPClient().fetch(HTTPRequest(
            f"{hub_api_url}/user", headers={"Authorization": f"token {token}"}, request_timeout=timeout))
        return set(json.loads(response.body).get("scopes") or ())
    except Exception as e:  # noqa: BLE001 - connection refused, timeout, 5xx, not JSON
        raise HubUnreachable(str(e)) from None


class IdleReclaimer:
    """Every `interval` seconds: each device's mean utilisation since the last check, the
    decision (`idle_step`), the notices published in `monitor.notices` (only while the hub
    confirms that it would stop the servers), and the servers due stopped through the hub."""

    def __init__(self, monitor: Monitor, policy: IdleReclaim, hub_api_url: str, api_token: str,
                 interval: float) -> None:
        self.monitor = monitor
        self.policy = policy
        self.hub_api_url = hub_api_url
        self._token = api_token
        self.interval = interval
        self.started = time.time()
        self.last_active: dict[str, float] = {}
        self.notices = monitor.notices  # what the API shows; this reclaimer writes it
        self._grown = CounterDeltas()
        self._asked_to_stop: dict[str, float] = {}
        # the hub confirmed (True) or denied (False) that this token may stop servers; None: not
        # known yet. Notices are published only while True.
        self.may_stop: bool | None = None
        self._warned_at = 0.0

    async def check_scope(self) -> bool:
        """Ask the hub whether this token may stop servers (when it answers) and say so."""
        try:
            problem = reclaim_scope_problem(await token_scopes(self.hub_api_url, self._token))
        except HubUnreachable as e:
            if self.may_stop is None and time.monotonic() - self._warned_at > 600:
                self._warned_at = time.monotonic()
                log.warning("idle reclaim: cannot ask the hub what the monitor's token may do (%s); "
                            "no notices until it answers", e)
            return bool(self.may_stop)
        self.may_stop = problem is None
        if problem and time.monotonic() - self._warned_at > 600:
            self._warned_at = time.monotonic()
            log.error("idle reclaim: %s; no notices are shown and no server is stopped meanwhile", problem)
        return self.may_stop

    def activity(self) -> dict[str, float | None]:
        """Each device's mean utilisation since the previous call (None: not measured)."""
        states = self.monitor.states()
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
        self.last_active, notices, stop = idle_step(
            allocations, self.activity(), self.last_active, now, self.started, self.policy)
        if self.policy.enabled and (notices or stop) and not await self.check_scope():
            # a notice promises a stop the hub would refuse: show none (idleness keeps counting)
            notices, stop = {}, []
        self.notices.replace(notices)
        for a in stop:
            if now - self._asked_to_stop.get(a.id, 0.0) < 60:
                continue  # asked recently; the hub is stopping it
            self._asked_to_stop[a.id] = now
            await self.stop_server(a)
        held = {a.id for a in allocations}
        self._asked_to_stop = {k: v for k, v in self._asked_to_stop.items() if k in held}

    async def run_forever(self) -> None:
        await every(self.interval, self.once, "idle check")

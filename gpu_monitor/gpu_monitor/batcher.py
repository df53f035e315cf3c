"""Group commit for allocations (`AllocationBatcher`): the I/O between the handlers, which
submit one request each, and the store, which decides a batch of them in one transaction
(`AllocationStore.allocate_many`, which calls the allocator's pure `decide()`). A "none free"
refusal leaves here saying when an idle server's device is due back (`Refused.free_at`), if
the idle notices know one."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from sqlalchemy.exc import OperationalError

from .allocator import AllocationRequest, Decision, Refused, with_free_at
from .store import is_busy

if TYPE_CHECKING:
    from .monitor import Monitor

# the name of the module this came from (app.py): the service's log lines stay as they were
log = logging.getLogger("gpu_monitor.app")


class AllocationBatcher:
    """Group commit for allocations: requests that arrive while a transaction is running wait
    for it, then are decided together in the next one (`AllocationStore.allocate_many`).

    Deciding is cheap (about a millisecond); a transaction's round trips to PostgreSQL and its
    lock are what cost. One transaction in flight per monitor, however many requests: under a
    burst the p99 latency is a few transactions, not one transaction per request queued ahead.
    """

    MAX_BATCH = 256

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor
        self._queue: list[tuple[AllocationRequest, asyncio.Future[Decision]]] = []
        self._draining = False

    async def submit(self, request: AllocationRequest) -> Decision:
        future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._queue.append((request, future))
        if not self._draining:
            self._draining = True
            asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        m = self.monitor
        try:
            while self._queue:
                batch, self._queue = self._queue[:self.MAX_BATCH], self._queue[self.MAX_BATCH:]
                try:
                    decisions = await m.run(m.store.allocate_many, [r for r, _ in batch], m.devices, m.policy,
                                            None, m.unavailable, m.nodes)
                except Exception as e:  # noqa: BLE001 - answered below, one way or the other
                    if is_busy(e) and m.busy_since is None:
                        m.busy_since = time.time()
                    if len(batch) == 1 or not _may_be_one_requests_fault(e):
                        for _, future in batch:
                            if not future.done():
                                future.set_exception(e)
                        continue
                    log.warning("a batch of %d allocations failed (%s: %s); deciding each alone",
                                len(batch), type(e).__name__, str(e).splitlines()[0] if str(e) else "")
                    for request, future in batch:
                        await self._decide_alone(request, future)
                    continue
                m.busy_since = None
                for (_, future), decision in zip(batch, decisions, strict=True):
                    if not future.done():
                        future.set_result(self._with_free_at(decision))
        finally:
            self._draining = False

    async def _decide_alone(self, request: AllocationRequest, future: asyncio.Future[Decision]) -> None:
        m = self.monitor
        try:
            decision = (await m.run(m.store.allocate_many, [request], m.devices, m.policy, None,
                                    m.unavailable, m.nodes))[0]
        except Exception as e:  # noqa: BLE001 - this request's own error
            if not future.done():
                future.set_exception(e)
        else:
            if not future.done():
                future.set_result(self._with_free_at(decision))

    def _with_free_at(self, decision: Decision) -> Decision:
        """A "none free" refusal, saying when the soonest idle server is due to be stopped."""
        if isinstance(decision, Refused) and decision.code == "none_free":
            free_at = self.monitor.soonest_reclaim()
            if free_at is not None:
                return with_free_at(decision, free_at)
        return decision


def _may_be_one_requests_fault(error: Exception) -> bool:
    """False for errors of the database as a whole (connection lost, timeouts): deciding a
    batch's requests one by one would only repeat them."""
    return not isinstance(error, OperationalError)

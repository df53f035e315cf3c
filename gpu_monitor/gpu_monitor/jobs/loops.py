"""The monitor's periodic tasks (reconcile, usage writes, idle checks) share one loop shape."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

# the name of the module this came from (loops.py): the service's log lines stay as they were
log = logging.getLogger("gpu_monitor.loops")


async def every(interval: float, step: Callable[[], Awaitable[object]], what: str, *, now: bool = False) -> None:
    """Run `step` every `interval` seconds (first right away if `now`) until cancelled. A failed
    step (PostgreSQL, Docker or the hub away) is logged and tried again next round."""
    if not now:
        await asyncio.sleep(interval)
    while True:
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the next round may succeed
            log.exception("%s failed; trying again in %.0f s", what, interval)
        await asyncio.sleep(interval)

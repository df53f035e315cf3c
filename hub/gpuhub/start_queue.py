"""The hub's start queue: at most N servers start at once, the others wait their turn in order.

`StartQueue(slots).turn(on_wait)` is an async context manager that holds one slot for as long as
its body runs; when none is free, it first calls `on_wait(ahead)` with how many are already
waiting, for the spawn page. `hub_start_queue(slots)` is the one queue of this hub process on
the running event loop (the fast tests run several loops; a semaphore belongs to one).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable


class StartQueue:
    def __init__(self, slots: int):
        self.slots = slots
        self.waiting = 0  # turns asked for and not yet given
        self._free = asyncio.Semaphore(slots)

    @contextlib.asynccontextmanager
    async def turn(self, on_wait: Callable[[int], None]) -> AsyncIterator[None]:
        if self._free.locked():
            on_wait(self.waiting)
        self.waiting += 1
        try:
            await self._free.acquire()
        finally:  # also when cancelled while waiting
            self.waiting -= 1
        try:
            yield
        finally:
            self._free.release()


_hub_queue: tuple[asyncio.AbstractEventLoop, StartQueue] | None = None


def hub_start_queue(slots: int) -> StartQueue:
    """This process's queue on the running loop, made with `slots` on first use."""
    global _hub_queue
    loop = asyncio.get_running_loop()
    if _hub_queue is None or _hub_queue[0] is not loop:
        _hub_queue = (loop, StartQueue(slots))
    return _hub_queue[1]

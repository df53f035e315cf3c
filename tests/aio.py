"""Running a coroutine from a synchronous test, whichever tier ran before it."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor


def run_async(coroutine):
    """Run a coroutine to its end on a loop of its own, in a thread: the browser tier's Playwright
    keeps an event loop running in the main thread of the same pytest process, where
    asyncio.run() then refuses ("cannot be called from a running event loop")."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()

"""gpuhub.start_queue: at most N turns at once, given in order, each waiter told how many are
ahead; a turn given back however its body ends, a wait cancelled without taking a turn."""

from __future__ import annotations

import asyncio

import pytest

from gpuhub.start_queue import StartQueue, hub_start_queue

from ..aio import run_async


def test_turns_are_given_in_order_at_most_slots_at_once():
    async def scenario():
        queue = StartQueue(2)
        running, most, order, told = 0, 0, [], {}

        async def start(name: str) -> None:
            nonlocal running, most
            async with queue.turn(lambda ahead: told.setdefault(name, ahead)):
                order.append(name)
                running += 1
                most = max(most, running)
                await asyncio.sleep(0.02)
                running -= 1

        tasks = []
        for name in "abcde":  # asked for in this order
            tasks.append(asyncio.ensure_future(start(name)))
            await asyncio.sleep(0)
        await asyncio.gather(*tasks)
        return most, order, told, queue.waiting

    most, order, told, waiting = run_async(scenario())
    assert most == 2 and order == list("abcde") and waiting == 0
    assert told == {"c": 0, "d": 1, "e": 2}  # a and b started at once: nothing said


def test_a_failed_start_gives_its_turn_back_and_a_cancelled_wait_takes_none():
    async def scenario():
        queue = StartQueue(1)
        with pytest.raises(RuntimeError):
            async with queue.turn(lambda ahead: None):
                raise RuntimeError("docker create failed")
        async with queue.turn(lambda ahead: None):  # free again
            waiter = asyncio.ensure_future(queue.turn(lambda ahead: None).__aenter__())
            await asyncio.sleep(0.01)
            assert queue.waiting == 1
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            assert queue.waiting == 0
        async with queue.turn(lambda ahead: None):  # the cancelled wait holds nothing
            pass

    run_async(scenario())


def test_the_hub_has_one_queue_per_event_loop():
    async def two_lookups():
        return hub_start_queue(2), hub_start_queue(3)

    first, same = run_async(two_lookups())
    assert first is same and first.slots == 2
    assert run_async(two_lookups())[0] is not first  # another loop, another queue

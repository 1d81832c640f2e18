"""Which items each forward pass computes: priorities and aging, rounds cut longest first, and
big requests that share the passes with each other and with newcomers."""

from __future__ import annotations

import asyncio

from tests.unit.service.batching.fakes import gated, pair, rewards_of


def test_a_high_priority_request_behind_a_large_backlog_finishes_first() -> None:
    async def body(batcher, backend):
        finished: list[str] = []

        async def request(name: str, items, priority: int) -> None:
            await rewards_of(batcher, items, priority=priority)
            finished.append(name)

        blocker = asyncio.create_task(request("blocker", [pair(0)], 0))
        await asyncio.sleep(0.05)  # the blocker's pass has started and holds the worker
        backlog = [asyncio.create_task(request(f"bulk-{r}", [pair(1, r, i) for i in range(8)], 0))
                   for r in range(50)]
        await asyncio.sleep(0.05)
        urgent = asyncio.create_task(request("urgent", [pair(2, i) for i in range(4)], 10))
        await asyncio.sleep(0.05)
        backend.gate.set()
        await asyncio.gather(blocker, urgent, *backlog)
        return finished, backend.computed

    finished, computed = asyncio.run(gated(body))
    assert finished[:2] == ["blocker", "urgent"], finished[:5]
    assert computed[1:5] == [(2, i) for i in range(4)]  # the very next pass, all four items
    assert len(finished) == 52


def test_waiting_raises_priority_so_bulk_work_is_not_starved() -> None:
    async def body(batcher, backend):
        blocker = batcher.submit([pair(0)])
        await asyncio.sleep(0.05)
        old = batcher.submit([pair(1)], priority=0)
        await asyncio.sleep(0.3)  # three aging periods: effective priority 3
        newer = batcher.submit([pair(2)], priority=2)
        backend.gate.set()
        await asyncio.gather(blocker.outcome(), old.outcome(), newer.outcome())
        return backend.computed

    computed = asyncio.run(gated(body, aging_s=0.1))
    assert computed == [(0,), (1,), (2,)]


def test_a_long_item_is_not_overtaken_by_shorter_ones_that_came_after_it() -> None:
    """What waits when a pass starts is one round, cut longest first: a long item waits at most
    for its round, never behind batch after batch of later short items."""

    async def body(batcher, backend):
        blocker = batcher.submit([pair(0)])
        await asyncio.sleep(0.05)
        older = [batcher.submit([pair(1, i)]) for i in range(4)]
        long = batcher.submit([pair(3, *[1] * 30)])
        newer = [batcher.submit([pair(2, i)]) for i in range(12)]
        backend.gate.set()
        await asyncio.gather(*(s.outcome() for s in [blocker, *older, long, *newer]))
        return backend.computed

    computed = asyncio.run(gated(body))
    assert computed[1] == (3, *[1] * 30)  # the first pass after the blocker


def test_later_arrivals_wait_for_the_next_round() -> None:
    async def body(batcher, backend):
        blocker = batcher.submit([pair(0)])
        await asyncio.sleep(0.05)
        first_round = [batcher.submit([pair(1, i)]) for i in range(8)]
        backend.gate.set()
        await asyncio.sleep(0)  # the round begins once the blocker's pass is done
        while len(backend.computed) < 2:
            await asyncio.sleep(0.001)
        later = [batcher.submit([pair(2, *[5] * 20)]) for _ in range(2)]  # longer, but later
        await asyncio.gather(*(s.outcome() for s in [blocker, *first_round, *later]))
        return backend.computed

    computed = asyncio.run(gated(body))
    assert {row[0] for row in computed[1:9]} == {1}, computed


def test_held_back_items_leave_room_for_new_requests() -> None:
    """A request bigger than the queue holds back what does not fit; what it holds back enters
    only while the queue is under half full, so a new request always finds room."""

    async def body(batcher, backend):
        blocker = batcher.submit([pair(0)])
        await asyncio.sleep(0.05)
        big = batcher.submit([pair(1, i) for i in range(100)])  # fills the queue (20), holds 80
        backend.gate.set()
        while len(backend.computed) < 10:
            await asyncio.sleep(0.001)
        small = batcher.submit([pair(2)])  # no QueueFullError: the big one refills only to 10
        await asyncio.gather(blocker.outcome(), big.outcome(), small.outcome())
        return backend.computed

    computed = asyncio.run(gated(body, max_queue_items=20))
    assert len(computed) == 102


def test_two_big_requests_share_the_forward_passes() -> None:
    async def body(batcher, backend):
        blocker = batcher.submit([pair(0)])
        await asyncio.sleep(0.05)
        first = batcher.submit([pair(1, i) for i in range(200)])
        await asyncio.sleep(0.01)
        second = batcher.submit([pair(2, i) for i in range(200)])
        backend.gate.set()
        await asyncio.gather(blocker.outcome(), first.outcome(), second.outcome())
        return backend.computed

    computed = asyncio.run(gated(body, max_queue_items=16))
    # While both have items left, neither waits for the other to finish.
    half = [row[0] for row in computed[1:201]]
    assert 60 <= half.count(2) <= 140, half.count(2)


async def _passes_until_a_newcomer_is_computed(batcher, backend, big_items: int, priority: int) -> int:
    """While a big request is being computed, one new item arrives: how many rows were computed
    between its arrival and its own pass."""
    big = batcher.submit([pair(1, i) for i in range(big_items)])
    backend.gate.set()
    while len(backend.computed) < 40:
        await asyncio.sleep(0.001)
    seen = len(backend.computed)
    await batcher.submit([pair(2)], priority=priority).outcome()
    waited = backend.computed.index((2,)) - seen
    await big.outcome()
    return waited


def test_a_high_priority_request_gets_the_next_pass_while_a_big_request_is_computed() -> None:
    async def body(batcher, backend):
        return await _passes_until_a_newcomer_is_computed(batcher, backend, 400, priority=10)

    waited = asyncio.run(gated(body, max_queue_items=64))
    assert waited <= 2 * 4  # the pass in flight, then the urgent one's


def test_a_request_behind_a_big_one_of_its_priority_waits_only_a_few_batches() -> None:
    """A big request keeps a few batches' worth queued (4 here: 16 items), not half the queue
    (5,000): whoever comes after it waits for those, never for the rest of it."""

    async def body(batcher, backend):
        return await _passes_until_a_newcomer_is_computed(batcher, backend, 2000, priority=0)

    waited = asyncio.run(gated(body, max_queue_items=10_000))
    assert waited <= 2 * 16 + 4, waited

"""The batching loop with a fake backend: order, batching, failures and the queue bound."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from service.backends.base import EncodedPair
from service.batching.batcher import Batcher, QueueFullError
from service.batching.policy import BatchLimits


class FakeBackend:
    """Reward = sum of token ids, so every answer can be checked; records batch sizes and rows."""

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[int] = []
        self.rows: list[list[tuple[int, ...]]] = []
        self.fail = fail
        self.threads: set[str] = set()

    def score(self, batch):
        self.threads.add(threading.current_thread().name)
        self.batches.append(len(batch))
        self.rows.append([p.input_ids for p in batch])
        if self.fail:
            raise RuntimeError("forward pass exploded")
        return [float(sum(p.input_ids)) for p in batch]


def pair(*ids: int) -> EncodedPair:
    return EncodedPair(tuple(ids))


async def _with_batcher(backend, body, *, limits=None, max_queue_items=1000, max_queue_tokens=None):
    with ThreadPoolExecutor(1, thread_name_prefix="forward") as executor:
        batcher = Batcher(backend.score, executor, limits or BatchLimits(16, 4096),
                          max_wait_s=0.01, max_queue_items=max_queue_items, max_queue_tokens=max_queue_tokens)
        batcher.start()
        try:
            return await body(batcher)
        finally:
            await batcher.stop()


async def rewards_of(batcher, items, **options) -> list[float]:
    return (await batcher.submit(items, **options).outcome()).rewards


def test_concurrent_requests_get_their_own_answers_in_order() -> None:
    backend = FakeBackend()

    async def body(batcher):
        requests = [[pair(r, i, *([1] * (i % 5))) for i in range(r % 7 + 1)] for r in range(40)]
        results = await asyncio.gather(*(rewards_of(batcher, items) for items in requests))
        for items, rewards in zip(requests, results, strict=True):
            assert rewards == [float(sum(p.input_ids)) for p in items]

    asyncio.run(_with_batcher(backend, body))
    assert backend.threads == {"forward_0"}


def test_single_item_requests_share_batches() -> None:
    """Items of different requests meet in one forward pass: 20 one-item requests queued while
    the worker is busy are computed together, not one pass each."""

    async def body(batcher, backend):
        first = asyncio.create_task(rewards_of(batcher, [pair(0, 0)]))
        await asyncio.sleep(0.05)  # the first pass holds the worker; the rest queue up behind it
        others = [asyncio.create_task(rewards_of(batcher, [pair(1, r)])) for r in range(20)]
        await asyncio.sleep(0.05)
        backend.gate.set()
        assert await first == [0.0]
        assert [await task for task in others] == [[1.0 + r] for r in range(20)]
        return backend.rows

    rows = asyncio.run(_gated(body, max_pairs=32))
    requests_per_pass = [len({row for row in batch}) for batch in rows[1:]]
    assert max(requests_per_pass) > 1, requests_per_pass
    assert len(rows) < 21  # fewer passes than requests


def test_a_failing_forward_fails_every_waiting_request() -> None:
    async def body(batcher):
        results = await asyncio.gather(
            *(rewards_of(batcher, [pair(1), pair(2)]) for _ in range(5)), return_exceptions=True,
        )
        assert all(isinstance(r, RuntimeError) for r in results)

    asyncio.run(_with_batcher(FakeBackend(fail=True), body))


def test_a_full_queue_refuses_a_new_request() -> None:
    async def body(batcher):
        queued = batcher.submit([pair(1)] * 4)
        with pytest.raises(QueueFullError, match="4 items, 4 tokens waiting"):
            batcher.submit([pair(1)])
        assert (await queued.outcome()).rewards == [1.0] * 4

    asyncio.run(_with_batcher(FakeBackend(), body, max_queue_items=4))


def test_the_queue_is_bounded_in_tokens_too() -> None:
    async def body(batcher):
        queued = batcher.submit([pair(1, 2, 3, 4)] * 2)  # 8 of 8 tokens
        with pytest.raises(QueueFullError, match="8 tokens waiting"):
            batcher.submit([pair(1)])
        await queued.outcome()
        assert await rewards_of(batcher, [pair(1, 2, 3)] * 2) == [6.0, 6.0]  # room again

    asyncio.run(_with_batcher(FakeBackend(), body, max_queue_items=100, max_queue_tokens=8))


class DepthRecorder:
    def __init__(self) -> None:
        self.depths: list[int] = []

    def on_batch(self, report) -> None:
        self.depths.append(report.queue_depth)

    def on_queue_depth(self, depth: int) -> None:
        self.depths.append(depth)


def test_a_request_bigger_than_the_whole_queue_is_admitted_in_parts_and_answered_in_order() -> None:
    observer = DepthRecorder()
    items = [pair(i, *([7] * (i % 9))) for i in range(300)]  # 300 items, 1 to 9 tokens each

    async def main():
        with ThreadPoolExecutor(1) as executor:
            batcher = Batcher(FakeBackend().score, executor, BatchLimits(4, 4096), max_wait_s=0,
                              max_queue_items=10, max_queue_tokens=40, observer=observer)
            batcher.start()
            rewards = await rewards_of(batcher, items)
            await batcher.stop()
        return rewards

    assert asyncio.run(main()) == [float(sum(p.input_ids)) for p in items]
    assert 0 < max(observer.depths) <= 10


def test_a_long_item_too_big_for_the_queue_is_still_served() -> None:
    async def body(batcher):
        assert await rewards_of(batcher, [pair(*[1] * 20), pair(2)]) == [20.0, 2.0]

    asyncio.run(_with_batcher(FakeBackend(), body, max_queue_items=100, max_queue_tokens=8))


def test_cancelled_items_are_not_computed() -> None:
    backend = FakeBackend()

    async def body(batcher):
        assert batcher.submit([pair(9)] * 5).cancel() == 5
        assert await rewards_of(batcher, [pair(1)]) == [1.0]

    asyncio.run(_with_batcher(backend, body))
    assert sum(backend.batches) == 1


def test_items_of_a_request_whose_wait_was_cancelled_are_dropped_too() -> None:
    """Cancelling the wait for the outcome cancels the items' futures with it; cancel() after that
    still takes them out of the queue, and counts them."""
    backend = FakeBackend()

    async def main():
        with ThreadPoolExecutor(1) as executor:
            batcher = Batcher(backend.score, executor, BatchLimits(64, 4096), max_wait_s=0.5,
                              max_queue_items=100)
            batcher.start()
            submission = batcher.submit([pair(i) for i in range(6)])
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(submission.outcome(), 0.05)
            dropped = submission.cancel()
            await asyncio.sleep(0.6)
            await batcher.stop()
        return dropped

    assert asyncio.run(main()) == 6
    assert backend.batches == []


def test_workers_compute_that_many_batches_at_once_and_no_more() -> None:
    running, peak, lock = 0, 0, threading.Lock()
    release = threading.Event()

    def slow_score(batch):
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        release.wait(timeout=5)
        with lock:
            running -= 1
        return [float(sum(p.input_ids)) for p in batch]

    async def main():
        with ThreadPoolExecutor(2, thread_name_prefix="forward") as executor:
            batcher = Batcher(slow_score, executor, BatchLimits(1, 4096), max_wait_s=0,
                              max_queue_items=100, workers=2)
            batcher.start()
            submission = batcher.submit([pair(i) for i in range(6)])
            await asyncio.sleep(0.2)  # both workers are now blocked in slow_score
            release.set()
            rewards = (await asyncio.wait_for(submission.outcome(), timeout=10)).rewards
            await batcher.stop()
        return rewards

    assert asyncio.run(main()) == [float(i) for i in range(6)]
    assert peak == 2


def test_request_timing_holds_the_longest_wait_and_every_forward_pass_that_carried_it() -> None:
    class SlowBackend(FakeBackend):
        def score(self, batch):
            time.sleep(0.05)
            return super().score(batch)

    backend = SlowBackend()

    async def body(batcher):
        # 3 rows with a 2-row cap: the first request spans two forward passes.
        first = batcher.submit([pair(1), pair(2), pair(3)])
        second = batcher.submit([pair(4)])
        split, alone = await asyncio.gather(first.outcome(), second.outcome())
        return split.timing, alone.timing

    split, alone = asyncio.run(_with_batcher(backend, body, limits=BatchLimits(2, 4096)))
    assert backend.batches == [2, 2]
    assert 0.1 <= split.compute_s < 2.0  # both passes (the bound only guards against nonsense)
    assert 0.05 <= alone.compute_s < split.compute_s  # only the second
    assert alone.queue_s >= 0.05  # waited for the first pass


class GatedBackend(FakeBackend):
    """Holds its first forward pass until released, so a backlog can pile up behind it; records
    which items each pass computed."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.computed: list[tuple[int, ...]] = []

    def score(self, batch):
        self.gate.wait(timeout=10)
        self.computed.extend(p.input_ids for p in batch)
        return super().score(batch)


async def _gated(body, *, aging_s: float = 60.0, max_pairs: int = 4, max_queue_items: int = 10_000):
    backend = GatedBackend()
    with ThreadPoolExecutor(1) as executor:
        batcher = Batcher(backend.score, executor, BatchLimits(max_pairs, 4096), max_wait_s=0,
                          max_queue_items=max_queue_items, priority_aging_s=aging_s)
        batcher.start()
        try:
            return await body(batcher, backend)
        finally:
            backend.gate.set()
            await batcher.stop()


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

    finished, computed = asyncio.run(_gated(body))
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

    computed = asyncio.run(_gated(body, aging_s=0.1))
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

    computed = asyncio.run(_gated(body))
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

    computed = asyncio.run(_gated(body))
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

    computed = asyncio.run(_gated(body, max_queue_items=20))
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

    computed = asyncio.run(_gated(body, max_queue_items=16))
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

    waited = asyncio.run(_gated(body, max_queue_items=64))
    assert waited <= 2 * 4  # the pass in flight, then the urgent one's


def test_a_request_behind_a_big_one_of_its_priority_waits_only_a_few_batches() -> None:
    """A big request keeps a few batches' worth queued (4 here: 16 items), not half the queue
    (5,000): whoever comes after it waits for those, never for the rest of it."""

    async def body(batcher, backend):
        return await _passes_until_a_newcomer_is_computed(batcher, backend, 2000, priority=0)

    waited = asyncio.run(_gated(body, max_queue_items=10_000))
    assert waited <= 2 * 16 + 4, waited


def test_a_request_whose_first_items_find_the_queue_full_is_refused_and_leaves_nothing() -> None:
    """Opened while there was room, tokenised while others filled the queue: refused when its
    items arrive, as it would have been on arrival, and the batcher still stops cleanly."""

    async def body(batcher):
        late = batcher.open()
        queued = batcher.submit([pair(1)] * 4)
        with pytest.raises(QueueFullError, match="queue is full"):
            late.add([pair(2)])
        assert (await queued.outcome()).rewards == [1.0] * 4

    asyncio.run(_with_batcher(FakeBackend(), body, max_queue_items=4))

"""The batching loop with a fake backend: order, batching, failures and the queue bound."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from service.batching.batcher import Batcher, QueueFullError
from service.batching.policy import BatchLimits
from tests.unit.service.batching.fakes import FakeBackend, gated, pair, rewards_of


async def _with_batcher(backend, body, *, limits=None, max_queue_items=1000, max_queue_tokens=None):
    with ThreadPoolExecutor(1, thread_name_prefix="forward") as executor:
        batcher = Batcher(backend.score, executor, limits or BatchLimits(16, 4096),
                          max_wait_s=0.01, max_queue_items=max_queue_items, max_queue_tokens=max_queue_tokens)
        batcher.start()
        try:
            return await body(batcher)
        finally:
            await batcher.stop()


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

    rows = asyncio.run(gated(body, max_pairs=32))
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

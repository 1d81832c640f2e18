"""One bad row must not fail its batch-mates, and identical rows get the very same reward."""

from __future__ import annotations

import asyncio
import math
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from service.backends.base import EncodedPair
from service.batching.batcher import Batcher, BatchReport
from service.batching.isolation import score_apart, unique_rows
from service.batching.policy import BatchLimits

POISON = 666


class PoisonedBackend:
    """Fails any batch holding the poison token (as an IndexError of a too-long row would); else
    reward = sum of token ids plus a tiny term that depends on the row's place in the batch, the
    way real kernels' rounding does. Records every batch."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[int, ...]]] = []
        self.lock = threading.Lock()

    def score(self, batch):
        with self.lock:
            self.batches.append([p.input_ids for p in batch])
        if any(POISON in p.input_ids for p in batch):
            raise IndexError("index out of range in self")
        return [float(sum(p.input_ids)) + 1e-7 * position for position, p in enumerate(batch)]


class Reports:
    def __init__(self) -> None:
        self.batches: list[BatchReport] = []

    def on_batch(self, report: BatchReport) -> None:
        self.batches.append(report)

    def on_queue_depth(self, depth: int) -> None:
        pass


def pair(*ids: int) -> EncodedPair:
    return EncodedPair(tuple(ids))


async def _batched(backend, body, observer=None, max_pairs: int = 64):
    with ThreadPoolExecutor(1) as executor:
        batcher = Batcher(backend.score, executor, BatchLimits(max_pairs, 100_000), max_wait_s=0.05,
                          max_queue_items=10_000, observer=observer)
        batcher.start()
        try:
            return await body(batcher)
        finally:
            await batcher.stop()


def test_score_apart_answers_innocent_rows_and_gives_the_poison_its_error() -> None:
    backend = PoisonedBackend()
    rows = [pair(i, 1) for i in range(13)]
    rows[5], rows[11] = pair(POISON), pair(POISON, 2)
    outcome = score_apart(backend.score, rows)
    for i, result in enumerate(outcome.results):
        if i in (5, 11):
            assert isinstance(result, IndexError)
        else:
            assert isinstance(result, float) and math.floor(result) == i + 1
    assert sorted(r for p in outcome.passes for r in p.rows) == [i for i in range(13) if i not in (5, 11)]
    assert len(backend.batches) <= 1 + 2 * 2 * math.ceil(math.log2(13))  # bisection, not n passes


def test_concurrent_requests_beside_a_poison_row_get_their_rewards() -> None:
    """Three requests share one batch; only the one holding the poison row fails, with the
    backend's error; the others' rewards are right and their batch was recomputed."""
    backend, reports = PoisonedBackend(), Reports()

    async def body(batcher):
        requests = [[pair(1, 2), pair(3)], [pair(4), pair(POISON), pair(5)], [pair(6, 6)]]
        return await asyncio.gather(
            *(batcher.submit(r).outcome() for r in requests), return_exceptions=True
        )

    first, poisoned, third = asyncio.run(_batched(backend, body, reports))
    assert isinstance(poisoned, IndexError) and "index out of range" in str(poisoned)
    assert [math.floor(r) for r in first.rewards] == [3, 3]
    assert [math.floor(r) for r in third.rewards] == [12]
    assert len(backend.batches[0]) == 6, "the requests did not share a batch"
    # Metrics count the passes that produced rewards, over exactly the items they answered.
    assert sum(report.size for report in reports.batches) == 5
    assert sum(len(report.queue_waits_s) for report in reports.batches) == 6


def test_every_row_failing_fails_every_request_and_nobody_hangs() -> None:
    class Broken:
        def score(self, batch):
            raise RuntimeError("device lost")

    async def body(batcher):
        return await asyncio.wait_for(asyncio.gather(
            *(batcher.submit([pair(i), pair(i + 1)]).outcome() for i in range(4)), return_exceptions=True
        ), timeout=10)

    results = asyncio.run(_batched(Broken(), body))
    assert all(isinstance(r, RuntimeError) and str(r) == "device lost" for r in results)


def test_identical_rows_are_computed_once_and_get_bit_identical_rewards() -> None:
    backend = PoisonedBackend()
    same = pair(7, 8, 9)

    async def body(batcher):
        # One request holding the same row three times, and another request with it too.
        return await asyncio.gather(
            batcher.submit([same, pair(1), same, same]).outcome(), batcher.submit([pair(2), same]).outcome()
        )

    one, two = asyncio.run(_batched(backend, body))
    rewards = [one.rewards[0], one.rewards[2], one.rewards[3], two.rewards[1]]
    assert len(set(rewards)) == 1, rewards
    assert sum(row == same.input_ids for batch in backend.batches for row in batch) == 1


def test_identical_rows_of_one_request_share_a_pass_even_when_the_batch_is_full() -> None:
    """a == b must not land in two passes (two shapes, two roundings): duplicates ride along."""
    backend = PoisonedBackend()
    same = pair(4, 4)

    async def body(batcher):
        return await batcher.submit([pair(1), pair(2), same, pair(3), same]).outcome()

    result = asyncio.run(_batched(backend, body, max_pairs=2))
    assert result.rewards[2] == result.rewards[4]
    assert sum(row == same.input_ids for batch in backend.batches for row in batch) == 1


@pytest.mark.parametrize("types", [None, (0, 1)])
def test_unique_rows_map_every_row_to_its_first_copy(types) -> None:
    rows = [EncodedPair((1, 2), types), EncodedPair((3, 4), types),
            EncodedPair((1, 2), types, shared_prefix=1)]
    unique, index_of = unique_rows(rows)
    assert unique == rows[:2] and index_of == [0, 1, 0]
    assert unique_rows([EncodedPair((1, 2), (0, 0)), EncodedPair((1, 2), (0, 1))])[1] == [0, 1]

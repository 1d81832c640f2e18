"""Fake backends whose rewards can be checked by hand, for the batcher's tests."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from service.backends.base import EncodedPair
from service.batching.batcher import Batcher
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


async def rewards_of(batcher, items, **options) -> list[float]:
    return (await batcher.submit(items, **options).outcome()).rewards


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


async def gated(body, *, aging_s: float = 60.0, max_pairs: int = 4, max_queue_items: int = 10_000):
    """`body(batcher, backend)` against a GatedBackend with one worker; the gate opens at the end."""
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

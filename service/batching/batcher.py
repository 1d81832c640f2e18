"""The batching loop: owns the pending queue, timing, futures and the worker thread."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Protocol

from service.backends.base import EncodedPair
from service.batching.policy import BatchLimits, select_batch


class QueueFullError(Exception):
    """The queue cannot take a request's items now; the caller should retry later."""


class TooBigForQueueError(Exception):
    """One request holds more than the whole queue may: it can never be admitted, so retrying is futile."""


class BatcherClosedError(Exception):
    """The batcher is shutting down and takes no new work."""


@dataclass(frozen=True)
class BatchReport:
    """What one forward pass did, for metrics."""

    size: int
    real_tokens: int
    padded_tokens: int
    queue_waits_s: list[float]
    inference_s: float
    queue_depth: int


@dataclass
class RequestTiming:
    """Where one request's time went: the longest wait of its items, and the forward passes
    that carried them (summed: a request split over batches waits for all of them)."""

    queue_s: float = 0.0
    compute_s: float = 0.0


class BatchObserver(Protocol):
    def on_batch(self, report: BatchReport) -> None: ...

    def on_queue_depth(self, depth: int) -> None: ...


@dataclass(eq=False)
class _Pending:
    pair: EncodedPair
    future: asyncio.Future[float]
    timing: RequestTiming | None = None
    priority: int = 0
    enqueued_s: float = field(default_factory=time.monotonic)


class Batcher:
    """Merges items from concurrent requests into length-grouped batches for one backend.

    The forward pass runs on worker threads, so the event loop keeps accepting requests
    while the model computes; a batch is formed only when a worker is free, which lets the
    queue grow and batches fill under load. `workers` batches may be in flight at once.

    Higher priority goes first: each batch is built around the item with the highest priority
    plus one per `priority_aging_s` waited (so nothing starves), from items of its priority.
    """

    def __init__(
        self,
        score_batch: Callable[[Sequence[EncodedPair]], list[float]],
        executor: Executor,
        limits: BatchLimits,
        *,
        max_wait_s: float,
        max_queue_items: int,
        max_queue_tokens: int | None = None,
        workers: int = 1,
        priority_aging_s: float = 1.0,
        observer: BatchObserver | None = None,
    ) -> None:
        self._score_batch = score_batch
        self._executor = executor
        self.limits = limits
        self._max_wait_s = max_wait_s
        self._max_queue_items = max_queue_items
        self._max_queue_tokens = max_queue_tokens
        self._priority_aging_s = priority_aging_s
        self._queued_tokens = 0
        self._observer = observer
        self._pending: list[_Pending] = []
        self._wakeup = asyncio.Event()
        self._free_workers = asyncio.Semaphore(workers)
        self._in_flight: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def queue_depth(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    async def stop(self) -> None:
        """Refuse new work, finish what is queued, then stop the loop."""
        self._closed = True
        self._wakeup.set()
        if self._task is not None:
            await self._task

    def submit(
        self, pairs: Sequence[EncodedPair], timing: RequestTiming | None = None, priority: int = 0
    ) -> list[asyncio.Future[float]]:
        """Queue all of a request's items or none of them; one future per item. `timing`, if
        given, is filled in as the items are computed. A cancelled future's item is dropped."""
        if self._closed:
            raise BatcherClosedError("the server is shutting down")
        tokens = sum(pair.own_length for pair in pairs)
        token_limit = self._max_queue_tokens or math.inf
        if len(pairs) > self._max_queue_items or tokens > token_limit:
            raise TooBigForQueueError(
                f"this request holds {len(pairs)} items and {tokens} tokens; the queue holds at most "
                f"{self._max_queue_items} items and {self._max_queue_tokens} tokens: split it"
            )
        items_after = len(self._pending) + len(pairs)
        if items_after > self._max_queue_items or self._queued_tokens + tokens > token_limit:
            raise QueueFullError(
                f"the queue is full ({len(self._pending)} items, {self._queued_tokens} tokens waiting): "
                "retry shortly"
            )
        loop = asyncio.get_running_loop()
        items = [_Pending(pair, loop.create_future(), timing, priority) for pair in pairs]
        self._pending.extend(items)
        self._queued_tokens += tokens
        self._notify_depth()
        self._wakeup.set()
        return [item.future for item in items]

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                await self._free_workers.acquire()
                await self._wait_for_company()
                batch = self._take_batch()
                if not batch:
                    self._free_workers.release()
                    continue
                task = asyncio.create_task(self._compute(batch))
                self._in_flight.add(task)
                task.add_done_callback(self._finished)
            if self._closed:
                await asyncio.gather(*self._in_flight)
                return

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._free_workers.release()

    async def _wait_for_company(self) -> None:
        """Let the oldest item wait up to max_wait for others, unless a batch is already full."""
        deadline = self._pending[0].enqueued_s + self._max_wait_s
        while not self._closed and not self._batch_is_full():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return

    def _batch_is_full(self) -> bool:
        limits = self.limits
        if len(self._pending) >= limits.max_pairs:
            return True
        return sum(p.pair.own_length for p in self._pending) >= limits.max_tokens

    def _take_batch(self) -> list[_Pending]:
        # Items whose caller went away are dropped before they cost a forward pass.
        self._pending = [p for p in self._pending if not p.future.done()]
        if not self._pending:
            self._queued_tokens = 0
            self._notify_depth()
            return []
        now = time.monotonic()
        anchor = max(self._pending, key=lambda p: p.priority + (now - p.enqueued_s) / self._priority_aging_s)
        peers = [p for p in self._pending if p.priority == anchor.priority]
        chosen = select_batch([p.pair.own_length for p in peers], peers.index(anchor), self.limits)
        batch = [peers[i] for i in chosen]
        taken = {id(p) for p in batch}
        self._pending = [p for p in self._pending if id(p) not in taken]
        self._queued_tokens = sum(p.pair.own_length for p in self._pending)
        self._notify_depth()
        return batch

    async def _compute(self, batch: list[_Pending]) -> None:
        started = time.monotonic()
        pairs = [p.pair for p in batch]
        try:
            rewards = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._score_batch, pairs
            )
            if len(rewards) != len(batch):
                raise RuntimeError(f"backend returned {len(rewards)} rewards for {len(batch)} rows")
        except Exception as exc:  # every waiting caller gets the error; nobody hangs
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        finished = time.monotonic()
        timings = {id(p.timing): p.timing for p in batch if p.timing is not None}
        for timing in timings.values():
            timing.compute_s += finished - started
        for item, reward in zip(batch, rewards, strict=True):
            if item.timing is not None:
                item.timing.queue_s = max(item.timing.queue_s, started - item.enqueued_s)
            if not item.future.done():
                item.future.set_result(reward)
        if self._observer is not None:
            lengths = [p.own_length for p in pairs]
            self._observer.on_batch(
                BatchReport(
                    size=len(batch),
                    real_tokens=sum(lengths),
                    padded_tokens=len(lengths) * max(lengths),
                    queue_waits_s=[started - p.enqueued_s for p in batch],
                    inference_s=finished - started,
                    queue_depth=len(self._pending),
                )
            )

    def _notify_depth(self) -> None:
        if self._observer is not None:
            self._observer.on_queue_depth(len(self._pending))

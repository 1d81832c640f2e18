"""The batching loop: owns the pending queue, timing, futures and the worker threads. What goes
into each batch is decided by the pure policy (service.batching.policy); results and timings
come back as values."""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Protocol

from service.backends.base import EncodedPair
from service.batching.isolation import Outcome, RowKey, score_apart, unique_rows
from service.batching.policy import BatchLimits, anchor_index, batch_is_full, select_batch


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


@dataclass(frozen=True)
class Timing:
    """Where one request's time went: the longest wait of its items, and the forward passes
    that carried them (summed: a request split over batches waits for all of them)."""

    queue_s: float = 0.0
    compute_s: float = 0.0

    def __add__(self, other: Timing) -> Timing:
        """Work done for one request in two places (e.g. two models of a combination)."""
        return Timing(max(self.queue_s, other.queue_s), self.compute_s + other.compute_s)


@dataclass(frozen=True)
class BatchedRewards:
    """A request's rewards, in the order its items were submitted, and its timing."""

    rewards: list[float]
    timing: Timing


@dataclass(frozen=True, slots=True)
class _Computed:
    reward: float
    queue_s: float
    batch: int  # which forward pass computed it
    compute_s: float  # how long that pass took


class BatchObserver(Protocol):
    def on_batch(self, report: BatchReport) -> None: ...

    def on_queue_depth(self, depth: int) -> None: ...


@dataclass(eq=False)
class _Pending:
    pair: EncodedPair
    future: asyncio.Future[_Computed]
    priority: int = 0
    enqueued_s: float = field(default_factory=time.monotonic)
    key: RowKey = field(init=False)

    def __post_init__(self) -> None:
        self.key = RowKey(self.pair)


class Submission:
    """One request's items in the queue."""

    def __init__(self, futures: list[asyncio.Future[_Computed]]) -> None:
        self._futures = futures

    async def outcome(self) -> BatchedRewards:
        """Every item's reward, once all are computed (a failed forward pass raises here)."""
        computed = await asyncio.gather(*self._futures)
        passes = {item.batch: item.compute_s for item in computed}
        timing = Timing(max(item.queue_s for item in computed), sum(passes.values()))
        return BatchedRewards([item.reward for item in computed], timing)

    def cancel(self) -> int:
        """Drop the items not yet computed (they never reach a forward pass); how many were."""
        for future in self._futures:
            future.cancel()
        return sum(future.cancelled() for future in self._futures)


class Batcher:
    """Merges items from concurrent requests into batches for one backend.

    The forward pass runs on worker threads, so the event loop keeps accepting requests
    while the model computes; a batch is formed only when a worker is free, which lets the
    queue grow and batches fill under load. `workers` batches may be in flight at once.
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
        self._batch_serials = itertools.count()

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

    @property
    def max_queue_tokens(self) -> int | None:
        return self._max_queue_tokens

    def check_room(self, items: int, tokens: int = 0) -> None:
        """Raise unless `items` items of `tokens` tokens could be queued now. Called with the item
        count alone before a request is tokenised, so a full queue refuses it before that work."""
        if self._closed:
            raise BatcherClosedError("the server is shutting down")
        token_limit = self._max_queue_tokens or math.inf
        if items > self._max_queue_items or tokens > token_limit:
            raise TooBigForQueueError(
                f"this request holds {items} items and {tokens} tokens; the queue holds at most "
                f"{self._max_queue_items} items and {self._max_queue_tokens} tokens: split it"
            )
        if len(self._pending) + items > self._max_queue_items or self._queued_tokens + tokens > token_limit:
            raise QueueFullError(
                f"the queue is full ({len(self._pending)} items, {self._queued_tokens} tokens waiting): "
                "retry shortly"
            )

    def submit(self, pairs: Sequence[EncodedPair], priority: int = 0) -> Submission:
        """Queue all of a request's items or none of them."""
        tokens = sum(pair.own_length for pair in pairs)
        self.check_room(len(pairs), tokens)
        loop = asyncio.get_running_loop()
        items = [_Pending(pair, loop.create_future(), priority) for pair in pairs]
        self._pending.extend(items)
        self._queued_tokens += tokens
        self._notify_depth()
        self._wakeup.set()
        return Submission([item.future for item in items])

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
        while not self._closed and not batch_is_full(self._lengths(self._pending), self.limits):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return

    def _take_batch(self) -> list[_Pending]:
        # Items whose caller went away are dropped before they cost a forward pass.
        self._pending = [p for p in self._pending if not p.future.done()]
        if not self._pending:
            self._queued_tokens = 0
            self._notify_depth()
            return []
        pending = self._pending
        anchor = pending[anchor_index(
            [p.priority for p in pending], [p.enqueued_s for p in pending], time.monotonic(),
            self._priority_aging_s,
        )]
        peers = [p for p in pending if p.priority == anchor.priority]
        chosen = [peers[i] for i in select_batch(self._lengths(peers), peers.index(anchor), self.limits)]
        # Rows identical to one chosen ride along, whatever their priority: they cost no compute
        # (computed once) and get the very same reward, e.g. both sides of a compare with a == b.
        keys = {p.key for p in chosen}
        batch = [p for p in pending if p.key in keys]
        taken = {id(p) for p in batch}
        self._pending = [p for p in pending if id(p) not in taken]
        self._queued_tokens = sum(self._lengths(self._pending))
        self._notify_depth()
        return batch

    async def _compute(self, batch: list[_Pending]) -> None:
        started = time.monotonic()
        unique, index_of = unique_rows([p.pair for p in batch])
        try:
            outcome = await asyncio.get_running_loop().run_in_executor(
                self._executor, score_apart, self._score_batch, unique
            )
        except Exception as exc:  # not the model's (score_apart catches those), e.g. a closed pool
            outcome = Outcome([exc] * len(unique), [])
        # One serial and the whole time for every row: a request's timing counts the batch once,
        # retries included.
        compute_s, serial = time.monotonic() - started, next(self._batch_serials)
        for item, row in zip(batch, index_of, strict=True):
            result = outcome.results[row]
            if item.future.done():
                continue
            if isinstance(result, Exception):  # only the rows that failed alone: nobody hangs
                item.future.set_exception(result)
            else:
                item.future.set_result(_Computed(result, started - item.enqueued_s, serial, compute_s))
        self._report(batch, index_of, outcome, started)

    def _report(self, batch: list[_Pending], index_of: list[int], outcome: Outcome, started: float) -> None:
        """One report per forward pass that produced rewards, over the items it answered; every
        item's queue wait is counted once, with the first."""
        if self._observer is None:
            return
        waits = [started - p.enqueued_s for p in batch]
        for computed in outcome.passes:
            rows = set(computed.rows)
            lengths = self._lengths([p for p, row in zip(batch, index_of, strict=True) if row in rows])
            self._observer.on_batch(BatchReport(
                len(lengths), sum(lengths), len(lengths) * max(lengths), waits, computed.seconds,
                len(self._pending),
            ))
            waits = []

    @staticmethod
    def _lengths(items: Sequence[_Pending]) -> list[int]:
        return [p.pair.own_length for p in items]

    def _notify_depth(self) -> None:
        if self._observer is not None:
            self._observer.on_queue_depth(len(self._pending))

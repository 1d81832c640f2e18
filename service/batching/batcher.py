"""The batching loop: admits requests' items into the queue, forms a batch whenever a worker is
free and computes it on the device's thread. What goes into each batch is decided by the queue
(service.batching.queue) and the pure policy (service.batching.policy); results and timings come
back as values, through each request's Submission."""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Protocol

from service.backends.base import EncodedPair
from service.batching.isolation import Outcome, score_apart, unique_rows
from service.batching.policy import BatchLimits, batch_is_full
from service.batching.queue import Item, PendingQueue, State
from service.batching.submission import Computed, Submission

# A big request keeps this many batches' worth of items queued: enough to cut well-filled,
# length-sorted batches from, few enough that whoever arrives after it waits only that long.
_WINDOW_BATCHES = 4


class QueueFullError(Exception):
    """The queue cannot take a request's items now; the caller should retry later."""


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


class BatchObserver(Protocol):
    def on_batch(self, report: BatchReport) -> None: ...

    def on_queue_depth(self, depth: int) -> None: ...


class Batcher:
    """Merges items from concurrent requests into batches for one backend.

    The forward pass runs on worker threads, so the event loop keeps accepting requests
    while the model computes; a batch is formed only when a worker is free, which lets the
    queue grow and batches fill under load. `workers` batches may be in flight at once.

    The queue bounds (items, tokens) bound what waits in the queue. A request is refused
    (QueueFullError) only when the queue is full; otherwise its items enter as there is room.
    A request's first batch's worth of items (all of a small one's) may fill the queue; the rest
    enters only while the queue is less than half full and the request holds a few batches'
    worth or less in it, in turns of a batch per request: big requests share the device fairly,
    new requests always find room and wait only for a few batches of a big request ahead of them.
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
        self._max_items = max_queue_items
        self._max_tokens = max_queue_tokens or math.inf
        self._priority_aging_s = priority_aging_s
        self._observer = observer
        self._queue = PendingQueue()
        self._window = _WINDOW_BATCHES * limits.max_pairs  # what a big request may hold queued
        self._backlogged: deque[Submission] = deque()  # requests holding items back, in turn
        self._open: set[Submission] = set()  # requests that may still add items
        self._wakeup = asyncio.Event()
        self._free_workers = asyncio.Semaphore(workers)
        self._in_flight: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._batch_serials = itertools.count()

    @property
    def queue_depth(self) -> int:
        return self._queue.items

    @property
    def full(self) -> bool:
        """A new request would be refused now."""
        return self._queue.items >= self._max_items or self._queue.tokens >= self._max_tokens

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    async def stop(self) -> None:
        """Refuse new requests, finish the admitted ones, then stop the loop."""
        self._closed = True
        self._wakeup.set()
        if self._task is not None:
            await self._task

    def open(self, priority: int = 0) -> Submission:
        """A new request, refused unless the queue has room: called before the request is
        tokenised, so that a full queue refuses it before that work."""
        if self._closed:
            raise BatcherClosedError("the server is shutting down")
        self._refuse_if_full()
        submission = Submission(self, priority)
        self._open.add(submission)
        return submission

    def _refuse_if_full(self) -> None:
        if self.full:
            raise QueueFullError(
                f"the queue is full ({self._queue.items} items, {self._queue.tokens} tokens waiting): "
                "retry shortly"
            )

    def submit(self, pairs: Sequence[EncodedPair], priority: int = 0) -> Submission:
        """A request whose items are all known: opened, added and closed."""
        submission = self.open(priority)
        submission.add(pairs)
        submission.close()
        return submission

    def admit(self, submission: Submission, *, first: bool) -> None:
        """Queue what fits of a request's new items. Its first items are refused if others filled
        the queue while it was tokenised, as they would have been on arrival."""
        if first:
            self._refuse_if_full()
        if submission.backlog and submission not in self._backlogged:
            self._backlogged.append(submission)
        self._feed()

    def closed(self, submission: Submission) -> None:
        self._open.discard(submission)
        self._wakeup.set()

    def drop(self, item: Item) -> None:
        self._queue.drop(item)
        self._notify_depth()

    def _feed(self) -> None:
        """Move held-back items into the queue while it has room, a batch per request in turn;
        stops once every waiting request has had a turn that moved nothing."""
        moved = stalled = 0
        while self._backlogged and stalled < len(self._backlogged):
            submission = self._backlogged.popleft()
            count = self._enter(submission, self.limits.max_pairs)
            if submission.backlog:
                self._backlogged.append(submission)
            stalled = 0 if count else stalled + 1
            moved += count
        if moved:
            self._notify_depth()
            self._wakeup.set()

    def _enter(self, submission: Submission, most: int) -> int:
        """Up to `most` of the request's held-back items into the queue, while they fit. Its first
        items (a batch's worth at most) may fill the queue, so that a small request is never held
        back behind big ones; the rest enter while the queue is under half full and the request
        holds fewer than a few batches' worth in it, so that a request arriving behind a big one
        waits for a few batches, not for half the queue. An item longer than all that still
        enters an empty queue, so every item is served."""
        queue, count, now = self._queue, 0, time.monotonic()
        while submission.backlog and count < most:
            item = submission.backlog[0]
            if item.state is State.WAITING:
                if submission.entered < min(submission.first_part, self.limits.max_pairs):
                    share = 1.0
                elif submission.presence.queued < self._window:
                    share = 0.5
                else:
                    break
                fits = queue.tokens + item.length <= share * self._max_tokens or queue.tokens == 0
                if not (queue.items < share * self._max_items and fits):
                    break
                queue.push(item, now)
                count += 1
                submission.entered += 1
            submission.backlog.popleft()
        return count

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue.items:
                await self._free_workers.acquire()
                await self._wait_for_company()
                batch = self._queue.take_batch(self.limits, time.monotonic(), self._priority_aging_s)
                self._feed()
                self._notify_depth()
                if not batch:
                    self._free_workers.release()
                    continue
                task = asyncio.create_task(self._compute(batch))
                self._in_flight.add(task)
                task.add_done_callback(self._finished)
            if self._closed and not self._open:
                await asyncio.gather(*self._in_flight)
                return

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._free_workers.release()

    async def _wait_for_company(self) -> None:
        """Let the oldest item wait up to max_wait for others, unless a batch is already full."""
        oldest = self._queue.oldest_entered()
        if oldest is None:
            return
        deadline = oldest + self._max_wait_s
        while not self._closed and not batch_is_full(self._queue.items, self._queue.tokens, self.limits):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return

    async def _compute(self, batch: list[Item]) -> None:
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
                item.future.set_result(Computed(result, started - item.submitted_s, serial, compute_s))
        self._report(batch, index_of, outcome, started)

    def _report(self, batch: list[Item], index_of: list[int], outcome: Outcome, started: float) -> None:
        """One report per forward pass that produced rewards, over the items it answered; every
        item's wait (from its request's arrival, held back or queued) is counted once, with the
        first."""
        if self._observer is None:
            return
        waits = [started - p.submitted_s for p in batch]
        for computed in outcome.passes:
            rows = set(computed.rows)
            lengths = [p.length for p, row in zip(batch, index_of, strict=True) if row in rows]
            self._observer.on_batch(BatchReport(
                len(lengths), sum(lengths), len(lengths) * max(lengths), waits, computed.seconds,
                self._queue.items,
            ))
            waits = []

    def _notify_depth(self) -> None:
        if self._observer is not None:
            self._observer.on_queue_depth(self._queue.items)

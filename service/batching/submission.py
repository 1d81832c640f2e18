"""One request in the batcher: its items, added as they are tokenised and queued as there is
room, and what comes back (rewards in order, and where the time went)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from service.backends.base import EncodedPair
from service.batching.queue import Item, Presence, State


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
class Computed:
    reward: float
    queue_s: float
    batch: int  # which forward pass computed it
    compute_s: float  # how long that pass took


class Admission(Protocol):
    """What a submission tells the batcher: it has items to queue, it is complete, one of its
    items is no longer wanted."""

    def admit(self, submission: Submission, *, first: bool) -> None: ...

    def closed(self, submission: Submission) -> None: ...

    def drop(self, item: Item) -> None: ...


class Submission:
    """One request's items, added as they are tokenised and queued as the queue has room.

    Items beyond the room wait in the request's own backlog (the request already holds them)
    and enter the queue as batches free it: a request of any size is admitted in parts."""

    def __init__(self, batcher: Admission, priority: int) -> None:
        self._batcher = batcher
        self.priority = priority
        self.items: list[Item] = []
        self.backlog: deque[Item] = deque()
        self.first_part = 0  # how many items came with the first add
        self.presence = Presence()
        self.entered = 0  # how many items have entered the queue
        self._complete = asyncio.Event()

    def add(self, pairs: Sequence[EncodedPair]) -> None:
        """More of the request's items, queued now if there is room, else as soon as there is.
        The first ones are refused (QueueFullError) if they find the queue full."""
        loop, now = asyncio.get_running_loop(), time.monotonic()
        items = [Item(pair, loop.create_future(), self.priority, now, self.presence) for pair in pairs]
        first = not self.items and bool(items)
        if first:
            self.first_part = len(items)
        self.items += items
        # Queued longest first: the short rounds a big request is served in then hold rows of
        # similar length, which pad as little as a sorted offline pass.
        self.backlog += sorted(items, key=lambda item: -item.length)
        try:
            self._batcher.admit(self, first=first)
        except Exception:  # refused (the queue filled up meanwhile): nothing of it stays queued
            self.cancel()
            raise

    def close(self) -> None:
        """No more items will be added."""
        self._complete.set()
        self._batcher.closed(self)

    async def outcome(self) -> BatchedRewards:
        """Every item's reward, once all are computed (a failed forward pass raises here)."""
        await self._complete.wait()
        computed = await asyncio.gather(*(item.future for item in self.items))
        if not computed:
            return BatchedRewards([], Timing())
        passes = {item.batch: item.compute_s for item in computed}
        timing = Timing(max(item.queue_s for item in computed), sum(passes.values()))
        return BatchedRewards([item.reward for item in computed], timing)

    def cancel(self) -> int:
        """Drop the items not yet computed (they never reach a forward pass); how many were.
        (Their futures may already be cancelled: awaiting outcome() cancels them with it.)"""
        dropped = 0
        for item in self.items:
            item.future.cancel()
            if item.state in (State.WAITING, State.QUEUED):
                self._batcher.drop(item)
                dropped += 1
        self.backlog.clear()
        self.close()
        return dropped

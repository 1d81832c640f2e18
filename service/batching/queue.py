"""The items waiting for one model's forward passes, kept so that forming a batch costs O(log n)
per item, however long the queue.

Items wait in one level per priority. A level serves its items in rounds: a round is the oldest
items the level holds, a couple of batches' worth, sorted by length once, and batches are cut from
its longest end; what arrives meanwhile waits for a later round. So no item is overtaken by more than one
round of later arrivals (a long item does not wait behind batch after batch of short ones), and
every batch holds rows of similar length, cut from a sorted pool as an offline pass would cut
them. Which level the next batch comes from is the policy's choice (anchor_index): the highest
priority, raised by how long the level has gone unserved, so that nothing starves.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from service.backends.base import EncodedPair
from service.batching.isolation import RowKey
from service.batching.policy import BatchLimits, anchor_index, longest_first_batch

_serials = itertools.count()
# A round holds at most this many batches' worth of the oldest arrivals (rows and tokens).
ROUND_BATCHES = 2


class State(enum.Enum):
    WAITING = "waiting"  # in its request's backlog, not yet in the queue
    QUEUED = "queued"
    TAKEN = "taken"  # in a batch
    DROPPED = "dropped"  # its caller went away first


@dataclass(slots=True)
class Presence:
    """How many of one request's items are in the queue now (the batcher caps what a big
    request holds there)."""

    queued: int = 0


@dataclass(eq=False, slots=True)
class Item:
    """One row of one request, from submission to its forward pass."""

    pair: EncodedPair
    future: asyncio.Future[Any]
    priority: int
    submitted_s: float
    presence: Presence = field(default_factory=Presence)  # its request's
    length: int = field(init=False)
    key: RowKey = field(init=False)
    serial: int = field(init=False, default_factory=lambda: next(_serials))
    entered_s: float = math.inf  # when it entered the queue
    state: State = State.WAITING

    def __post_init__(self) -> None:
        self.length = self.pair.own_length
        self.key = RowKey(self.pair)


class _Level:
    """The items of one priority: the current round (by length, longest last) and the arrivals
    that wait for the next one. Items that left early stay where they are until reached."""

    def __init__(self, priority: int) -> None:
        self.priority = priority
        self.round: list[Item] = []
        self.round_since = math.inf  # when the round's first item entered the queue
        self.arrivals: deque[Item] = deque()
        self.served_s = -math.inf

    def oldest_entered(self) -> float | None:
        """When its longest-waiting item entered the queue; None when it holds none."""
        while self.round and self.round[-1].state is not State.QUEUED:
            self.round.pop()
        while self.arrivals and self.arrivals[0].state is not State.QUEUED:
            self.arrivals.popleft()
        if self.round:
            return self.round_since
        return self.arrivals[0].entered_s if self.arrivals else None

    def take(self, limits: BatchLimits) -> list[Item]:
        """The next batch of this level: from the round's longest end (a new round if it is over)."""
        if not self.round:
            self._begin_round(limits)
        # Live candidates from the longest end: a batch never holds more than max_pairs of them.
        candidates: list[Item] = []
        end = len(self.round)
        while end > 0 and len(candidates) < limits.max_pairs:
            end -= 1
            if self.round[end].state is State.QUEUED:
                candidates.append(self.round[end])
        chosen = candidates[: longest_first_batch([p.length for p in candidates], limits)]
        cut = len(self.round) - 1
        while self.round[cut] is not chosen[-1]:
            cut -= 1
        del self.round[cut:]
        return chosen


    def _begin_round(self, limits: BatchLimits) -> None:
        """The oldest arrivals, a few batches' worth at most, sorted by length once: a round
        short enough that whoever just missed one waits little for the next."""
        self.round_since = self.arrivals[0].entered_s
        members: list[Item] = []
        tokens = 0
        while self.arrivals and len(members) < ROUND_BATCHES * limits.max_pairs \
                and tokens < ROUND_BATCHES * limits.max_tokens:
            item = self.arrivals.popleft()
            if item.state is State.QUEUED:
                members.append(item)
                tokens += item.length
        self.round = sorted(members, key=lambda p: (p.length, -p.serial))


class PendingQueue:
    """Queued items of one model: levels by priority, identical rows found by their tokens, and
    the totals that bound the queue."""

    def __init__(self) -> None:
        self._levels: dict[int, _Level] = {}
        self._by_key: dict[RowKey, list[Item]] = {}
        self.items = 0
        self.tokens = 0

    def push(self, item: Item, now_s: float) -> None:
        item.state, item.entered_s = State.QUEUED, now_s
        item.presence.queued += 1
        level = self._levels.get(item.priority)
        if level is None:
            level = self._levels[item.priority] = _Level(item.priority)
        level.arrivals.append(item)
        self._by_key.setdefault(item.key, []).append(item)
        self.items += 1
        self.tokens += item.length

    def drop(self, item: Item) -> None:
        """An item whose caller went away: it leaves the totals at once, its level when reached."""
        if item.state is State.QUEUED:
            self._leave(item)
            twins = self._by_key[item.key]
            twins.remove(item)
            if not twins:
                del self._by_key[item.key]
        item.state = State.DROPPED

    def oldest_entered(self) -> float | None:
        times = [t for level in self._levels.values() if (t := level.oldest_entered()) is not None]
        return min(times, default=None)

    def take_batch(self, limits: BatchLimits, now_s: float, aging_s: float) -> list[Item]:
        """The next batch: from the most urgent level, plus every queued row identical to one
        chosen, whatever its priority (computed once, they cost nothing and get the same reward,
        e.g. both sides of a compare with a == b)."""
        priorities: list[int] = []
        since: list[float] = []
        for priority, level in list(self._levels.items()):
            oldest = level.oldest_entered()
            if oldest is None:
                del self._levels[priority]  # empty: forgotten (it comes back unaged)
                continue
            # A level being served does not age: only the time since its last batch counts.
            priorities.append(priority)
            since.append(max(oldest, level.served_s))
        if not priorities:
            return []
        level = self._levels[priorities[anchor_index(priorities, since, now_s, aging_s)]]
        level.served_s = now_s
        batch: list[Item] = []
        for item in level.take(limits):
            for twin in self._by_key.pop(item.key, ()):
                self._leave(twin)
                twin.state = State.TAKEN
                batch.append(twin)
        return batch

    def _leave(self, item: Item) -> None:
        item.presence.queued -= 1
        self.items -= 1
        self.tokens -= item.length

"""The pending queue: every item taken exactly once, within the caps, rounds and priorities kept."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from service.backends.base import EncodedPair
from service.batching.policy import BatchLimits
from service.batching.queue import Item, PendingQueue, State

limits_strategy = st.builds(
    BatchLimits, max_pairs=st.integers(1, 16), max_tokens=st.integers(1, 400),
    max_padding_fraction=st.floats(0.0, 1.0),
)


def _items(loop: asyncio.AbstractEventLoop, lengths: list[int], priorities: list[int]) -> list[Item]:
    return [Item(EncodedPair(tuple([serial + 1] * length)), loop.create_future(), priority, 0.0)
            for serial, (length, priority) in enumerate(zip(lengths, priorities, strict=True))]


def _within(limits: BatchLimits, lengths: list[int]) -> bool:
    rows, padded = len(lengths), len(lengths) * max(lengths)
    return (rows <= limits.max_pairs and padded <= limits.max_tokens
            and padded - sum(lengths) <= limits.max_padding_fraction * padded + 1e-9)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 60), st.sampled_from([0, 0, 0, 10])), min_size=1, max_size=120),
       limits_strategy, st.sets(st.integers(0, 119)))
def test_every_item_is_taken_once_within_the_caps_and_dropped_ones_never(rows, limits, dropped) -> None:
    loop = asyncio.new_event_loop()
    items = _items(loop, [length for length, _ in rows], [priority for _, priority in rows])
    queue = PendingQueue()
    for index, item in enumerate(items):
        queue.push(item, now_s=float(index))
    for index in dropped & set(range(len(items))):
        queue.drop(items[index])
    taken: list[Item] = []
    for _ in range(len(items) + 1):  # bounded: every batch takes at least one item
        batch = queue.take_batch(limits, now_s=1000.0, aging_s=1e9)
        if not batch:
            break
        assert len({item.priority for item in batch}) == 1
        assert len(batch) == 1 or _within(limits, [item.length for item in batch])
        taken += batch
    live = [item for item in items if item.state is not State.DROPPED]
    assert sorted(id(item) for item in taken) == sorted(id(item) for item in live)
    assert (queue.items, queue.tokens) == (0, 0)
    # Priority 10 first: no item of 0 is taken before the last of 10.
    priorities = [item.priority for item in taken]
    assert priorities == sorted(priorities, reverse=True)
    loop.close()


def test_identical_rows_ride_along_whatever_their_priority() -> None:
    loop = asyncio.new_event_loop()
    same = [Item(EncodedPair((7, 7)), loop.create_future(), priority, 0.0) for priority in (10, 0)]
    other = Item(EncodedPair((1,)), loop.create_future(), 0, 0.0)
    queue = PendingQueue()
    for item in (other, *same):
        queue.push(item, now_s=0.0)
    assert queue.take_batch(BatchLimits(4, 100), now_s=1.0, aging_s=1e9) == same
    assert queue.take_batch(BatchLimits(4, 100), now_s=1.0, aging_s=1e9) == [other]
    loop.close()


def test_a_level_that_is_being_served_does_not_age() -> None:
    """Bulk work being computed batch after batch stays behind priority 10, however long its
    round takes; only a level that goes unserved gains urgency."""
    loop = asyncio.new_event_loop()
    queue = PendingQueue()
    for item in _items(loop, [1] * 50, [0] * 50):
        queue.push(item, now_s=0.0)
    limits = BatchLimits(2, 100)
    for step in range(20):  # bulk served for 20 s of a 1 s aging
        assert queue.take_batch(limits, now_s=float(step + 1), aging_s=1.0)[0].priority == 0
    urgent = _items(loop, [1], [10])[0]
    queue.push(urgent, now_s=21.0)
    assert queue.take_batch(limits, now_s=21.0, aging_s=1.0) == [urgent]
    loop.close()

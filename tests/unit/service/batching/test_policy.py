"""The batch policy is pure: property-test its caps and its guarantees."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from service.batching.policy import (
    BatchLimits,
    anchor_index,
    batch_is_full,
    chunk_by_length,
    longest_first_batch,
)

limits_strategy = st.builds(
    BatchLimits,
    max_pairs=st.integers(1, 64),
    max_tokens=st.integers(1, 4096),
    max_padding_fraction=st.floats(0.0, 1.0),
)
lengths_strategy = st.lists(st.integers(1, 512), min_size=1, max_size=200)


@given(lengths_strategy, limits_strategy)
def test_a_batch_from_the_longest_end_holds_the_longest_and_respects_every_cap(lengths, limits) -> None:
    ordered = sorted(lengths, reverse=True)
    count = longest_first_batch(ordered, limits)
    assert 1 <= count <= len(ordered)
    if count > 1:  # the longest alone is served even when it exceeds the budget
        _assert_within(limits, ordered[:count])
    if count < len(ordered):  # and it stops only where the next would break a cap
        rows, padded = count + 1, (count + 1) * ordered[0]
        assert (rows > limits.max_pairs or padded > limits.max_tokens
                or padded - sum(ordered[: count + 1]) > limits.max_padding_fraction * padded)


def _assert_within(limits: BatchLimits, widths: list[int]) -> None:
    """The caps, computed here from their definitions (not with the policy's own helper)."""
    rows, padded = len(widths), len(widths) * max(widths)
    assert rows <= limits.max_pairs
    assert padded <= limits.max_tokens
    assert (padded - sum(widths)) / padded <= limits.max_padding_fraction + 1e-12


def test_rows_join_while_the_padding_stays_within_its_share() -> None:
    limits = BatchLimits(max_pairs=8, max_tokens=4096, max_padding_fraction=0.1)
    assert longest_first_batch([101, 100, 98, 97, 12, 10], limits) == 4
    assert longest_first_batch([400, 101, 100], limits) == 1


def test_token_budget_limits_rows() -> None:
    limits = BatchLimits(max_pairs=100, max_tokens=300)
    assert longest_first_batch([100] * 10, limits) == 3


@given(lengths_strategy, limits_strategy)
def test_chunks_cover_every_index_once_and_respect_every_cap(lengths, limits) -> None:
    chunks = chunk_by_length(lengths, limits)
    assert sorted(i for chunk in chunks for i in chunk) == list(range(len(lengths)))
    for chunk in chunks:
        if len(chunk) > 1:
            _assert_within(limits, [lengths[i] for i in chunk])


def test_chunks_group_similar_lengths_longest_first() -> None:
    limits = BatchLimits(max_pairs=100, max_tokens=10**6, max_padding_fraction=0.2)
    assert chunk_by_length([10, 100, 11, 95, 12, 300], limits) == [[5], [1, 3], [4, 2, 0]]


def test_the_most_urgent_priority_is_served_and_waiting_raises_urgency() -> None:
    # At 10 s, aging one level per 2 s: priority 0 waiting since 0 s counts as 5.
    assert anchor_index([0, 5], [0.0, 9.0], now_s=10.0, aging_s=2.0) == 1  # 5 + 0.5 > 5
    assert anchor_index([0, 2], [0.0, 9.0], now_s=10.0, aging_s=2.0) == 0  # 5 > 2 + 0.5
    assert anchor_index([3, 3], [4.0, 4.0], now_s=5.0, aging_s=1.0) == 0  # a tie: queued first


def test_a_batch_is_full_with_enough_rows_or_enough_tokens() -> None:
    limits = BatchLimits(max_pairs=4, max_tokens=100)
    assert not batch_is_full(3, 30, limits)
    assert batch_is_full(4, 4, limits)  # rows
    assert batch_is_full(2, 100, limits)  # tokens: no batch of these can grow past the budget

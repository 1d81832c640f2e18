"""The batch policy is pure: property-test its caps and its guarantees."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from service.batching.policy import BatchLimits, select_batch

limits_strategy = st.builds(
    BatchLimits,
    max_pairs=st.integers(1, 64),
    max_tokens=st.integers(1, 4096),
    max_padding_fraction=st.floats(0.0, 1.0),
)
lengths_strategy = st.lists(st.integers(1, 512), min_size=1, max_size=200)


@given(lengths_strategy, limits_strategy, st.data())
def test_batch_holds_the_anchor_and_respects_every_cap(lengths, limits, data) -> None:
    anchor = data.draw(st.integers(0, len(lengths) - 1))
    chosen = select_batch(lengths, anchor, limits)
    assert anchor in chosen
    assert chosen == sorted(set(chosen))
    assert all(0 <= i < len(lengths) for i in chosen)
    if len(chosen) > 1:  # a lone anchor is served even when it alone exceeds the budget
        widths = [lengths[i] for i in chosen]
        assert limits.admits(len(widths), max(widths), sum(widths))


@given(lengths_strategy, limits_strategy)
def test_repeated_selection_serves_every_item_exactly_once(lengths, limits) -> None:
    pending = list(range(len(lengths)))
    served: list[int] = []
    while pending:
        chosen = select_batch([lengths[i] for i in pending], 0, limits)
        batch = [pending[i] for i in chosen]
        served.extend(batch)
        pending = [p for p in pending if p not in set(batch)]
    assert sorted(served) == list(range(len(lengths)))


def test_similar_lengths_are_grouped_and_outliers_left_out() -> None:
    limits = BatchLimits(max_pairs=8, max_tokens=4096, max_padding_fraction=0.1)
    lengths = [100, 10, 98, 400, 12, 97, 101]
    assert select_batch(lengths, 0, limits) == [0, 2, 5, 6]
    assert select_batch(lengths, 1, limits) == [1, 4]


def test_token_budget_limits_rows() -> None:
    limits = BatchLimits(max_pairs=100, max_tokens=300)
    assert len(select_batch([100] * 10, 0, limits)) == 3

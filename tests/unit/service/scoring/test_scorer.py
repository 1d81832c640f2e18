"""The scorer in process, over a fake backend: checks before work, order, errors, options."""

from __future__ import annotations

import math

import pytest

from service.scoring.errors import (
    InternalScoringError,
    InvalidInputError,
    NotReadyError,
    OverloadedError,
    TooLargeError,
    TooManyInputsError,
    UnknownModelError,
)
from service.scoring.items import Message, PromptResponse, RawText
from service.scoring.options import ScoreOptions
from service.scoring.preparation import ScoringLimits
from tests.unit.service.scoring.conftest import POISON, Harness

ITEMS = [PromptResponse("How do I boil an egg?", "Simmer it."), RawText("hello there"),
         PromptResponse("Why?", "Because the water is hot enough to set the white but not the yolk.")]


def test_rewards_come_back_in_input_order_with_usage_and_timing(harness: Harness) -> None:
    result = harness.run(lambda s: s.score(ITEMS))
    assert result.rewards == harness.expected(ITEMS)
    assert result.truncated == [False] * 3
    assert result.tokens == round(sum(harness.expected(ITEMS)) * 10)
    usage = result.usage
    assert (usage.model, usage.version, usage.items, usage.tokens) == ("rm", "v1", 3, result.tokens)
    assert usage.timing.compute_s > 0


class Refusing:
    """A formatter that must not be reached: the check before it should refuse first."""

    max_length = 64

    def format(self, items):
        raise AssertionError("tokenised before the cheap checks")


@pytest.mark.parametrize(("items", "error", "match"), [
    ([], InvalidInputError, "at least one item"),
    ([RawText("x")] * 9, TooManyInputsError, "9 inputs in one request; the limit is 8"),
    ([RawText("x" * 201)], TooLargeError, r"inputs\[0\].text has 201 characters; the limit is 200"),
])
def test_counts_and_sizes_are_refused_before_tokenising(harness: Harness, items, error, match) -> None:
    harness.registry.get("rm").formatter = Refusing()  # type: ignore[assignment]
    with pytest.raises(error, match=match):
        harness.run(lambda s: s.score(items))
    assert harness.backend.rows_computed == 0


def test_a_non_finite_reward_is_an_internal_error_never_a_value(harness: Harness) -> None:
    with pytest.raises(InternalScoringError, match="non-finite reward") as failure:
        harness.run(lambda s: s.score([RawText("fine"), RawText(POISON)]))
    assert failure.value.model == ("rm", "v1")


def test_not_ready_and_unknown_models_are_refused_before_work(harness: Harness) -> None:
    with pytest.raises(UnknownModelError, match="'nope' is not served here; loaded: rm, other"):
        harness.run(lambda s: s.score(ITEMS, "nope"))
    harness.readiness.not_ready_reason = "models are still loading"
    with pytest.raises(NotReadyError, match="still loading"):
        harness.run(lambda s: s.score(ITEMS))
    assert harness.backend.rows_computed == 0


def test_normalize_and_clip_apply_the_models_statistics(harness: Harness) -> None:
    raw = harness.expected(ITEMS)
    normalized = harness.run(lambda s: s.score(ITEMS, options=ScoreOptions(normalize=True))).rewards
    assert normalized == pytest.approx([(r - 1.0) / 2.0 for r in raw], abs=1e-12)
    clipped = harness.run(lambda s: s.score(ITEMS, options=ScoreOptions(clip=0.5))).rewards
    assert clipped == [max(-0.5, min(0.5, r)) for r in raw]
    with pytest.raises(InvalidInputError, match="'other' has no normalisation statistics") as failure:
        harness.run(lambda s: s.score(ITEMS, "other", ScoreOptions(normalize=True)))
    assert failure.value.model == ("other", "v1")


def test_combine_is_the_weighted_sum_clipped(harness: Harness) -> None:
    raw = harness.expected(ITEMS)
    result = harness.run(lambda s: s.combine(ITEMS, {"rm": 0.7, "other": -0.2}, ScoreOptions(clip=1.0)))
    assert result.rewards == pytest.approx([max(-1.0, min(1.0, 0.5 * r)) for r in raw], abs=1e-12)
    assert result.components["rm"].rewards == raw
    assert result.usage.model == "combined"
    assert result.usage.tokens == 2 * round(sum(raw) * 10)


def test_a_combination_that_overflows_is_refused_never_returned(harness: Harness) -> None:
    with pytest.raises(InvalidInputError, match="overflows with these combine weights"):
        harness.run(lambda s: s.combine(ITEMS, {"rm": 1e308, "other": 1e308}))


def test_a_full_queue_refuses_before_tokenising(harness: Harness) -> None:
    served = harness.registry.get("rm")
    served.formatter = Refusing()  # type: ignore[assignment]
    served.batcher._max_items = 0  # the queue is full
    with pytest.raises(OverloadedError, match="the queue is full"):
        harness.run(lambda s: s.score(ITEMS))


def test_rank_orders_by_reward_and_compare_gives_the_bradley_terry_probability(harness: Harness) -> None:
    responses = ["short", "a somewhat longer answer", "the longest answer of all of them here"]
    ranked = harness.run(lambda s: s.rank([Message("user", "Q?")], responses, top_k=2))
    assert ranked.ranking == [2, 1]
    rewards = ranked.score.rewards
    compared = harness.run(lambda s: s.compare([Message("user", "Q?")], responses[0], responses[2]))
    assert compared.probability_a == pytest.approx(1 / (1 + math.exp(rewards[2] - rewards[0])), abs=1e-12)


def test_cached_rewards_are_the_computed_ones_and_cost_no_forward_pass(tiny_model_dirs) -> None:
    harness = Harness(tiny_model_dirs["bert-right"], limits=ScoringLimits(), cache_bytes=1 << 20)
    try:
        first = harness.run(lambda s: s.score(ITEMS)).rewards
        computed = harness.backend.rows_computed
        again = harness.run(lambda s: s.score(list(reversed(ITEMS)))).rewards
        assert again == list(reversed(first))
        assert harness.backend.rows_computed == computed
    finally:
        harness.close()

"""What raw rewards become: normalised, clipped, combined, compared."""

from __future__ import annotations

import math

import pytest

from service.scoring.errors import InvalidInputError
from service.scoring.rewards import clipped, normalized, preference_probability, weighted_sum


def test_normalized_is_z_scored_with_the_models_statistics() -> None:
    assert normalized([3.0, -1.0], (1.0, 2.0), "rm") == [1.0, -1.0]
    with pytest.raises(InvalidInputError, match=r"'rm' has no normalisation statistics.*calibrate"):
        normalized([1.0], None, "rm")


def test_clipped_bounds_both_sides_and_none_is_no_bound() -> None:
    assert clipped([-5.0, 0.25, 5.0], 1.0) == [-1.0, 0.25, 1.0]
    assert clipped([-5.0, 5.0], None) == [-5.0, 5.0]


@pytest.mark.parametrize(("a", "b"), [(0.0, 0.0), (2.0, -1.0), (-1.0, 2.0), (800.0, -800.0), (-800.0, 800.0)])
def test_preference_probability_is_the_sigmoid_of_the_margin_without_overflow(a: float, b: float) -> None:
    p = preference_probability(a, b)
    margin = a - b
    expected = 1 / (1 + math.exp(-margin)) if margin > -700 else 0.0
    assert p == pytest.approx(expected, abs=1e-15)
    assert p + preference_probability(b, a) == pytest.approx(1.0, abs=1e-15)


def test_weighted_sum_is_alpha_r1_plus_beta_r2_per_item() -> None:
    total = weighted_sum({"a": [1.0, 2.0], "b": [10.0, -10.0]}, {"a": 0.5, "b": 0.1})
    assert total == pytest.approx([1.5, 0.0], abs=1e-12)

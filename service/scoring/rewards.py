"""What a raw reward becomes for the caller: normalised, clipped, combined, compared."""

from __future__ import annotations

import math
from collections.abc import Sequence

from service.scoring.errors import InvalidInputError


def require_statistics(statistics: tuple[float, float] | None, model: str) -> tuple[float, float]:
    if statistics is None:
        raise InvalidInputError(
            f"model {model!r} has no normalisation statistics: calibrate its stored version (`rmserve "
            "models calibrate NAME[:VERSION] --data FILE`, needs the train extra) and restart, serve a "
            "model whose config.json has mean and std, or drop normalize"
        )
    return statistics


def normalized(rewards: Sequence[float], statistics: tuple[float, float] | None, model: str) -> list[float]:
    """(r - mean) / std with the model's statistics over its reference set."""
    mean, std = require_statistics(statistics, model)
    return [(r - mean) / std for r in rewards]


def clipped(rewards: Sequence[float], bound: float | None) -> list[float]:
    if bound is None:
        return list(rewards)
    return [min(bound, max(-bound, r)) for r in rewards]


def preference_probability(reward_a: float, reward_b: float) -> float:
    """Bradley-Terry: P(a preferred to b) = sigmoid(r_a - r_b), computed without overflow."""
    margin = reward_a - reward_b
    if margin >= 0:
        return 1.0 / (1.0 + math.exp(-margin))
    odds = math.exp(margin)
    return odds / (1.0 + odds)


def weighted_sum(components: dict[str, list[float]], weights: dict[str, float]) -> list[float]:
    """sum_m w_m * r_m per item, in the order of `weights`."""
    rows = zip(*(components[name] for name in weights), strict=True)
    return [sum(w * r for w, r in zip(weights.values(), row, strict=True)) for row in rows]

"""Normalisation statistics: the mean and spread of a model's rewards over a reference set, as
manifest.normalization holds them, so that the server can return (r - mean) / std on request.

Pure arithmetic here, so that the demo build (model_store) and `rmserve models calibrate`
(rmserve_train) compute them the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from model_store.manifest import Normalization


def reward_normalization(rewards: Sequence[float], *, reference: str) -> Normalization:
    """Mean and population std (ddof 0): normalised, the reference rewards have mean 0 and std 1."""
    if len(rewards) < 2:
        raise ValueError("normalisation needs at least two reference rewards")
    mean = math.fsum(rewards) / len(rewards)
    std = math.sqrt(math.fsum((r - mean) ** 2 for r in rewards) / len(rewards))
    if not std > 0:
        raise ValueError("every reference reward is the same: there is no spread to normalise by")
    return Normalization(mean=mean, std=std, count=len(rewards), reference=reference)

"""Normalisation statistics: the mean and spread of a model's rewards over a reference set,
stored in manifest.normalization so that the server can return (r - mean) / std on request."""

from __future__ import annotations

import math
from collections.abc import Sequence

from model_store.manifest import Normalization
from model_store.store import ModelStore, StoredModel
from rmserve_train.scorers import RewardSource
from service.scoring.items import ScoreInput


def reward_normalization(rewards: Sequence[float], *, reference: str) -> Normalization:
    """Mean and population std (ddof 0): normalised, the reference rewards have mean 0 and std 1."""
    if len(rewards) < 2:
        raise ValueError("normalisation needs at least two reference rewards")
    mean = math.fsum(rewards) / len(rewards)
    std = math.sqrt(math.fsum((r - mean) ** 2 for r in rewards) / len(rewards))
    if not std > 0:
        raise ValueError("every reference reward is the same: there is no spread to normalise by")
    return Normalization(mean=mean, std=std, count=len(rewards), reference=reference)


def calibrate(
    store: ModelStore, ref: str, source: RewardSource, items: Sequence[ScoreInput], *, reference: str
) -> StoredModel:
    """Score the reference inputs with `source` (the model `ref`) and store the statistics."""
    stored = store.get(ref)  # fail on a bad reference before scoring anything
    normalization = reward_normalization(source.score(items), reference=reference)
    return store.update_manifest(stored, normalization=normalization)

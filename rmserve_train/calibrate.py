"""`rmserve models calibrate`: score a reference set with a stored model and store the mean and
spread of its rewards in manifest.normalization (the arithmetic is model_store's, shared with the
demo build)."""

from __future__ import annotations

from collections.abc import Sequence

from model_store.normalization import reward_normalization
from model_store.store import ModelStore, StoredModel
from rmserve_train.scorers import RewardSource
from service.scoring.items import ScoreInput

__all__ = ["calibrate", "reward_normalization"]


def calibrate(
    store: ModelStore, ref: str, source: RewardSource, items: Sequence[ScoreInput], *, reference: str
) -> StoredModel:
    """Score the reference inputs with `source` (the model `ref`) and store the statistics."""
    stored = store.get(ref)  # fail on a bad reference before scoring anything
    normalization = reward_normalization(source.score(items), reference=reference)
    return store.update_manifest(stored, normalization=normalization)

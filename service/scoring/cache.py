"""A least-recently-used cache of rewards, bounded in bytes.

The key is the exact token ids (and token types) a model version would see, so a hit is the
reward that forward pass would give: trainers re-scoring the same rollouts, a chat product
ranking the same candidates again. Used from the event loop only, so it needs no lock.
"""

from __future__ import annotations

import math
from array import array
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from service.backends.base import EncodedPair

if TYPE_CHECKING:
    from service.scoring.registry import ServedModel

# Per entry beyond its key's bytes: the dict slot, the key and float objects (measured, CPython).
_ENTRY_OVERHEAD_BYTES = 160


def cache_key(model: str, version: str, pair: EncodedPair) -> bytes:
    ids = array("i", pair.input_ids).tobytes()
    types = array("b", pair.token_type_ids).tobytes() if pair.token_type_ids else b""
    return b"\0".join((model.encode(), version.encode(), ids, types))


class RewardCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[bytes, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> float | None:
        reward = self._entries.get(key)
        if reward is not None:
            self._entries.move_to_end(key)
        return reward

    def put(self, key: bytes, reward: float) -> None:
        size = len(key) + _ENTRY_OVERHEAD_BYTES
        if size > self.max_bytes or key in self._entries:
            return
        self._entries[key] = reward
        self.bytes += size
        while self.bytes > self.max_bytes:
            old, _ = self._entries.popitem(last=False)
            self.bytes -= len(old) + _ENTRY_OVERHEAD_BYTES


def reward_cache(size_mb: float) -> RewardCache | None:
    """The cache --result-cache-mb asks for; None for 0 (off)."""
    return RewardCache(int(size_mb * 2**20)) if size_mb else None


def look_up(
    cache: RewardCache | None, served: ServedModel, pairs: Sequence[EncodedPair]
) -> tuple[list[float | None], list[bytes]]:
    """Each pair's cached reward (None where missed; all None without a cache), and the keys of the
    missed ones, for `remember` to put their rewards under; hits and misses counted."""
    if cache is None:
        return [None] * len(pairs), []
    keys = [cache_key(served.name, served.version, pair) for pair in pairs]
    known = [cache.get(key) for key in keys]
    missed = [key for key, reward in zip(keys, known, strict=True) if reward is None]
    served.metrics.cache_hits.inc(len(keys) - len(missed))
    served.metrics.cache_misses.inc(len(missed))
    return known, missed


def remember(
    cache: RewardCache | None, served: ServedModel, missed: Sequence[bytes], computed: Sequence[float]
) -> None:
    """The computed rewards cached under the keys `look_up` gave, finite ones only (the others
    are refused, never served)."""
    if cache is None:
        return
    for key, reward in zip(missed, computed, strict=True):
        if math.isfinite(reward):
            cache.put(key, reward)
    served.metrics.cache_bytes.set(cache.bytes)


def merged(known: Iterable[float | None], computed: Iterable[float]) -> list[float]:
    """Every item's reward in order: the cached ones, and the computed ones where the cache missed."""
    fresh = iter(computed)
    return [reward if reward is not None else next(fresh) for reward in known]

"""The result cache: exact keys, least recently used out first, never over its byte bound."""

from __future__ import annotations

from service.backends.base import EncodedPair
from service.scoring.cache import RewardCache, cache_key


def key(*ids: int, model: str = "rm", version: str = "v1", types: tuple[int, ...] | None = None) -> bytes:
    return cache_key(model, version, EncodedPair(tuple(ids), types))


def test_keys_tell_apart_models_versions_tokens_and_token_types() -> None:
    keys = {key(1, 2), key(1, 2, model="other"), key(1, 2, version="v2"), key(2, 1), key(1, 2, types=(0, 1))}
    assert len(keys) == 5
    assert key(1, 2) == key(1, 2)


def test_the_least_recently_used_entry_goes_first_and_the_bound_holds() -> None:
    one_entry = len(key(1)) + 160
    cache = RewardCache(max_bytes=2 * one_entry)
    cache.put(key(1), 1.0)
    cache.put(key(2), 2.0)
    assert cache.get(key(1)) == 1.0  # now the most recent
    cache.put(key(3), 3.0)
    assert (cache.get(key(1)), cache.get(key(2)), cache.get(key(3))) == (1.0, None, 3.0)
    assert cache.bytes <= cache.max_bytes and len(cache) == 2


def test_an_entry_larger_than_the_whole_cache_is_not_kept() -> None:
    cache = RewardCache(max_bytes=100)
    cache.put(key(*range(100)), 1.0)
    assert len(cache) == 0 and cache.bytes == 0

"""A scorer over a fast fake backend: the real formatter, batcher and registry, no model."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from service.backends.base import BackendInfo, EncodedPair
from service.batching.batcher import Batcher
from service.batching.policy import BatchLimits
from service.metrics import Metrics
from service.scoring.cache import RewardCache
from service.scoring.formatting import InputFormatter
from service.scoring.preparation import ScoringLimits
from service.scoring.registry import ModelRegistry, ServedModel
from service.scoring.scorer import Scorer

POISON = "nan please"  # a text whose reward the fake backend makes NaN


class FakeBackend:
    """Reward = the number of tokens / 10 (NaN for rows holding the poison's tokens)."""

    def __init__(self, poison_ids: tuple[int, ...]) -> None:
        self.rows_computed = 0
        self._poison = poison_ids

    def score(self, batch: Sequence[EncodedPair]) -> list[float]:
        self.rows_computed += len(batch)
        return [math.nan if _contains(row.input_ids, self._poison) else len(row) / 10 for row in batch]


def _contains(ids: tuple[int, ...], part: tuple[int, ...]) -> bool:
    return any(ids[i : i + len(part)] == part for i in range(len(ids) - len(part) + 1))


class Ready:
    not_ready_reason: str | None = None


class Harness:
    """Runs scorer calls on one event loop, with the backend and counters at hand."""

    def __init__(self, folder: Path, *, limits: ScoringLimits, cache_bytes: int = 0) -> None:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        self.formatter = InputFormatter(tokenizer, max_length=64)
        poison = tuple(tokenizer(POISON, add_special_tokens=False)["input_ids"])
        self.backend = FakeBackend(poison)
        self.readiness = Ready()
        self.registry = ModelRegistry()
        self.metrics = Metrics()
        self.loop = asyncio.new_event_loop()
        self.executor = ThreadPoolExecutor(1)
        cache = RewardCache(cache_bytes) if cache_bytes else None
        self.scorer = Scorer(self.registry, limits, self.readiness, cache)
        for name, statistics in (("rm", (1.0, 2.0)), ("other", None)):
            self.loop.run_until_complete(self._add(name, statistics))

    async def _add(self, name: str, statistics: tuple[float, float] | None) -> None:
        batcher = Batcher(self.backend.score, self.executor, BatchLimits(8, 512), max_wait_s=0,
                          max_queue_items=100)
        batcher.start()
        self.registry.add(ServedModel(
            name=name, version="v1", max_length=64, formatter=self.formatter, batcher=batcher,
            backend=BackendInfo("fake", "cpu", "float32"), metrics=self.metrics.for_model(name, "v1"),
            normalization=statistics,
        ))

    def run(self, call: Callable[[Scorer], object]) -> object:
        return self.loop.run_until_complete(call(self.scorer))  # type: ignore[arg-type]

    def expected(self, items: Sequence[object]) -> list[float]:
        """What the fake backend gives each item, computed without the scorer."""
        return [len(f.pair) / 10 for f in self.formatter.format(items)]  # type: ignore[arg-type]

    def close(self) -> None:
        for model in self.registry.all():
            self.loop.run_until_complete(model.batcher.stop())
        self.loop.close()
        self.executor.shutdown()


@pytest.fixture
def harness(tiny_model_dirs: dict[str, Path]) -> Harness:
    made = Harness(tiny_model_dirs["bert-right"], limits=ScoringLimits(max_inputs_per_request=8,
                                                                       max_chars_per_field=200))
    yield made
    made.close()

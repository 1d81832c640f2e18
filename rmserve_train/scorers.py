"""Where rewards come from: the server's own scoring path in this process, or a running server
through the Python client. Both score an input exactly as `rmserve serve` does, so evaluation and
calibration numbers are the server's numbers."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

from tqdm import tqdm

from model_store.store import ModelStore
from rmserve_client import RewardClient
from service.app import scoring_limits
from service.lifecycle import Lifecycle
from service.loading import ModelSource, locate_model
from service.metrics import Metrics
from service.scoring.items import Conversation, PromptResponse, RawText, ScoreInput
from service.scoring.registry import ModelRegistry
from service.scoring.scorer import Scorer
from service.settings import Settings

# Padded tokens per forward pass: the server's CPU budget is 2048; offline a larger one is faster.
_BATCH_TOKENS = 8192
_BATCH_ROWS = 64
# Inputs handed to the scorer at once: enough to fill many batches, few enough for a progress bar.
_CHUNK = 1024


class RewardSource(Protocol):
    """Scores inputs, one float per input, in order."""

    label: str  # what is scored, for reports: "helpful:v3" or "helpful@http://host:8000"

    def score(self, items: Sequence[ScoreInput]) -> list[float]: ...

    def close(self) -> None: ...


class InProcessRewards:
    """The server's scoring path in this process: the same loading (Lifecycle), formatting,
    batching and checks (Scorer: empty inputs, non-finite rewards) as `rmserve serve`, with
    offline batch sizes, on a private event loop."""

    def __init__(self, source: ModelSource, *, device: str = "auto", dtype: str = "auto",
                 progress: bool = False) -> None:
        settings = Settings(
            device=device, dtype=dtype, warmup=False, grpc_port=0, max_batch_pairs=_BATCH_ROWS,
            max_batch_tokens=_BATCH_TOKENS, max_inputs_per_request=_CHUNK, max_queue_items=_CHUNK,
            max_queue_tokens=_CHUNK * source.max_length,
        )
        self.label = f"{source.name}:{source.version}"
        self.max_length = source.max_length
        self._loop = asyncio.new_event_loop()
        registry = ModelRegistry()
        self._lifecycle = Lifecycle(settings, registry, Metrics())
        if not self._loop.run_until_complete(self._lifecycle.load_all([source])):
            self._loop.close()
            raise RuntimeError(f"{self.label}: {self._lifecycle.not_ready_reason}")
        self._scorer = Scorer(registry, scoring_limits(settings), self._lifecycle)
        self._progress = progress
        self.truncated = 0  # inputs shortened to max_length so far

    @classmethod
    def open(cls, ref: str, store: ModelStore, **options: Any) -> InProcessRewards:
        """A store reference NAME[:VERSION] (checksums verified) or an HF model folder."""
        return cls(locate_model(ref, store, backend="torch"), **options)

    def score(self, items: Sequence[ScoreInput]) -> list[float]:
        rewards: list[float] = []
        with tqdm(total=len(items), desc=f"scoring {self.label}", unit="input", leave=False,
                  disable=not self._progress) as bar:
            for start in range(0, len(items), _CHUNK):
                chunk = items[start : start + _CHUNK]
                result = self._loop.run_until_complete(self._scorer.score(chunk))
                rewards += result.rewards
                self.truncated += sum(result.truncated)
                bar.update(len(chunk))
        return rewards

    def close(self) -> None:
        self._loop.run_until_complete(self._lifecycle.close())
        self._loop.close()


class ServerRewards:
    """A running rmserve (http:// or grpc://), through RewardClient (chunking, retries)."""

    def __init__(self, url: str, *, model: str | None = None) -> None:
        self.label = f"{model or 'default model'}@{url}"
        self._client = RewardClient(url, model=model)

    def score(self, items: Sequence[ScoreInput]) -> list[float]:
        return self._client.score([wire_item(item) for item in items])

    def close(self) -> None:
        self._client.close()


def wire_item(item: ScoreInput) -> dict[str, Any]:
    """An input as the HTTP API (and the client) takes it."""
    if isinstance(item, PromptResponse):
        return {"prompt": item.prompt, "response": item.response}
    if isinstance(item, Conversation):
        return {"messages": [{"role": m.role, "content": m.content} for m in item.messages]}
    if isinstance(item, RawText):
        return {"text": item.text}
    raise TypeError(f"cannot send {type(item).__name__}")

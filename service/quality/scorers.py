"""Where rewards come from: rmserve's own formatter and PyTorch backend in this process, or a
running server through the Python client. Both score an input exactly as `rmserve serve` does,
so evaluation and calibration numbers are the server's numbers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from tqdm import tqdm

from model_store.store import ModelStore
from service.backends.torch_backend import TorchBackend
from service.client import RewardClient
from service.formatting import InputFormatter
from service.items import Conversation, PromptResponse, RawText, ScoreInput
from service.loading import ModelSource, load_tokenizer, locate_model

# Padded tokens per forward pass: the server's CPU budget is 2048; offline a larger one is faster.
_BATCH_TOKENS = 8192
_BATCH_ROWS = 64


class RewardSource(Protocol):
    """Scores inputs, one float per input, in order."""

    label: str  # what is scored, for reports: "helpful:v3" or "helpful@http://host:8000"

    def score(self, items: Sequence[ScoreInput]) -> list[float]: ...

    def close(self) -> None: ...


class LocalScorer:
    """The server's scoring path in-process: InputFormatter (chat template or text pair, prompt
    cut from the left) then TorchBackend on right-padded batches of similar length."""

    def __init__(self, source: ModelSource, *, device: str = "auto", dtype: str = "auto",
                 progress: bool = False) -> None:
        tokenizer = load_tokenizer(source.path)
        self.label = f"{source.name}:{source.version}"
        self.max_length = source.max_length
        self._formatter = InputFormatter(tokenizer, source.max_length)
        self._backend = TorchBackend.load(
            source.path, pad_token_id=tokenizer.pad_token_id, device=device, dtype=dtype
        )
        self._progress = progress
        self.truncated = 0  # inputs shortened to max_length so far

    @classmethod
    def open(cls, ref: str, store: ModelStore, **options: Any) -> LocalScorer:
        """A store reference NAME[:VERSION] (checksums verified) or an HF model folder."""
        return cls(locate_model(ref, store, backend="torch"), **options)

    def score(self, items: Sequence[ScoreInput]) -> list[float]:
        formatted = self._formatter.format(items)
        self.truncated += sum(f.truncated for f in formatted)
        order = sorted(range(len(formatted)), key=lambda i: len(formatted[i].pair))
        rewards = [0.0] * len(formatted)
        with tqdm(total=len(order), desc=f"scoring {self.label}", unit="input", leave=False,
                  disable=not self._progress) as bar:
            for batch in _batches(order, [len(f.pair) for f in formatted]):
                scores = self._backend.score([formatted[i].pair for i in batch])
                for i, reward in zip(batch, scores, strict=True):
                    rewards[i] = reward
                bar.update(len(batch))
        return rewards

    def close(self) -> None:
        """Nothing to release: the model is freed with the scorer."""


class RemoteScorer:
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


def _batches(order: list[int], lengths: list[int]) -> list[list[int]]:
    """Consecutive runs of the length-sorted order, each within the row and token budgets."""
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current and (len(current) == _BATCH_ROWS or (len(current) + 1) * lengths[i] > _BATCH_TOKENS):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches

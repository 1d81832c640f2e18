"""The models a server holds, by name; no global state, one registry per app."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from service.backends.base import BackendInfo, EncodedPair
from service.batching.policy import BatchLimits
from service.batching.submission import BatchedRewards
from service.metrics import ModelMetrics
from service.scoring.errors import UnknownModelError
from service.scoring.formatting import InputFormatter

# A client-chosen name is echoed in errors only this far.
_NAME_SHOWN_CHARS = 64


class Submitted(Protocol):
    """One request's items in a batcher (service.batching.submission.Submission, or its remote twin)."""

    def add(self, pairs: Sequence[EncodedPair]) -> None: ...

    def close(self) -> None: ...

    async def outcome(self) -> BatchedRewards: ...

    def cancel(self) -> int: ...


class ModelBatcher(Protocol):
    """A model's batching: in this process (service.batching.batcher.Batcher) or in an engine
    process (service.engine.remote.RemoteBatcher)."""

    limits: BatchLimits

    def open(self, priority: int = 0) -> Submitted: ...

    async def stop(self) -> None: ...


@dataclass
class ServedModel:
    """Everything needed to score with one model."""

    name: str
    version: str
    max_length: int
    formatter: InputFormatter
    batcher: ModelBatcher
    backend: BackendInfo
    metrics: ModelMetrics
    normalization: tuple[float, float] | None = None  # (mean, std) for "normalize": true


class ModelRegistry:
    """Named models; the first one added answers requests that name none."""

    def __init__(self) -> None:
        self._models: dict[str, ServedModel] = {}
        self._default: str | None = None

    def add(self, model: ServedModel) -> None:
        if model.name in self._models:
            raise ValueError(f"two models are served under the name {model.name!r}")
        self._models[model.name] = model
        self._default = self._default or model.name

    def get(self, name: str | None) -> ServedModel:
        key = name or self._default
        if key not in self._models:
            long_name = name is not None and len(name) > _NAME_SHOWN_CHARS
            shown = f"{name[:_NAME_SHOWN_CHARS]}..." if long_name else name
            raise UnknownModelError(
                f"model {shown!r} is not served here; loaded: {', '.join(self._models)}"
            )
        return self._models[key]

    def all(self) -> list[ServedModel]:
        return list(self._models.values())

"""The models a server holds, by name; no global state, one registry per app."""

from __future__ import annotations

from dataclasses import dataclass

from service.backends.base import BackendInfo
from service.batching.batcher import Batcher
from service.errors import NotReadyError, UnknownModelError
from service.formatting import InputFormatter
from service.metrics import ModelMetrics


@dataclass
class ServedModel:
    """Everything needed to score with one model."""

    name: str
    version: str
    max_length: int
    formatter: InputFormatter
    batcher: Batcher
    backend: BackendInfo
    metrics: ModelMetrics
    normalization: tuple[float, float] | None = None  # (mean, std) for "normalize": true


class ModelRegistry:
    """Named models; the first one added answers requests that name none."""

    def __init__(self) -> None:
        self._models: dict[str, ServedModel] = {}
        self._default: str | None = None
        self.ready = False
        self.failure: str | None = None  # why loading failed, reported by /readyz and scoring
        self.draining = False  # set on SIGTERM: not ready, and no new work

    def add(self, model: ServedModel) -> None:
        if model.name in self._models:
            raise ValueError(f"two models are served under the name {model.name!r}")
        self._models[model.name] = model
        self._default = self._default or model.name

    @property
    def not_ready_reason(self) -> str | None:
        if self.draining:
            return "the server is shutting down"
        if not self.ready:
            return self.failure or "models are still loading"
        return None

    def get(self, name: str | None) -> ServedModel:
        if reason := self.not_ready_reason:
            raise NotReadyError(reason)
        key = name or self._default
        if key not in self._models:
            raise UnknownModelError(
                f"model {name!r} is not served here; loaded: {', '.join(self._models)}"
            )
        return self._models[key]

    def all(self) -> list[ServedModel]:
        return list(self._models.values())

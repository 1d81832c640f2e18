"""The contract between the batcher and a model backend."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class EncodedPair:
    """One tokenised input, ready for the model (no padding)."""

    input_ids: tuple[int, ...]
    token_type_ids: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass(frozen=True)
class BackendInfo:
    """What /v1/models reports about a loaded backend."""

    backend: str
    device: str
    dtype: str


class Backend(Protocol):
    """Scores a batch of tokenised inputs; called from one worker thread per device."""

    info: BackendInfo

    def score(self, batch: Sequence[EncodedPair]) -> list[float]:
        """One scalar reward per row, in order."""
        ...

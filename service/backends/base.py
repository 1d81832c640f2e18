"""The contract between the batcher and a model backend."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class EncodedPair:
    """One tokenised input, ready for the model (no padding).

    `shared_prefix` > 0 says the first that many tokens are the same in other rows of its request
    (the rendered prompt of best-of-n candidates): a backend that can may compute them once and
    the rest as a continuation. Backends that cannot just read the whole row.
    """

    input_ids: tuple[int, ...]
    token_type_ids: tuple[int, ...] | None = None
    shared_prefix: int = 0

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def own_length(self) -> int:
        """Tokens this row costs beyond its shared prefix: what batching budgets for."""
        return len(self.input_ids) - self.shared_prefix


@dataclass(frozen=True)
class BackendInfo:
    """What /v1/models reports about a loaded backend."""

    backend: str
    device: str
    dtype: str
    shares_prefixes: bool = False  # computes a shared prefix once (decoders under PyTorch)


class Backend(Protocol):
    """Scores a batch of tokenised inputs; called from one worker thread per device."""

    info: BackendInfo

    def score(self, batch: Sequence[EncodedPair]) -> list[float]:
        """One scalar reward per row, in order."""
        ...

"""Right padding of a tokenised batch, shared by every backend."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.backends.base import EncodedPair


@dataclass(frozen=True)
class PaddedBatch:
    """A batch as int64 arrays of shape (rows, longest row), padded on the right.

    Right padding, whatever the tokenizer says: with absolute positions (BERT) and causal
    decoders alike, the real tokens then see exactly what they would see unpadded, and
    each row's reward position follows from its length.
    """

    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray | None
    lengths: np.ndarray

    @classmethod
    def of(cls, batch: Sequence[EncodedPair], pad_token_id: int) -> PaddedBatch:
        lengths = np.array([len(row) for row in batch], dtype=np.int64)
        shape = (len(batch), int(lengths.max()))
        input_ids = np.full(shape, pad_token_id, dtype=np.int64)
        attention_mask = np.zeros(shape, dtype=np.int64)
        token_type_ids = np.zeros(shape, dtype=np.int64) if batch[0].token_type_ids else None
        for i, row in enumerate(batch):
            input_ids[i, : len(row)] = row.input_ids
            attention_mask[i, : len(row)] = 1
            if token_type_ids is not None and row.token_type_ids:
                token_type_ids[i, : len(row)] = row.token_type_ids
        return cls(input_ids, attention_mask, token_type_ids, lengths)

    def position_ids(self) -> np.ndarray:
        return np.broadcast_to(np.arange(self.input_ids.shape[1], dtype=np.int64), self.input_ids.shape)

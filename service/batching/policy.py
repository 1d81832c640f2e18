"""Every batching decision, as pure functions of the pending items: which item a batch is built
around, whether waiting could still fill a batch, which items join it, and how rows of one batch
are cut into chunks of similar length. The batcher and the backends only carry them out."""

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
    priorities: Sequence[int], enqueued_s: Sequence[float], now_s: float, aging_s: float
) -> int:
    """The item the next batch is built around: the highest priority plus one level per `aging_s`
    waited, so urgent work goes first and nothing starves. Ties go to the earliest queued."""
    return max(
        range(len(priorities)),
        key=lambda i: (priorities[i] + (now_s - enqueued_s[i]) / aging_s, -enqueued_s[i], -i),
    )


def batch_is_full(lengths: Sequence[int], limits: BatchLimits) -> bool:
    """Whether the pending items can already fill a batch, so waiting for more gains nothing.

    Enough rows, or enough tokens: a batch pads every row to its longest, so its padded tokens
    are at least the real ones; once the pending real tokens reach the budget, the budget binds.
    """
    return len(lengths) >= limits.max_pairs or sum(lengths) >= limits.max_tokens


def select_batch(lengths: Sequence[int], anchor: int, limits: BatchLimits) -> list[int]:
    """Indices of the next batch: the anchor plus items of similar length.

    Growing outward from the anchor in length order, each step takes the neighbour that adds
    the fewest padding tokens, while the batch stays within both limits. The anchor is always
    taken, even alone over the token budget, so every item is served. Returns indices sorted.
    """
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    low = high = order.index(anchor)
    count, width, real = 1, lengths[anchor], lengths[anchor]
    while True:
        # A shorter neighbour is padded up to the current width; a longer one widens every row.
        options: list[tuple[int, int, int, int]] = []  # (padding added, width, length, step)
        if low > 0:
            shorter = lengths[order[low - 1]]
            options.append((width - shorter, width, shorter, -1))
        if high + 1 < len(order):
            longer = lengths[order[high + 1]]
            options.append((count * (longer - width), longer, longer, +1))
        fitting = [o for o in sorted(options) if limits.admits(count + 1, o[1], real + o[2])]
        if not fitting:
            break
        _, width, length, step = fitting[0]
        if step < 0:
            low -= 1
        else:
            high += 1
        count, real = count + 1, real + length
    return sorted(order[low : high + 1])


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

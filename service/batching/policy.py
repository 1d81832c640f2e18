"""Which pending items form the next batch: a pure function of their lengths."""

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


def select_batch(lengths: Sequence[int], anchor: int, limits: BatchLimits) -> list[int]:
    """Indices of the next batch: the anchor (the oldest item) plus items of similar length.

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

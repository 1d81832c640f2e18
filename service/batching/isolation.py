"""One forward pass for a batch, computed so that no row can hurt another.

Identical token rows are computed once: a reward then depends only on the tokens, bit for bit,
whatever else shares the pass (rows of one batch can otherwise differ in the last bits, because
the kernels' reduction order depends on the batch's shape). And when a pass raises, the rows
are retried apart, halving the failing group, so only the rows that fail alone get the error.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from service.backends.base import EncodedPair

ScoreBatch = Callable[[Sequence[EncodedPair]], list[float]]


class RowKey:
    """What makes two rows the same computation: their tokens (a shared prefix changes only how
    it is done). The hash is computed once: the queue compares keys at every batch."""

    __slots__ = ("_hash", "_tokens")

    def __init__(self, pair: EncodedPair) -> None:
        self._tokens = (pair.input_ids, pair.token_type_ids)
        self._hash = hash(self._tokens)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RowKey) and self._hash == other._hash and self._tokens == other._tokens


@dataclass(frozen=True)
class Pass:
    """One forward pass that produced rewards: which unique rows, and how long it took."""

    rows: list[int]
    seconds: float


@dataclass(frozen=True)
class Outcome:
    """Per unique row, its reward or the error it failed with alone; and the passes that worked."""

    results: list[float | Exception]
    passes: list[Pass]

    @property
    def isolated(self) -> bool:
        """Whether the batch needed more than the one pass (a failure was split apart)."""
        return len(self.passes) != 1 or len(self.passes[0].rows) != len(self.results)


def unique_rows(pairs: Sequence[EncodedPair]) -> tuple[list[EncodedPair], list[int]]:
    """The distinct rows (first occurrence of each) and, for every row, its distinct row's index."""
    first: dict[RowKey, int] = {}
    unique: list[EncodedPair] = []
    index_of: list[int] = []
    for pair in pairs:
        key = RowKey(pair)
        if key not in first:
            first[key] = len(unique)
            unique.append(pair)
        index_of.append(first[key])
    return unique, index_of


def score_apart(score: ScoreBatch, pairs: Sequence[EncodedPair]) -> Outcome:
    """Every row scored: together if the pass works, else in halves, down to single rows.

    A row that fails alone is the culprit and keeps its error; its batch-mates are recomputed in
    the halves that work. A failure that hits every row (a broken device) costs up to 2n - 1 passes,
    each failing fast; an out-of-memory batch usually fits once halved.
    """
    results: list[float | Exception | None] = [None] * len(pairs)
    passes: list[Pass] = []
    todo = [list(range(len(pairs)))]
    while todo:
        rows = todo.pop()
        started = time.monotonic()
        try:
            rewards = score([pairs[i] for i in rows])
            if len(rewards) != len(rows):
                raise RuntimeError(f"backend returned {len(rewards)} rewards for {len(rows)} rows")
        except Exception as exc:
            if len(rows) == 1:
                results[rows[0]] = exc
            else:  # the second half is pushed first so the rows are retried in order
                middle = len(rows) // 2
                todo.extend([rows[middle:], rows[:middle]])
            continue
        passes.append(Pass(rows, time.monotonic() - started))
        for row, reward in zip(rows, rewards, strict=True):
            results[row] = float(reward)
    return Outcome([r for r in results if r is not None], passes)

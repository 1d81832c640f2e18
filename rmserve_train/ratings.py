"""Scalar-rated files (RATED): JSON lines of one input and the score a rater gave it, as
HelpSteer rates answers (helpfulness 0-4 and so on):

    {"prompt": str, "response": str, "score": float}
    {"messages": [messages], "score": float}      or {"text": str, "score": float}

The score's field is "score" unless told otherwise (`--score-key helpfulness`). A file may be
gzipped. Other keys on a line are ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rmserve_train.pairs import DataError, parse_at, parse_item, read_rows
from service.scoring.items import ScoreInput


@dataclass(frozen=True, slots=True)
class Rated:
    """One input and its rating."""

    item: ScoreInput
    score: float


def read_rated(path: Path, *, limit: int = 0, score_key: str = "score") -> list[Rated]:
    """Every rated input in a RATED file, in file order (the first `limit` lines when > 0)."""
    return [parse_at(path, number, lambda r: _rated(r, score_key), row)
            for number, row in read_rows(path, limit)]


def is_rated(path: Path, *, score_key: str = "score") -> bool:
    """Whether a file holds rated inputs rather than preference pairs, by its first line."""
    first = next(read_rows(path, 1), None)
    if first is None:
        raise DataError(f"{path}: no lines")
    row = first[1]
    return "chosen" not in row and score_key in row


def _rated(row: dict[str, Any], score_key: str) -> Rated:
    score = row.get(score_key)
    # bool is an int to Python, but a rating of `true` is a mistake in the data.
    if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
        raise ValueError(f"{score_key!r} must be a finite number, not {score!r}")
    return Rated(parse_item(row), float(score))

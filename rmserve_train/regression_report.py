"""What a reward model's scores on rated inputs say about it: how well its rewards follow the
ratings (Pearson and Spearman correlation) and how far they are from them (MSE, MAE). The errors
only mean something for a model trained to predict the rating itself (`--objective regression`);
correlation means something for any reward model."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class RegressionReport:
    """Correlations are None when rewards or scores do not vary (there is nothing to correlate)."""

    items: int
    pearson: float | None
    spearman: float | None
    mse: float
    mae: float
    reward_mean: float
    reward_std: float
    score_mean: float
    score_std: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    mx, my = math.fsum(x) / len(x), math.fsum(y) / len(y)
    dx, dy = [a - mx for a in x], [b - my for b in y]
    spread = math.sqrt(math.fsum(a * a for a in dx) * math.fsum(b * b for b in dy))
    return math.fsum(a * b for a, b in zip(dx, dy, strict=True)) / spread if spread > 0 else None


def average_ranks(values: Sequence[float]) -> list[float]:
    """Ranks from 1; tied values share the mean of the ranks they span (as Spearman's rho wants)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):
            ranks[order[position]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def regression_report(rewards: Sequence[float], scores: Sequence[float]) -> RegressionReport:
    if len(rewards) != len(scores) or not rewards:
        raise ValueError(f"need one reward per score (and some): {len(rewards)} vs {len(scores)}")
    errors = [r - s for r, s in zip(rewards, scores, strict=True)]
    n = len(rewards)
    return RegressionReport(
        items=n,
        pearson=pearson(rewards, scores),
        spearman=pearson(average_ranks(rewards), average_ranks(scores)),
        mse=math.fsum(e * e for e in errors) / n,
        mae=math.fsum(abs(e) for e in errors) / n,
        reward_mean=math.fsum(rewards) / n,
        reward_std=_std(rewards),
        score_mean=math.fsum(scores) / n,
        score_std=_std(scores),
    )


def _std(values: Sequence[float]) -> float:
    mean = math.fsum(values) / len(values)
    return math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values))


def format_regression_report(report: RegressionReport, *, title: str) -> str:
    """A table for people; the JSON line is for programs."""
    def shown(value: float | None) -> str:
        return "-" if value is None else f"{value:+.4f}"

    return "\n".join([
        title,
        f"  items {report.items}   Pearson {shown(report.pearson)}   Spearman {shown(report.spearman)}",
        f"  MSE {report.mse:.4f}   MAE {report.mae:.4f}   (reward - score)",
        f"  rewards: mean {report.reward_mean:+.4f}, std {report.reward_std:.4f}   "
        f"scores: mean {report.score_mean:+.4f}, std {report.score_std:.4f}",
    ])

"""What a reward model's scores on preference pairs say about it: pairwise accuracy, margins and
how well the Bradley-Terry probability sigma(r_chosen - r_rejected) is calibrated."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class ReliabilityBin:
    """Pairs whose confidence fell in [low, high): how sure the model was, how often it was right."""

    low: float
    high: float
    pairs: int
    mean_confidence: float | None  # None for an empty bin
    accuracy: float | None


@dataclass(frozen=True)
class PairwiseReport:
    """Pairwise accuracy (ties count as wrong), mean margin r_chosen - r_rejected, reward spread,
    and a reliability table with its expected calibration error (ECE)."""

    pairs: int
    accuracy: float
    mean_margin: float
    ties: int
    reward_mean: float
    reward_std: float
    ece: float
    reliability: tuple[ReliabilityBin, ...]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def sigmoid(x: float) -> float:
    """Stable for any sign: exp() only ever sees a non-positive argument."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def pairwise_report(chosen: Sequence[float], rejected: Sequence[float], *, bins: int = 5) -> PairwiseReport:
    """Metrics of one model on n pairs, from the rewards of the chosen and the rejected inputs.

    Under Bradley-Terry, p = sigma(r_c - r_r) is the model's probability that the chosen input
    wins. Every label says "chosen", so p alone has nothing to be compared with; the table
    therefore groups pairs by the confidence the model puts in its own pick, max(p, 1 - p) in
    [0.5, 1], and sets it against how often that pick is the chosen input. A calibrated model's
    70 %-sure picks are right 70 % of the time.
    """
    if len(chosen) != len(rejected) or not chosen:
        raise ValueError(f"need as many chosen as rejected rewards (and some): {len(chosen)} vs "
                         f"{len(rejected)}")
    if bins < 1:
        raise ValueError("need at least one reliability bin")
    margins = [c - r for c, r in zip(chosen, rejected, strict=True)]
    n = len(margins)
    right = [m > 0 for m in margins]
    confidence = [sigmoid(abs(m)) for m in margins]
    width = 0.5 / bins
    members: list[list[int]] = [[] for _ in range(bins)]
    for i, c in enumerate(confidence):
        members[min(bins - 1, int((c - 0.5) / width))].append(i)
    table = []
    ece = 0.0
    for b, idx in enumerate(members):
        low, high = 0.5 + b * width, 0.5 + (b + 1) * width
        if not idx:
            table.append(ReliabilityBin(round(low, 6), round(high, 6), 0, None, None))
            continue
        mean_conf = sum(confidence[i] for i in idx) / len(idx)
        accuracy = sum(right[i] for i in idx) / len(idx)
        ece += len(idx) / n * abs(accuracy - mean_conf)
        table.append(ReliabilityBin(round(low, 6), round(high, 6), len(idx), mean_conf, accuracy))
    rewards = [*chosen, *rejected]
    mean = sum(rewards) / len(rewards)
    return PairwiseReport(
        pairs=n,
        accuracy=sum(right) / n,
        mean_margin=sum(margins) / n,
        ties=sum(m == 0 for m in margins),
        reward_mean=mean,
        reward_std=math.sqrt(sum((r - mean) ** 2 for r in rewards) / len(rewards)),
        ece=ece,
        reliability=tuple(table),
    )


def format_report(report: PairwiseReport, *, title: str) -> str:
    """A table for people; the JSON line is for programs."""
    lines = [
        title,
        f"  pairs {report.pairs}   pairwise accuracy {report.accuracy:.4f}   mean margin "
        f"{report.mean_margin:+.4f}   ties {report.ties}",
        f"  rewards: mean {report.reward_mean:+.4f}, std {report.reward_std:.4f}   ECE {report.ece:.4f}",
        "  reliability of sigma(r_chosen - r_rejected), by the confidence in the model's own pick:",
        "    confidence      pairs   mean confidence   accuracy",
    ]
    for row in report.reliability:
        conf = "-" if row.mean_confidence is None else f"{row.mean_confidence:.3f}"
        acc = "-" if row.accuracy is None else f"{row.accuracy:.3f}"
        lines.append(f"    {row.low:.2f} - {row.high:.2f}   {row.pairs:7d}   {conf:>15}   {acc:>8}")
    return "\n".join(lines)

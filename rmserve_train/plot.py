"""The picture of an evaluation: reward distributions of chosen vs rejected inputs, and the
reliability diagram of sigma(r_chosen - r_rejected)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rmserve_train.report import PairwiseReport

_HIST_BINS = 40


def plot_evaluation(
    chosen: Sequence[float], rejected: Sequence[float], report: PairwiseReport, path: Path, *, title: str
) -> Path:
    """Write a PNG with both panels to `path` and return it."""
    # A Figure with its own Agg canvas: no pyplot, so no global state and no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    rewards_ax, reliability_ax = figure.subplots(1, 2, width_ratios=[1.4, 1])

    low, high = min(*chosen, *rejected), max(*chosen, *rejected)
    edges = [low + (high - low) * i / _HIST_BINS for i in range(_HIST_BINS + 1)] if high > low else _HIST_BINS
    rewards_ax.hist(rejected, bins=edges, alpha=0.55, label=f"rejected (mean {_mean(rejected):+.2f})",
                    color="tab:red")
    rewards_ax.hist(chosen, bins=edges, alpha=0.55, label=f"chosen (mean {_mean(chosen):+.2f})",
                    color="tab:green")
    rewards_ax.set(xlabel="reward", ylabel="inputs",
                   title=f"rewards: accuracy {report.accuracy:.3f}, mean margin {report.mean_margin:+.3f}")
    rewards_ax.legend()

    filled = [row for row in report.reliability if row.pairs]
    reliability_ax.plot([0.5, 1.0], [0.5, 1.0], linestyle="--", color="grey", label="calibrated")
    reliability_ax.bar(
        [(row.low + row.high) / 2 for row in filled], [row.accuracy or 0.0 for row in filled],
        width=[(row.high - row.low) * 0.9 for row in filled], alpha=0.6, color="tab:blue",
        label="accuracy of the model's pick",
    )
    reliability_ax.plot([row.mean_confidence for row in filled], [row.accuracy for row in filled],
                        marker="o", color="tab:blue")
    for row in filled:
        reliability_ax.annotate(str(row.pairs), ((row.low + row.high) / 2, 0.02), ha="center",
                                fontsize=8, xycoords=("data", "axes fraction"))
    reliability_ax.set(xlim=(0.5, 1.0), ylim=(0.0, 1.0),
                       xlabel="confidence max(p, 1 - p), p = sigmoid(r_chosen - r_rejected)",
                       ylabel="fraction right", title=f"reliability (ECE {report.ece:.3f}; pairs per bin)")
    reliability_ax.legend(loc="upper left")
    figure.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)

"""Evaluate a reward model on preference pairs or rated inputs and record the results in its
manifest."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from model_store.store import ModelStore, StoredModel
from rmserve_train.pairs import Comparison
from rmserve_train.ratings import Rated
from rmserve_train.regression_report import RegressionReport, regression_report
from rmserve_train.report import PairwiseReport, pairwise_report
from rmserve_train.scorers import RewardSource


@dataclass(frozen=True)
class Evaluation:
    """The report and the rewards it was computed from (chosen[i] and rejected[i] are pair i)."""

    report: PairwiseReport
    chosen: list[float]
    rejected: list[float]


def evaluate_pairs(source: RewardSource, pairs: Sequence[Comparison], *, bins: int = 5) -> Evaluation:
    # One call for both sides: the in-process scorer then sorts all of them by length together.
    rewards = source.score([p.chosen for p in pairs] + [p.rejected for p in pairs])
    chosen, rejected = rewards[: len(pairs)], rewards[len(pairs) :]
    return Evaluation(pairwise_report(chosen, rejected, bins=bins), chosen, rejected)


@dataclass(frozen=True)
class RatedEvaluation:
    """The report and the rewards it was computed from (rewards[i] is for scores[i])."""

    report: RegressionReport
    rewards: list[float]
    scores: list[float]


def evaluate_rated(source: RewardSource, rated: Sequence[Rated]) -> RatedEvaluation:
    rewards = source.score([r.item for r in rated])
    scores = [r.score for r in rated]
    return RatedEvaluation(regression_report(rewards, scores), rewards, scores)


def evaluation_record(
    report: PairwiseReport | RegressionReport, *, data: str, scored_by: str
) -> dict[str, Any]:
    """What goes into manifest.evaluation[<key>]: the report plus where it came from."""
    return {
        **report.as_dict(),
        "data": data,
        "scored_by": scored_by,
        "evaluated": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def record_evaluation(store: ModelStore, ref: str, key: str, record: dict[str, Any]) -> StoredModel:
    """Add (or replace) manifest.evaluation[key], keeping the other entries."""
    stored = store.get(ref)
    return store.update_manifest(stored, evaluation={**stored.manifest.evaluation, key: record})

"""What the scorer returns: rewards, and what serving them cost (for the request's record)."""

from __future__ import annotations

from dataclasses import dataclass, field

from service.batching.submission import Timing


@dataclass(frozen=True)
class Usage:
    """Which model served a request, how much it scored and where the time went."""

    model: str
    version: str
    items: int
    tokens: int
    timing: Timing


@dataclass(frozen=True)
class ScoreResult:
    model: str
    version: str
    rewards: list[float]
    truncated: list[bool]
    tokens: int
    timing: Timing = field(default_factory=Timing)

    @property
    def usage(self) -> Usage:
        return Usage(self.model, self.version, len(self.rewards), self.tokens, self.timing)


@dataclass(frozen=True)
class CombinedResult:
    """The weighted sum of several models' rewards, and each model's own (as used in the sum)."""

    rewards: list[float]
    components: dict[str, ScoreResult]

    @property
    def tokens(self) -> int:
        return sum(part.tokens for part in self.components.values())

    @property
    def usage(self) -> Usage:
        timing = Timing()
        for part in self.components.values():
            timing += part.timing
        return Usage("combined", "", len(self.rewards), self.tokens, timing)


@dataclass(frozen=True)
class CompareResult:
    score: ScoreResult
    probability_a: float  # P(a preferred to b) = sigmoid(r_a - r_b), from the raw rewards

    @property
    def usage(self) -> Usage:
        return self.score.usage


@dataclass(frozen=True)
class RankResult:
    score: ScoreResult
    ranking: list[int]

    @property
    def best(self) -> int:
        return self.ranking[0]

    @property
    def usage(self) -> Usage:
        return self.score.usage

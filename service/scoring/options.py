"""How one request wants to be served: priority, deadline, and what its rewards become."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from service.scoring.errors import InvalidInputError

# Interactive best-of-n goes ahead of bulk scoring unless a request says otherwise.
SCORE_PRIORITY, RANK_PRIORITY = 0, 10
# Beyond this a priority would starve other work for hours, whatever the aging.
MAX_PRIORITY = 1000


@dataclass(frozen=True)
class ScoreOptions:
    """`priority` (higher sooner; None: the endpoint's default), `timeout_s` (answered 504, its
    items dropped, if not computed by then), and its rewards `normalize`d with the model's
    statistics and/or `clip`ped to [-clip, clip]."""

    priority: int | None = None
    timeout_s: float | None = None
    normalize: bool = False
    clip: float | None = None

    def __post_init__(self) -> None:
        if self.priority is not None and abs(self.priority) > MAX_PRIORITY:
            raise InvalidInputError(f"priority must be within -{MAX_PRIORITY}..{MAX_PRIORITY}")
        if self.clip is not None and not (math.isfinite(self.clip) and self.clip > 0):
            raise InvalidInputError("clip must be a positive, finite number")

    def raw(self) -> ScoreOptions:
        """The same request, for rewards as the model gives them."""
        return dataclasses.replace(self, normalize=False, clip=None)

    def with_default_priority(self, priority: int) -> ScoreOptions:
        return self if self.priority is not None else dataclasses.replace(self, priority=priority)


DEFAULT_OPTIONS = ScoreOptions()

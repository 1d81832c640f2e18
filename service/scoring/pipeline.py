"""One request's items from text to raw rewards, pipelined: tokenised a chunk at a time off the
event loop, each chunk queued as soon as it is ready, so that the first forward passes run while
later items still encode (the Rust tokenizer's batch encoding releases the GIL) and a request of
any size costs the same per item. Rewards the result cache holds are not computed again."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from service.batching.submission import Timing
from service.scoring.cache import RewardCache, look_up, merged, remember
from service.scoring.errors import InternalScoringError
from service.scoring.formatting import FormattedItem
from service.scoring.items import ScoreInput
from service.scoring.preparation import ScoringLimits, group_prompts, tokenize
from service.scoring.registry import ServedModel, Submitted

logger = logging.getLogger("rmserve")

# Items tokenised at once: enough for the tokenizer's batch encoding to pay off, few enough that
# the first forward passes of a big request start soon after it arrives.
TOKENIZE_CHUNK = 256


@dataclass(frozen=True)
class RawRewards:
    """A request's items as the model saw them and its rewards, in order."""

    formatted: list[FormattedItem]
    rewards: list[float]
    timing: Timing

    @property
    def truncated(self) -> list[bool]:
        return [f.truncated for f in self.formatted]

    @property
    def tokens(self) -> int:
        return sum(len(f.pair) for f in self.formatted)


async def raw_rewards(
    served: ServedModel, items: Sequence[ScoreInput], limits: ScoringLimits,
    cache: RewardCache | None, submission: Submitted,
) -> RawRewards:
    """Tokenise, queue what the cache lacks (prompts shared where the backend can), and wait
    for every reward. Refuses non-finite rewards."""
    formatted: list[FormattedItem] = []
    known: list[float | None] = []  # from the cache
    missed: list[bytes] = []  # the cache keys of the items computed
    for start in range(0, len(items), TOKENIZE_CHUNK):
        part = items[start : start + TOKENIZE_CHUNK]
        chunk = await asyncio.to_thread(tokenize, part, served.formatter, limits, start)
        hits, keys = look_up(cache, served, [f.pair for f in chunk])
        todo = [i for i, reward in enumerate(hits) if reward is None]
        pairs, shared = group_prompts([part[i] for i in todo], [chunk[i].pair for i in todo], limits,
                                      backend_shares=served.backend.shares_prefixes)
        served.metrics.shared_prefix_tokens.inc(shared)
        submission.add(pairs)
        formatted += chunk
        known += hits
        missed += keys
    submission.close()
    batched = await submission.outcome()
    rewards = merged(known, batched.rewards)
    if not all(math.isfinite(r) for r in rewards):
        raise _non_finite(served.name, formatted, rewards)
    remember(cache, served, missed, batched.rewards)
    return RawRewards(formatted, rewards, batched.timing)


def _non_finite(
    model: str, formatted: Sequence[FormattedItem], rewards: Sequence[float]
) -> InternalScoringError:
    """Never return NaN or inf: log what produced it (a hash of the inputs, not the text) and fail."""
    error_id = uuid.uuid4().hex[:12]
    digest = hashlib.sha256(repr([f.pair.input_ids for f in formatted]).encode()).hexdigest()
    bad = [i for i, r in enumerate(rewards) if not math.isfinite(r)]
    logger.error("non-finite rewards", extra={"error_id": error_id, "model": model, "items": bad[:20],
                                              "inputs_sha256": digest})
    return InternalScoringError(
        f"the model returned a non-finite reward (error id {error_id}); see the server log"
    )

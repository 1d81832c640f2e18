"""The scoring core shared by every transport: check, tokenise, batch, reassemble."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

from service.batching.batcher import BatcherClosedError, QueueFullError
from service.scoring.cache import RewardCache
from service.scoring.errors import (
    DeadlineExceededError,
    InternalScoringError,
    InvalidInputError,
    NotReadyError,
    OverloadedError,
    ScoringError,
)
from service.scoring.items import Conversation, Message, PromptResponse, ScoreInput
from service.scoring.options import DEFAULT_OPTIONS, RANK_PRIORITY, SCORE_PRIORITY, ScoreOptions
from service.scoring.pipeline import RawRewards, raw_rewards
from service.scoring.preparation import ScoringLimits, check_request
from service.scoring.registry import ModelRegistry, ServedModel
from service.scoring.results import CombinedResult, CompareResult, RankResult, ScoreResult
from service.scoring.rewards import (
    clipped,
    normalized,
    preference_probability,
    require_statistics,
    weighted_sum,
)

logger = logging.getLogger("rmserve")
# How early a cancellation may come and still be the request's deadline (see _compute).
_DEADLINE_SLACK_S = 0.05


class Readiness(Protocol):
    @property
    def not_ready_reason(self) -> str | None:
        """Why no request can be served now (loading, failed, draining); None once ready."""
        ...


class Scorer:
    """Scores items with a named model; knows nothing of HTTP or gRPC."""

    def __init__(
        self, registry: ModelRegistry, limits: ScoringLimits, readiness: Readiness,
        cache: RewardCache | None = None,
    ) -> None:
        self._registry = registry
        self.limits = limits
        self._readiness = readiness
        self._cache = cache

    @property
    def max_inputs_per_request(self) -> int:
        return self.limits.max_inputs_per_request

    async def score(
        self, items: Sequence[ScoreInput], model: str | None = None, options: ScoreOptions = DEFAULT_OPTIONS
    ) -> ScoreResult:
        loop = asyncio.get_running_loop()
        deadline = None if options.timeout_s is None else loop.time() + options.timeout_s
        check_request(items, self.limits)
        served = self._served(model, options)
        with _attributed_to(served):
            raw = await self._raw_rewards(served, items, options, deadline)
            served.metrics.items.inc(len(items))
            served.metrics.tokens.inc(raw.tokens)
        return ScoreResult(
            model=served.name, version=served.version, rewards=_as_asked(raw.rewards, served, options),
            truncated=raw.truncated, tokens=raw.tokens, timing=raw.timing,
        )

    async def _raw_rewards(
        self, served: ServedModel, items: Sequence[ScoreInput], options: ScoreOptions,
        deadline: float | None,
    ) -> RawRewards:
        """The request opened in the batcher before it is tokenised (a full queue refuses it
        before that work), then tokenised and computed within its deadline."""
        priority = SCORE_PRIORITY if options.priority is None else options.priority
        with _queue_errors():
            submission = served.batcher.open(priority)
        try:
            async with asyncio.timeout_at(deadline):
                with _queue_errors():  # a queue that filled up while the request was tokenised
                    return await raw_rewards(served, items, self.limits, self._cache, submission)
        except ScoringError:  # the request's own fault, found while tokenising: nothing more to compute
            submission.cancel()
            raise
        except BaseException as exc:
            # Out of time, the caller gone, or the batch failed: what is still queued is dropped.
            dropped = submission.cancel()
            if isinstance(exc, TimeoutError):
                served.metrics.dropped("deadline", dropped)
                raise DeadlineExceededError(
                    f"timeout_ms passed before the items were computed ({dropped} of {len(items)} "
                    "dropped): allow more time or retry when the server is less busy"
                ) from None
            if isinstance(exc, asyncio.CancelledError):
                # A transport that enforces the same deadline itself (gRPC) may cancel the call
                # at it a moment before our timer fires: that is still the deadline.
                now = asyncio.get_running_loop().time()
                at_deadline = deadline is not None and now >= deadline - _DEADLINE_SLACK_S
                served.metrics.dropped("deadline" if at_deadline else "disconnected", dropped)
                raise
            if isinstance(exc, Exception):  # the forward pass failed (e.g. out of memory)
                error_id = uuid.uuid4().hex[:12]
                logger.exception("forward pass failed", extra={"error_id": error_id, "model": served.name})
                raise InternalScoringError(
                    f"the forward pass failed (error id {error_id}); see the server log"
                ) from exc
            raise

    async def combine(
        self, items: Sequence[ScoreInput], weights: dict[str, float], options: ScoreOptions = DEFAULT_OPTIONS
    ) -> CombinedResult:
        """sum_m weight_m * reward_m for each item: every model scores the items at once, each
        through its own batcher (normalised first if asked)."""
        if not weights:
            raise InvalidInputError("combine needs at least one model and its weight")
        for name in weights:
            self._served(name, options)  # an unknown model or missing statistics: before any work
        each = dataclasses.replace(options, clip=None)  # the sum is clipped, not its parts
        try:
            async with asyncio.TaskGroup() as group:  # one part failing stops the others' work
                tasks = [group.create_task(self.score(items, name, each)) for name in weights]
        except* ScoringError as failed:
            raise failed.exceptions[0] from None
        components = dict(zip(weights, (task.result() for task in tasks), strict=True))
        total = weighted_sum({name: part.rewards for name, part in components.items()}, weights)
        if not all(math.isfinite(r) for r in total):  # never a null or an inf on the wire
            raise InvalidInputError(
                "the weighted sum of the rewards overflows with these combine weights: use weights "
                "of a sensible size (e.g. summing to 1)"
            )
        return CombinedResult(clipped(total, options.clip), components)

    async def compare(
        self, conversation: Sequence[Message], response_a: str, response_b: str, *,
        model: str | None = None, options: ScoreOptions = DEFAULT_OPTIONS,
    ) -> CompareResult:
        """Bradley-Terry: both responses scored, and the probability that a is preferred."""
        items = [_candidate(conversation, response_a), _candidate(conversation, response_b)]
        options = options.with_default_priority(RANK_PRIORITY)
        served = self._served(model, options)
        raw = await self.score(items, model, options.raw())
        result = dataclasses.replace(raw, rewards=_as_asked(raw.rewards, served, options))
        return CompareResult(result, preference_probability(*raw.rewards))

    async def rank(
        self, conversation: Sequence[Message], responses: Sequence[str], *,
        model: str | None = None, top_k: int | None = None, options: ScoreOptions = DEFAULT_OPTIONS,
    ) -> RankResult:
        """Best-of-n: score each response after the same conversation, best first."""
        if not responses:
            raise InvalidInputError("responses must hold at least one candidate")
        items = [_candidate(conversation, response) for response in responses]
        options = options.with_default_priority(RANK_PRIORITY)
        served = self._served(model, options)
        raw = await self.score(items, model, options.raw())
        # Ranked by the model's own rewards: clipping could tie what the model tells apart.
        ranking = sorted(range(len(responses)), key=lambda i: -raw.rewards[i])
        result = dataclasses.replace(raw, rewards=_as_asked(raw.rewards, served, options))
        return RankResult(result, ranking[:top_k] if top_k else ranking)

    def _served(self, model: str | None, options: ScoreOptions) -> ServedModel:
        """The model asked for, known to have what the options need."""
        if reason := self._readiness.not_ready_reason:
            raise NotReadyError(reason)
        served = self._registry.get(model)
        if options.normalize:
            with _attributed_to(served):
                require_statistics(served.normalization, served.name)
        return served


@contextmanager
def _queue_errors() -> Iterator[None]:
    """The batcher's refusals in the scoring core's words."""
    try:
        yield
    except QueueFullError as exc:
        raise OverloadedError(str(exc)) from exc
    except BatcherClosedError as exc:
        raise NotReadyError(str(exc)) from exc


@contextmanager
def _attributed_to(served: ServedModel) -> Iterator[None]:
    """Errors raised while a model serves the request name it (for the request's metrics)."""
    try:
        yield
    except ScoringError as exc:
        exc.model = exc.model or (served.name, served.version)
        raise


def _as_asked(rewards: list[float], served: ServedModel, options: ScoreOptions) -> list[float]:
    """Raw rewards, normalised with the model's statistics and clipped if the request asks."""
    if options.normalize:
        rewards = normalized(rewards, served.normalization, served.name)
        if not all(math.isfinite(r) for r in rewards):  # a degenerate std in the model's statistics
            raise InternalScoringError(f"normalising {served.name}'s rewards gave a non-finite number")
    return clipped(rewards, options.clip)


def _candidate(conversation: Sequence[Message], response: str) -> ScoreInput:
    if len(conversation) == 1 and conversation[0].role == "user":
        return PromptResponse(conversation[0].content, response)
    return Conversation((*conversation, Message("assistant", response)))
